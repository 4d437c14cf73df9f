//! Shared helpers of the simulation suites in `tests/`: run a scenario twice and
//! compare trace hashes (the determinism self-check), and say how to replay a
//! failure.
#![deny(missing_docs)]

mod spec;
mod tamper;

pub use spec::Spec;
pub use tamper::{EarlyAnswer, Tamper, Tampered};

use herald_core::{Node, NodeId};
use herald_sim::{Protocol, RunReport, Scenario, Script, SimOptions, Simulation};

/// Runs `scenario` with protocol `P` twice from its seed, panics unless both runs
/// produced the same trace hash, and returns the report. `replay` is the command
/// line printed with any failure.
pub fn run_twice<P: Protocol>(scenario: &Scenario, replay: &str) -> RunReport {
    let first = run_once::<P>(scenario);
    let second = run_once::<P>(scenario);
    assert_eq!(
        first.trace_sha256, second.trace_sha256,
        "same seed, different trace: the simulation is not deterministic\nreplay: {replay}"
    );
    assert!(!first.trace_sha256.is_empty(), "the trace is hashed");
    first
}

/// Runs `scenario` with protocol `P` once from its seed.
pub fn run_once<P: Protocol>(scenario: &Scenario) -> RunReport {
    Simulation::<P>::new(scenario.clone(), SimOptions::default())
        .expect("a valid scenario")
        .run()
}

/// Runs herald twice (see [`run_twice`]) and panics, printing the replay command,
/// if any invariant broke.
pub fn run_checked(scenario: &Scenario, replay: &str) -> RunReport {
    let report = run_twice::<Node>(scenario, replay);
    assert!(
        report.is_ok(),
        "seed {} broke invariants:\n  {}\nreplay: {replay}",
        scenario.seed,
        report.violations.join("\n  ")
    );
    report
}

/// The command that replays seed `seed` of test `test` in test file `file`.
pub fn replay_command(file: &str, test: &str, seed: u64) -> String {
    format!("HERALD_SEED={seed} cargo test -p sim-tests --test {file} {test}")
}

/// The seed given in `HERALD_SEED`, if any: a test that takes seeds runs only it.
pub fn seed_from_env() -> Option<u64> {
    let value = std::env::var("HERALD_SEED").ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("HERALD_SEED={value} is not a u64")),
    )
}

/// The node whose home is the key of `script` in a job of `nodes`.
pub fn home_of(script: &Script, nodes: u32) -> NodeId {
    script.registration().key().home(nodes)
}

/// A node that is not the home of `script` (node 0 or 1), for jobs of 2 or more.
pub fn not_home_of(script: &Script, nodes: u32) -> NodeId {
    let home = home_of(script, nodes);
    if home == NodeId(0) {
        NodeId(1)
    } else {
        NodeId(0)
    }
}
