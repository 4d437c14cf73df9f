//! What a rank needs to know to join the mesh.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::error::TcpError;
use crate::secret::Secret;

/// Default largest frame a link accepts: 64 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;
/// Default deadline for the whole mesh to form.
pub const DEFAULT_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cluster id, used when the launcher names none.
pub const DEFAULT_CLUSTER_ID: &str = "herald";
/// Longest cluster id the handshake carries, in bytes.
pub const MAX_CLUSTER_ID_BYTES: usize = 255;
/// Default pause after which an idle link sends a heartbeat: 1 s.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Default silence after which a peer is declared down: 10 s (ten missed heartbeats).
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on the bytes queued for one peer: 256 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 256 << 20;
/// Default time the I/O thread keeps polling (yielding the core between polls)
/// after activity before it sleeps: 100 µs. A reply within it costs no wake-up,
/// which on an idle machine is worth ~25 µs; an idle rank sleeps.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(100);
/// Environment variable that sets how long herald's threads poll after activity
/// before they sleep, in microseconds ([`MeshConfig::spin`] and the host's
/// poll window); 0 turns polling off.
pub const POLL_ENV: &str = "HERALD_POLL_US";

/// The heartbeat and peer timeout a rank runs with, given what it was told (flags or
/// environment) of each: the defaults for what it was not told, except that with no
/// heartbeats and no timeout given silence detection is off (an idle link is silent,
/// so its silence means nothing).
pub fn effective_timing(
    heartbeat: Option<Duration>,
    peer_timeout: Option<Duration>,
) -> (Duration, Duration) {
    let heartbeat = heartbeat.unwrap_or(DEFAULT_HEARTBEAT);
    let peer_timeout = peer_timeout.unwrap_or(if heartbeat.is_zero() {
        Duration::ZERO
    } else {
        DEFAULT_PEER_TIMEOUT
    });
    (heartbeat, peer_timeout)
}

/// Why a mesh refuses this heartbeat and peer timeout, saying what to change, if
/// it does: a timeout needs heartbeats at least twice within it (a timeout of 0
/// turns silence detection off).
pub fn check_timing(heartbeat: Duration, peer_timeout: Duration) -> Result<(), String> {
    if peer_timeout.is_zero() {
        return Ok(());
    }
    if heartbeat.is_zero() {
        return Err(format!(
            "a peer timeout of {peer_timeout:?} with no heartbeats (heartbeat 0): every idle \
             link would fall silent and its peer be declared down; give a heartbeat of at \
             most half the timeout (--heartbeat-ms, HERALD_HEARTBEAT_MS), or a peer timeout \
             of 0 to turn silence detection off (--peer-timeout-ms, HERALD_PEER_TIMEOUT_MS)"
        ));
    }
    if peer_timeout < 2 * heartbeat {
        return Err(format!(
            "peer timeout {peer_timeout:?} with heartbeat {heartbeat:?}: the timeout must be at \
             least twice the heartbeat; raise --peer-timeout-ms (HERALD_PEER_TIMEOUT_MS), lower \
             --heartbeat-ms (HERALD_HEARTBEAT_MS), or give a peer timeout of 0 to turn silence \
             detection off"
        ));
    }
    Ok(())
}

/// The poll time [`POLL_ENV`] asks for, if it is set to a number.
pub fn poll_from_env() -> Option<Duration> {
    std::env::var(POLL_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros)
}

/// Most ranks a job may have: herald's core accepts views of at most this many
/// nodes (`herald_core::MAX_NODES`), and rank 0 keeps a little state per rank,
/// so a larger size (a typo, a garbled `HERALD_SIZE`) is refused before any
/// of it is allocated.
pub const MAX_RANKS: u32 = 1 << 20;

/// Most values a job can agree on at link set-up ([`MeshConfig::agreed`]).
pub const MAX_AGREED_VALUES: usize = 16;
/// Longest name of an agreed value, in bytes.
pub const MAX_AGREED_NAME_BYTES: usize = 64;

/// A setting every rank of the job must share, checked when each link is set up:
/// a link whose ends disagree is refused, naming both values.
///
/// herald-tcp checks its own settings (frame limit, heartbeat, peer timeout) this
/// way; the layers above add theirs (herald-host adds the protocol version and the
/// fan-out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// What the value is, as a person reads it ("fan-out"); sent to the peer.
    pub name: String,
    /// The value on this rank.
    pub value: u64,
    /// How a user makes every rank agree ("--fanout"); local only, for the error.
    pub flag: String,
}

/// Configuration of one rank's side of the mesh.
///
/// ```
/// use herald_tcp::{MeshConfig, Secret};
/// let config = MeshConfig::new(1, 4, "127.0.0.1:7000".parse().unwrap(), Secret::random());
/// assert_eq!(config.bind, std::net::IpAddr::from([127, 0, 0, 1]));
/// assert_eq!(config.max_frame_bytes, 64 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// This process's rank, `0..size`.
    pub rank: u32,
    /// Number of ranks in the job.
    pub size: u32,
    /// Rank 0 listens here; every other rank connects to it first.
    pub coordinator: SocketAddr,
    /// Address this rank's own listener binds (ephemeral port). Loopback by default;
    /// set it to an interface address (or `0.0.0.0`) for a multi-host job.
    /// Rank 0 listens on `coordinator` instead.
    pub bind: IpAddr,
    /// Cluster secret; every rank must hold the same one.
    pub secret: Secret,
    /// Names the job; both ends of every link must agree, so that two jobs that
    /// share a secret by accident still never link up.
    pub cluster_id: String,
    /// Largest frame accepted from a peer; a longer length prefix closes the link.
    pub max_frame_bytes: usize,
    /// Deadline for the whole mesh to form, counted from [`Mesh::establish`](crate::Mesh::establish).
    pub establish_timeout: Duration,
    /// A link with nothing to send for this long sends a heartbeat (a 4-byte frame
    /// header the peer never delivers). Zero: never (then `peer_timeout` must be zero).
    pub heartbeat: Duration,
    /// A peer from which nothing at all (no frame, no heartbeat, no byte of a frame
    /// in progress) arrives for this long is reported down. Zero: never (e.g. while
    /// a debugger may stop ranks).
    pub peer_timeout: Duration,
    /// Settings of the layers above that every rank must share; both ends of a link
    /// compare them (with the frame limit, heartbeat and peer timeout) at set-up.
    pub agreed: Vec<Agreed>,
    /// Most bytes queued for one peer (written to no socket yet). A peer that lets
    /// more pile up is too slow to keep and is reported down, so one slow or
    /// stopped peer cannot grow this process's memory without bound. At least the
    /// frame limit.
    pub max_queued_bytes: usize,
    /// How long the I/O thread keeps polling after it last had something to do
    /// (yielding the core to any thread that has work between polls): replies that
    /// come back within it cost no wake-up. Zero: sleep at once (for cores shared
    /// with CPU-bound work). It never polls while idle, nor while the owner's
    /// [`PollGate`](crate::PollGate) says no. `HERALD_POLL_US`, when set,
    /// replaces it.
    pub spin: Duration,
}

impl MeshConfig {
    /// A configuration with the defaults: loopback bind, cluster id `"herald"`,
    /// 64 MiB frames, 60 s formation deadline, a heartbeat after 1 s of idleness and
    /// peers declared down after 10 s of silence.
    pub fn new(rank: u32, size: u32, coordinator: SocketAddr, secret: Secret) -> MeshConfig {
        MeshConfig {
            rank,
            size,
            coordinator,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secret,
            cluster_id: DEFAULT_CLUSTER_ID.to_owned(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            establish_timeout: DEFAULT_ESTABLISH_TIMEOUT,
            heartbeat: DEFAULT_HEARTBEAT,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            agreed: Vec::new(),
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            spin: DEFAULT_SPIN,
        }
    }

    /// Adds a setting every rank must share (replacing one of the same name).
    pub fn agree(&mut self, name: &str, value: u64, flag: &str) -> &mut Self {
        self.agreed.retain(|a| a.name != name);
        self.agreed.push(Agreed {
            name: name.to_owned(),
            value,
            flag: flag.to_owned(),
        });
        self
    }

    /// Everything both ends of a link compare: herald-tcp's own settings first,
    /// then [`agreed`](Self::agreed).
    pub(crate) fn all_agreed(&self) -> Vec<Agreed> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut all = vec![
            Agreed {
                name: "frame limit (bytes)".into(),
                value: self.max_frame_bytes as u64,
                flag: "--max-frame-bytes".into(),
            },
            Agreed {
                name: "heartbeat (ms)".into(),
                value: millis(self.heartbeat),
                flag: "--heartbeat-ms (HERALD_HEARTBEAT_MS)".into(),
            },
            Agreed {
                name: "peer timeout (ms)".into(),
                value: millis(self.peer_timeout),
                flag: "--peer-timeout-ms (HERALD_PEER_TIMEOUT_MS)".into(),
            },
        ];
        all.extend(self.agreed.iter().cloned());
        all
    }

    /// Checks the fields that would otherwise fail later and less clearly.
    pub(crate) fn validate(&self) -> Result<(), TcpError> {
        let invalid = |reason: String| Err(TcpError::InvalidConfig { reason });
        if self.size == 0 {
            return invalid("size is 0; a job has at least one rank".into());
        }
        if self.size > MAX_RANKS {
            return invalid(format!(
                "size is {}; a job has at most {MAX_RANKS} ranks",
                self.size
            ));
        }
        if self.rank >= self.size {
            return invalid(format!(
                "rank {} is not below size {}; ranks run from 0 to size-1",
                self.rank, self.size
            ));
        }
        if self.cluster_id.len() > MAX_CLUSTER_ID_BYTES {
            return invalid(format!(
                "cluster id is {} bytes; use at most {MAX_CLUSTER_ID_BYTES}",
                self.cluster_id.len()
            ));
        }
        // u32::MAX itself marks a heartbeat on the wire.
        if self.max_frame_bytes == 0 || self.max_frame_bytes >= u32::MAX as usize {
            return invalid(format!(
                "max_frame_bytes is {}; it must be between 1 and {} (the u32 length prefix)",
                self.max_frame_bytes,
                u32::MAX - 1
            ));
        }
        check_timing(self.heartbeat, self.peer_timeout)
            .map_err(|reason| TcpError::InvalidConfig { reason })?;
        if self.agreed.len() > MAX_AGREED_VALUES
            || self
                .agreed
                .iter()
                .any(|a| a.name.is_empty() || a.name.len() > MAX_AGREED_NAME_BYTES)
        {
            return invalid(format!(
                "at most {MAX_AGREED_VALUES} agreed values, each named in 1 to \
                 {MAX_AGREED_NAME_BYTES} bytes"
            ));
        }
        if self.max_queued_bytes < self.max_frame_bytes {
            return invalid(format!(
                "max_queued_bytes {} is below max_frame_bytes {}: a single frame could never \
                 be queued",
                self.max_queued_bytes, self.max_frame_bytes
            ));
        }
        if self.establish_timeout.is_zero() {
            return invalid("establish_timeout is zero; give the mesh time to form".into());
        }
        Ok(())
    }
}
