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
}

impl MeshConfig {
    /// A configuration with the defaults: loopback bind, cluster id `"herald"`,
    /// 64 MiB frames, 60 s formation deadline.
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
        }
    }

    /// Checks the fields that would otherwise fail later and less clearly.
    pub(crate) fn validate(&self) -> Result<(), TcpError> {
        let invalid = |reason: String| Err(TcpError::InvalidConfig { reason });
        if self.size == 0 {
            return invalid("size is 0; a job has at least one rank".into());
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
        if self.max_frame_bytes == 0 || u32::try_from(self.max_frame_bytes).is_err() {
            return invalid(format!(
                "max_frame_bytes is {}; it must be between 1 and {} (the u32 length prefix)",
                self.max_frame_bytes,
                u32::MAX
            ));
        }
        if self.establish_timeout.is_zero() {
            return invalid("establish_timeout is zero; give the mesh time to form".into());
        }
        Ok(())
    }
}
