//! herald-sim: a deterministic discrete-event simulator that runs N unchanged
//! [`herald_core::Node`]s (or the [`NaiveNode`] baseline) on a simulated network.
//!
//! * **Time** is virtual (`u64` nanoseconds); actions are ordered by (time,
//!   sequence number), so ties are deterministic.
//! * **Every choice** — latencies, crash victims and times, partition sides, which
//!   fault kinds a swarm run enables, which in-flight frames a failure loses, and
//!   when exploring which enabled action happens next — goes through one
//!   [`Chooser`]: [`RandomChooser`] (seeded `ChaCha8Rng`), [`ReplayChooser`]
//!   (a recorded list), or the depth-first enumeration of [`explore`].
//! * **The network** keeps each link FIFO with random latency, serialises a node's
//!   sends through its interface, encodes every frame with
//!   [`herald_core::encode_frames`] (at the scenario's frame limit) and feeds it to
//!   `handle_frame`. Faults are those a real transport reports: nodes crash;
//!   partitions cut the job; single links break, noticed by both ends or by one
//!   (the other notices by silence, last); a transport falsely suspects a live
//!   peer; a process pauses and resumes (peers may time out on it); a frame is
//!   delivered twice. Each noticing transport calls `peer_down` after a detection
//!   delay, and a node fenced by the agreed view ends (not a crash), which its
//!   peers' transports notice in turn.
//! * **Hosts** run [`Script`]s: load durations, loads that fail on chosen nodes,
//!   registrations nested inside a load, task names registered by a load.
//! * **Checks**: at most one invocation per (node, key); every answer true of the
//!   job when it is given (every node not named has finished, failures named
//!   exactly, texts cut to the frame limit); a node named unreachable was declared
//!   down by some transport and, at the end, is crashed, fenced or cut off; every
//!   live, unfenced request and launch answered and every such node at rest at the
//!   end; message bounds; causality against the simulator's own oracle (tasks never
//!   run before, or despite the failure of, what was global on the launcher); a
//!   liveness deadline once faults stop.
//! * **Measures**: messages by kind, frames, bytes, invocations per (node, key),
//!   completion times, and critical-path hops (a Lamport hop clock on every frame).
//! * **Trace**: Chrome Trace Event JSON, hashed with SHA-256: same seed, same bytes.
//!
//! ```
//! use herald_core::NodeId;
//! use herald_sim::{simulate, Scenario, Script};
//! let scenario = Scenario::new(64).with_fanout(4).with_request(NodeId(5), 0, Script::new("libtasks.so"));
//! let report = simulate(&scenario)?;
//! assert!(report.is_ok() && report.completed);
//! let home = Script::new("libtasks.so").registration().key().home(64);
//! let extra = if home == NodeId(5) { 0 } else { 2 };
//! assert_eq!(report.messages, 2 * 63 + extra);
//! # Ok::<(), herald_sim::SimError>(())
//! ```
#![deny(missing_docs)]

mod causality;
mod chooser;
mod explore;
mod faults;
mod host;
mod joins;
mod launching;
mod ledger;
mod naive;
mod network;
mod protocol;
mod report;
mod scenario;
mod script;
mod simulation;
mod trace;
mod violation;
mod world;

pub use chooser::{ChoiceKind, Chooser, RandomChooser, ReplayChooser};
pub use explore::{
    Counterexample, Exploration, ExploreError, ExploreLimits, explore, replay_exploration,
};
pub use ledger::{Answer, LaunchRecord, RequestRecord};
pub use naive::NaiveNode;
pub use protocol::Protocol;
pub use report::RunReport;
pub use scenario::{After, Faults, JoinPlan, LaunchPlan, Network, RequestPlan, Scenario};
pub use script::{DEFAULT_LOAD_NS, NestedCall, NodeSet, Script};
pub use simulation::{FaultKind, Progress, SimOptions, Simulation, ceil_log, simulate};
pub use trace::TraceMode;
pub use violation::{SimError, Violation};
pub use world::Action;
