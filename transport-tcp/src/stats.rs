//! Frame and byte counts, for `--stats` and benchmarks.

/// Frame and byte counts of this rank's links (payload bytes, without the 4-byte prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames written to sockets.
    pub frames_sent: u64,
    /// Payload bytes written to sockets.
    pub bytes_sent: u64,
    /// Frames read from sockets.
    pub frames_received: u64,
    /// Payload bytes read from sockets.
    pub bytes_received: u64,
    /// The same counts for each peer, in rank order (this rank itself is absent).
    pub per_peer: Vec<PeerStats>,
}

/// Frame and byte counts of the link to one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's rank.
    pub node: u32,
    /// Frames written to this peer.
    pub frames_sent: u64,
    /// Payload bytes written to this peer.
    pub bytes_sent: u64,
    /// Frames read from this peer.
    pub frames_received: u64,
    /// Payload bytes read from this peer.
    pub bytes_received: u64,
}
