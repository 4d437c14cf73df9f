//! Authenticated, encrypted TCP links for herald, made on demand.
//!
//! One I/O thread per process (a mio readiness loop) owns the listener and every
//! connection, whatever the size of the job. Formation goes through rank 0: every
//! rank dials it, proves the cluster secret and registers its listen address; once
//! all have, rank 0 sends each the address table. No other link is made until a
//! frame needs it: the first frame for a rank dials it (with retries and back-off),
//! unless that rank already dialled us, in which case its connection carries both
//! directions. Frames from one rank to another always use one connection, so they
//! arrive in order.
//!
//! * [`Mesh::establish`] forms the job and returns the mesh with a channel of
//!   [`MeshEvent`]s: frames in per-peer FIFO order, and one `PeerDown` per lost peer
//!   (crash-stop: no reconnection). [`Mesh::join`] joins a running job through its
//!   rank 0.
//! * [`bootstrap_from_env`] finds rank, size, coordinator and secret in the
//!   environment of herald's own launcher, Open MPI, PMI, PMIx or Slurm.
//!
//! Security: each connection starts with a nonce exchange and a mutual proof of the
//! cluster [`Secret`] (HMAC-SHA256, see the handshake module); nothing about the
//! job is sent before the peer has proved it. Every record after that is sealed
//! with ChaCha20-Poly1305 under per-connection, per-direction keys derived by
//! HKDF-SHA256 from the secret and both nonces, numbered by an implicit counter:
//! a record altered, replayed, reordered, truncated or forged closes the link, and
//! the peer counts as down. Connections that do not prove the secret within 3 s
//! are closed; at most 512 wait at once (the oldest gives way), and refusals are
//! logged as one line, then a summary at most every 5 s.
//!
//! Hung peers: an idle connection sends a (sealed) heartbeat every
//! [`MeshConfig::heartbeat`] (default 1 s), and a peer from which nothing arrives
//! for [`MeshConfig::peer_timeout`] (default 10 s) is reported down like a crashed
//! one, also when it stalls in the middle of a frame. A peer that lets more than
//! [`MeshConfig::max_queued_bytes`] pile up is reported down too. Agreement: the
//! frame limit, heartbeat, peer timeout and the settings in [`MeshConfig::agreed`]
//! must be equal on every rank, or formation fails naming both values.
//!
//! ```
//! use std::net::TcpListener;
//! use herald_tcp::{Mesh, MeshConfig, MeshEvent, Secret};
//!
//! // Rank 0 binds port 0 and tells the others where it is: no port race.
//! let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//! let coordinator = listener.local_addr().unwrap();
//! let secret = Secret::random();
//! let config = |rank| MeshConfig::new(rank, 2, coordinator, secret.clone());
//! let one = std::thread::spawn({
//!     let config = config(1);
//!     move || Mesh::establish(config).unwrap()
//! });
//! let (zero, _zero_events) = Mesh::establish_with_listener(config(0), listener).unwrap();
//! let (one, one_events) = one.join().unwrap();
//! zero.send(1, b"hi".to_vec());
//! assert_eq!(one_events.recv().unwrap(), MeshEvent::Frame { from: 0, bytes: b"hi".to_vec() });
//! one.shutdown();
//! zero.shutdown();
//! ```

#![deny(missing_docs)]

mod bootstrap;
mod config;
mod conn;
mod error;
mod events;
mod frame;
mod handshake;
mod joins;
mod mesh;
mod outlet;
mod raw;
mod reactor;
mod refusals;
mod seal;
mod secret;
mod stats;

pub use bootstrap::{
    Bootstrap, BootstrapError, BootstrapSource, bootstrap_from_env, resolve_host_port,
};
pub use config::{
    Agreed, DEFAULT_CLUSTER_ID, DEFAULT_ESTABLISH_TIMEOUT, DEFAULT_HEARTBEAT,
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_PEER_TIMEOUT, DEFAULT_SPIN,
    MAX_AGREED_NAME_BYTES, MAX_AGREED_VALUES, MAX_CLUSTER_ID_BYTES, MAX_RANKS, MeshConfig,
    POLL_ENV, check_timing, effective_timing, poll_from_env,
};
pub use error::{Disagreement, HandshakeError, TcpError};
pub use events::{EventHook, EventSender, PollGate};
pub use handshake::{WIRE_MAGIC, WIRE_VERSION};
pub use mesh::{Mesh, MeshEvent};
pub use raw::{RawLink, RawReceiver, RawSender};
pub use secret::{SECRET_LEN, Secret, SecretError};
pub use stats::{LinkStats, PeerStats};
