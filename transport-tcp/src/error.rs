//! Typed errors of mesh formation and of the link handshake.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Why [`Mesh::establish`](crate::Mesh::establish) failed. Each message says what to check next.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// The configuration cannot work.
    #[error("invalid mesh configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// This rank's listener could not bind.
    #[error(
        "cannot listen on {addr}: {source}; if the port is taken, pick another \
         coordinator port (HERALD_COORDINATOR) or another bind address"
    )]
    Bind {
        /// The address that failed.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// A connection to a peer's listener could not be opened before the deadline.
    #[error(
        "cannot connect to rank {rank} at {addr}: {source}; check that rank {rank} \
         is running and that its address is reachable from this host"
    )]
    Connect {
        /// The rank we tried to reach.
        rank: u32,
        /// Its listen address.
        addr: SocketAddr,
        /// The last connect error.
        source: io::Error,
    },
    /// The handshake with a peer this rank connected to failed.
    #[error("handshake with rank {rank} at {addr} failed: {reason}")]
    Handshake {
        /// The rank we connected to.
        rank: u32,
        /// Its address.
        addr: SocketAddr,
        /// What went wrong.
        reason: HandshakeError,
    },
    /// Two authenticated processes claimed the same rank.
    #[error(
        "two processes claim rank {rank} (from {first} and {second}); \
         check how ranks are assigned (HERALD_RANK or the launcher's variables)"
    )]
    DuplicateRank {
        /// The rank claimed twice.
        rank: u32,
        /// Address of the first connection.
        first: SocketAddr,
        /// Address of the second connection.
        second: SocketAddr,
    },
    /// Rank 0 aborted the formation and said why.
    #[error("rank 0 aborted mesh formation: {reason}")]
    Aborted {
        /// Rank 0's reason.
        reason: String,
    },
    /// An authenticated peer broke the formation protocol or vanished during it.
    #[error("mesh formation failed: {reason}")]
    Formation {
        /// What happened.
        reason: String,
    },
    /// The mesh did not form before `establish_timeout`.
    #[error(
        "mesh formation did not finish within {after:?}; still not linked to ranks \
         {missing:?}: check that every rank started with the same size, coordinator, \
         secret and cluster id, and read the warnings those ranks logged"
    )]
    Timeout {
        /// The configured deadline.
        after: Duration,
        /// Ranks this rank has no link to (or, on rank 0, that never reported ready).
        missing: Vec<u32>,
    },
    /// A local resource (a thread, a socket option) could not be had.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        source: io::Error,
    },
}

/// Why a link handshake failed. Logged on the accepting side, returned on the connecting side.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer stopped answering before the handshake finished.
    #[error("the peer did not complete the handshake in time")]
    TimedOut,
    /// The connection failed or closed during the handshake.
    #[error("the connection failed during the handshake ({0})")]
    Io(io::Error),
    /// The peer is not speaking herald's link protocol.
    #[error(
        "the peer did not open with herald's magic bytes (not a herald node: a scanner or a stray client?)"
    )]
    NotHerald,
    /// The peer speaks another version of the link protocol.
    #[error(
        "the peer speaks link protocol version {theirs}, this build speaks {ours}; run the same herald build on every rank"
    )]
    Version {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// The peer belongs to another cluster.
    #[error(
        "the peer belongs to cluster {theirs:?}, this rank to {ours:?}; set the same HERALD_CLUSTER on every rank"
    )]
    ClusterMismatch {
        /// Our cluster id.
        ours: String,
        /// The peer's cluster id (lossily decoded).
        theirs: String,
    },
    /// The peer believes the job has another size.
    #[error(
        "the peer believes the job has {theirs} ranks, this rank believes {ours}; every rank must be given the same size"
    )]
    SizeMismatch {
        /// Our size.
        ours: u32,
        /// The peer's size.
        theirs: u32,
    },
    /// The peer claims a rank that should not be on this connection.
    #[error("the peer claims rank {found}, expected {expected}")]
    UnexpectedRank {
        /// What was expected, in words.
        expected: String,
        /// The rank the peer claimed.
        found: u32,
    },
    /// The peer refused our proof of the secret.
    #[error(
        "the peer rejected our proof of the cluster secret; every rank must use the same HERALD_SECRET"
    )]
    Rejected,
    /// The peer's proof of the secret did not verify.
    #[error(
        "the peer's proof of the cluster secret did not verify; it holds another secret (check HERALD_SECRET) or is not a rank of this job"
    )]
    BadProof,
    /// The peer proved the secret but uses another value of a setting every rank
    /// must share.
    #[error("{0}")]
    Disagreement(Box<Disagreement>),
    /// The peer sent bytes that do not parse.
    #[error("malformed handshake message: {0}")]
    Malformed(String),
}

/// Two ranks of one job use different values of a setting every rank must share.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} uses {name} {theirs}, this node {ours}: start every rank with the same {flag}",
    peer_name(.peer)
)]
pub struct Disagreement {
    /// The peer's rank.
    pub peer: u32,
    /// The setting.
    pub name: String,
    /// Our value.
    pub ours: String,
    /// The peer's value.
    pub theirs: String,
    /// How to make every rank agree.
    pub flag: String,
}

/// How a disagreement names the peer: a process joining a running job has no
/// rank yet.
fn peer_name(peer: &u32) -> String {
    if *peer == crate::handshake::JOINING {
        "a process joining the job".to_owned()
    } else {
        format!("node {peer}")
    }
}

impl From<io::Error> for HandshakeError {
    fn from(err: io::Error) -> HandshakeError {
        match err.kind() {
            // A read timeout shows up as WouldBlock on Unix and TimedOut on Windows.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HandshakeError::TimedOut,
            _ => HandshakeError::Io(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fanout_disagreement(peer: u32) -> String {
        Disagreement {
            peer,
            name: "fan-out".into(),
            ours: "4".into(),
            theirs: "8".into(),
            flag: "--fanout".into(),
        }
        .to_string()
    }

    #[test]
    fn a_disagreement_names_a_ranked_peer_by_its_rank() {
        assert_eq!(
            fanout_disagreement(2),
            "node 2 uses fan-out 8, this node 4: start every rank with the same --fanout"
        );
    }

    /// A joiner has no rank yet: it is not called `node 4294967295`.
    #[test]
    fn a_disagreement_names_a_joining_process_as_such() {
        assert_eq!(
            fanout_disagreement(crate::handshake::JOINING),
            "a process joining the job uses fan-out 8, this node 4: start every rank with \
             the same --fanout"
        );
    }
}
