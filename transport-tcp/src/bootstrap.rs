//! Where a process learns its rank, the job size, the coordinator and the secret.
//!
//! Rank and size come from the first launcher whose pair of variables is complete:
//!
//! | source  | rank                   | size                   |
//! |---------|------------------------|------------------------|
//! | herald  | `HERALD_RANK`          | `HERALD_SIZE`          |
//! | Open MPI| `OMPI_COMM_WORLD_RANK` | `OMPI_COMM_WORLD_SIZE` |
//! | PMI     | `PMI_RANK`             | `PMI_SIZE`             |
//! | PMIx    | `PMIX_RANK`            | `HERALD_SIZE` (see below) |
//! | Slurm   | `SLURM_PROCID`         | `SLURM_NTASKS`         |
//!
//! Slurm is last because its variables leak into an `mpirun` started inside an
//! allocation, where the MPI launcher's must win. PMIx exports only `PMIX_RANK`
//! (with `PMIX_NAMESPACE` and the server's URI): the job size is available only by
//! asking the PMIx server (`PMIx_Get(PMIX_JOB_SIZE)`), which herald does not link.
//! So under a bare PMIx launcher set `HERALD_SIZE`; under `srun --mpi=pmix` Slurm's
//! pair (with `SLURM_PROCID` equal to `PMIX_RANK`) supplies it. A `PMIX_RANK` with
//! neither is an error rather than a guess. An empty variable counts as unset.
//!
//! The rest is herald's own: `HERALD_COORDINATOR` (`HOST:PORT`, where rank 0
//! listens), `HERALD_SECRET` (64 hex digits) or `HERALD_SECRET_FILE` (a file
//! holding them), `HERALD_CLUSTER` (the cluster id) and `HERALD_BIND` (the IP
//! address this rank's listener binds; loopback when unset, so a multi-host job
//! sets it, e.g. to `0.0.0.0` or the interface's address), `HERALD_HEARTBEAT_MS`
//! and `HERALD_PEER_TIMEOUT_MS` (liveness timing in milliseconds, 0 to turn it off;
//! defaults 1000 and 10000).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config::{MAX_CLUSTER_ID_BYTES, MeshConfig, effective_timing};
use crate::secret::{Secret, SecretError};

/// Which source supplied the rank and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapSource {
    /// Command-line flags (`--rank --size --coordinator`).
    Flags,
    /// `HERALD_RANK` / `HERALD_SIZE`.
    Herald,
    /// Open MPI's `OMPI_COMM_WORLD_RANK` / `OMPI_COMM_WORLD_SIZE`.
    OpenMpi,
    /// PMI-1/PMI-2 (MPICH, Intel MPI): `PMI_RANK` / `PMI_SIZE`.
    Pmi,
    /// PMIx: `PMIX_RANK`, size from `HERALD_SIZE` or Slurm.
    Pmix,
    /// Slurm's `SLURM_PROCID` / `SLURM_NTASKS`.
    Slurm,
}

/// Everything a process learned about its place in the job.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// This process's rank, below `size`.
    pub rank: u32,
    /// Number of ranks, at least 1.
    pub size: u32,
    /// Where rank 0 listens (`HERALD_COORDINATOR`), if given.
    pub coordinator: Option<SocketAddr>,
    /// The cluster secret (`HERALD_SECRET` or `HERALD_SECRET_FILE`), if given.
    pub secret: Option<Secret>,
    /// The cluster id (`HERALD_CLUSTER`), if given.
    pub cluster_id: Option<String>,
    /// The listener's bind address (`HERALD_BIND`), if given; loopback otherwise.
    pub bind: Option<IpAddr>,
    /// Idle time before a heartbeat (`HERALD_HEARTBEAT_MS`), if given.
    pub heartbeat: Option<Duration>,
    /// Silence before a peer is declared down (`HERALD_PEER_TIMEOUT_MS`), if given.
    pub peer_timeout: Option<Duration>,
    /// Where the rank and size came from.
    pub source: BootstrapSource,
}

impl Bootstrap {
    /// A bootstrap from command-line flags, checked like the environment's values.
    pub fn from_flags(
        rank: u32,
        size: u32,
        coordinator: Option<SocketAddr>,
        secret: Option<Secret>,
    ) -> Result<Bootstrap, BootstrapError> {
        check_pair(("--rank", rank), ("--size", size))?;
        Ok(Bootstrap {
            rank,
            size,
            coordinator,
            secret,
            cluster_id: None,
            bind: None,
            heartbeat: None,
            peer_timeout: None,
            source: BootstrapSource::Flags,
        })
    }

    /// A [`MeshConfig`] with defaults for everything the bootstrap did not say.
    /// Fails if the coordinator or the secret is unknown.
    pub fn mesh_config(&self) -> Result<MeshConfig, BootstrapError> {
        let coordinator = self.coordinator.ok_or(BootstrapError::MissingCoordinator)?;
        let secret = self.secret.clone().ok_or(BootstrapError::MissingSecret)?;
        let mut config = MeshConfig::new(self.rank, self.size, coordinator, secret);
        if let Some(cluster_id) = &self.cluster_id {
            config.cluster_id.clone_from(cluster_id);
        }
        if let Some(bind) = self.bind {
            config.bind = bind;
        }
        (config.heartbeat, config.peer_timeout) =
            effective_timing(self.heartbeat, self.peer_timeout);
        Ok(config)
    }
}

/// Why the environment did not yield a usable bootstrap. Each message names the
/// variable at fault and what to set.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// No launcher's variables were found.
    #[error(
        "no rank found in the environment: set HERALD_RANK and HERALD_SIZE, pass \
         --rank and --size, or start under mpirun, srun or `herald run`"
    )]
    NoRank,
    /// `HERALD_SIZE` asks for a job of several ranks, but no launcher's rank
    /// variable says which one this process is (a job of one would ignore it).
    #[error(
        "HERALD_SIZE={size} but no rank is set: set HERALD_RANK (0 to {last}) in each \
         process, or start the ranks with mpirun, srun or `herald run`",
        last = size - 1
    )]
    SizeWithoutRank {
        /// `HERALD_SIZE`.
        size: u32,
    },
    /// A variable that should hold a number does not.
    #[error("{var}={value:?} is not a non-negative integer; fix or unset it")]
    NotANumber {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The size is zero.
    #[error("{var}=0: a job has at least one rank")]
    ZeroSize {
        /// The variable.
        var: &'static str,
    },
    /// The rank is not below the size.
    #[error("{rank_var}={rank} is not below {size_var}={size}; ranks run from 0 to size-1")]
    RankOutOfRange {
        /// The rank's variable.
        rank_var: &'static str,
        /// The rank.
        rank: u32,
        /// The size's variable.
        size_var: &'static str,
        /// The size.
        size: u32,
    },
    /// Half of herald's own pair is set.
    #[error("{present} is set but {missing} is not; set both, or neither to use the launcher's")]
    Incomplete {
        /// The variable that is set.
        present: &'static str,
        /// The one that is missing.
        missing: &'static str,
    },
    /// PMIx gave a rank but nothing gives the size.
    #[error(
        "PMIX_RANK is set but PMIx exports no job size; set HERALD_SIZE to the number \
         of processes (or launch with Open MPI's mpirun or srun, which export it)"
    )]
    PmixWithoutSize,
    /// `HERALD_SIZE` disagrees with the launcher.
    #[error("HERALD_SIZE={herald_size} but {var}={size}; unset HERALD_SIZE or make them agree")]
    SizeMismatch {
        /// The launcher's size variable.
        var: &'static str,
        /// The launcher's size.
        size: u32,
        /// `HERALD_SIZE`.
        herald_size: u32,
    },
    /// `HERALD_COORDINATOR` does not name a reachable address.
    #[error("HERALD_COORDINATOR={value:?}: {reason}; use HOST:PORT, e.g. 127.0.0.1:7000")]
    BadCoordinator {
        /// The value.
        value: String,
        /// Why it failed.
        reason: String,
    },
    /// `HERALD_BIND` is not an IP address.
    #[error("HERALD_BIND={value:?} is not an IP address; use e.g. 0.0.0.0 or this host's address")]
    BadBind {
        /// The value.
        value: String,
    },
    /// `HERALD_SECRET` (or the file's contents) is not a secret.
    #[error("{var}: {source}")]
    BadSecret {
        /// `HERALD_SECRET` or `HERALD_SECRET_FILE`.
        var: &'static str,
        /// What is wrong with it.
        source: SecretError,
    },
    /// `HERALD_SECRET_FILE` could not be read.
    #[error("HERALD_SECRET_FILE={path:?} cannot be read: {source}")]
    SecretFile {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Both secret variables are set.
    #[error("both HERALD_SECRET and HERALD_SECRET_FILE are set; keep one")]
    TwoSecrets,
    /// `HERALD_CLUSTER` is too long for the handshake.
    #[error("HERALD_CLUSTER is {len} bytes long; use at most {MAX_CLUSTER_ID_BYTES}")]
    ClusterTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A mesh needs a coordinator address and none was given.
    #[error(
        "no coordinator address: set HERALD_COORDINATOR=HOST:PORT, where rank 0 listens, in every \
         rank's environment (`herald node` also takes --coordinator); `herald run` does this for you"
    )]
    MissingCoordinator,
    /// A mesh needs a secret and none was given.
    #[error(
        "no cluster secret: set HERALD_SECRET (64 hex digits) or HERALD_SECRET_FILE; `herald run` does this for you"
    )]
    MissingSecret,
}

/// Reads the bootstrap from an environment lookup (pass `&|k| std::env::var(k).ok()`
/// for the real one; tests pass a map).
///
/// ```
/// use std::collections::HashMap;
/// use herald_tcp::{bootstrap_from_env, BootstrapSource};
/// let env = HashMap::from([("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8"),
///                          ("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "4")]);
/// let boot = bootstrap_from_env(&|k| env.get(k).map(|v| v.to_string())).unwrap();
/// assert_eq!((boot.rank, boot.size, boot.source), (1, 4, BootstrapSource::OpenMpi));
/// ```
pub fn bootstrap_from_env(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Bootstrap, BootstrapError> {
    let get = |var: &str| env(var).filter(|value| !value.trim().is_empty());
    let number = |var: &'static str| -> Result<Option<u32>, BootstrapError> {
        get(var)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|_| BootstrapError::NotANumber { var, value })
            })
            .transpose()
    };
    let herald_size = number("HERALD_SIZE")?;
    let (rank, size, source) = find_rank(&number, herald_size)?;
    if let Some(herald_size) = herald_size {
        let exempt = matches!(source, BootstrapSource::Herald | BootstrapSource::Pmix);
        if herald_size != size.1 && !exempt {
            return Err(BootstrapError::SizeMismatch {
                var: size.0,
                size: size.1,
                herald_size,
            });
        }
    }
    check_pair(rank, size)?;
    let coordinator = get("HERALD_COORDINATOR")
        .map(|value| parse_coordinator(&value))
        .transpose()?;
    let secret = match (get("HERALD_SECRET"), get("HERALD_SECRET_FILE")) {
        (Some(_), Some(_)) => return Err(BootstrapError::TwoSecrets),
        (Some(hex), None) => {
            Some(
                Secret::from_hex(&hex).map_err(|source| BootstrapError::BadSecret {
                    var: "HERALD_SECRET",
                    source,
                })?,
            )
        }
        (None, Some(path)) => Some(read_secret_file(&path)?),
        (None, None) => None,
    };
    let cluster_id = get("HERALD_CLUSTER");
    if let Some(len) = cluster_id
        .as_ref()
        .map(String::len)
        .filter(|&len| len > MAX_CLUSTER_ID_BYTES)
    {
        return Err(BootstrapError::ClusterTooLong { len });
    }
    let bind = get("HERALD_BIND")
        .map(|value| {
            value
                .trim()
                .parse()
                .map_err(|_| BootstrapError::BadBind { value })
        })
        .transpose()?;
    let millis = |var: &'static str| -> Result<Option<Duration>, BootstrapError> {
        get(var)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map(Duration::from_millis)
                    .map_err(|_| BootstrapError::NotANumber { var, value })
            })
            .transpose()
    };
    Ok(Bootstrap {
        rank: rank.1,
        size: size.1,
        coordinator,
        secret,
        cluster_id,
        bind,
        heartbeat: millis("HERALD_HEARTBEAT_MS")?,
        peer_timeout: millis("HERALD_PEER_TIMEOUT_MS")?,
        source,
    })
}

type Named = (&'static str, u32);

/// Walks the sources in order; the first complete pair wins.
fn find_rank(
    number: &dyn Fn(&'static str) -> Result<Option<u32>, BootstrapError>,
    herald_size: Option<u32>,
) -> Result<(Named, Named, BootstrapSource), BootstrapError> {
    match (number("HERALD_RANK")?, herald_size) {
        (Some(rank), Some(size)) => {
            return Ok((
                ("HERALD_RANK", rank),
                ("HERALD_SIZE", size),
                BootstrapSource::Herald,
            ));
        }
        (Some(_), None) => {
            return Err(BootstrapError::Incomplete {
                present: "HERALD_RANK",
                missing: "HERALD_SIZE",
            });
        }
        // HERALD_SIZE alone is the size of a PMIx job (below) or a cross-check.
        (None, _) => {}
    }
    let pairs = [
        (
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_SIZE",
            BootstrapSource::OpenMpi,
        ),
        ("PMI_RANK", "PMI_SIZE", BootstrapSource::Pmi),
    ];
    for (rank_var, size_var, source) in pairs {
        if let (Some(rank), Some(size)) = (number(rank_var)?, number(size_var)?) {
            return Ok(((rank_var, rank), (size_var, size), source));
        }
    }
    let slurm = match (number("SLURM_PROCID")?, number("SLURM_NTASKS")?) {
        (Some(rank), Some(size)) => Some((("SLURM_PROCID", rank), ("SLURM_NTASKS", size))),
        _ => None,
    };
    if let Some(rank) = number("PMIX_RANK")? {
        return match (herald_size, slurm) {
            (Some(size), _) => Ok((
                ("PMIX_RANK", rank),
                ("HERALD_SIZE", size),
                BootstrapSource::Pmix,
            )),
            // srun --mpi=pmix: Slurm's own pair describes this very job step.
            (None, Some((slurm_rank, size))) if slurm_rank.1 == rank => {
                Ok((("PMIX_RANK", rank), size, BootstrapSource::Pmix))
            }
            (None, _) => Err(BootstrapError::PmixWithoutSize),
        };
    }
    match (slurm, herald_size) {
        (Some((rank, size)), _) => Ok((rank, size, BootstrapSource::Slurm)),
        (None, Some(size)) if size > 1 => Err(BootstrapError::SizeWithoutRank { size }),
        (None, _) => Err(BootstrapError::NoRank),
    }
}

fn check_pair((rank_var, rank): Named, (size_var, size): Named) -> Result<(), BootstrapError> {
    if size == 0 {
        return Err(BootstrapError::ZeroSize { var: size_var });
    }
    if rank >= size {
        return Err(BootstrapError::RankOutOfRange {
            rank_var,
            rank,
            size_var,
            size,
        });
    }
    Ok(())
}

fn parse_coordinator(value: &str) -> Result<SocketAddr, BootstrapError> {
    resolve_host_port(value).map_err(|reason| BootstrapError::BadCoordinator {
        value: value.to_owned(),
        reason,
    })
}

/// `HOST:PORT` as an address: a literal one, or a host name resolved (its first
/// address wins, as with `connect`); else why not. How `HERALD_COORDINATOR` is
/// read, and `herald node --coordinator`.
pub fn resolve_host_port(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.trim().parse() {
        return Ok(addr);
    }
    let mut addrs = value
        .trim()
        .to_socket_addrs()
        .map_err(|err| err.to_string())?;
    addrs
        .next()
        .ok_or_else(|| "the host name resolves to no address".to_owned())
}

fn read_secret_file(path: &str) -> Result<Secret, BootstrapError> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |source| BootstrapError::SecretFile {
        path: path.to_owned(),
        source,
    };
    // Opened without blocking, then judged by what was opened: a FIFO would
    // otherwise wait for a writer, and a device such as /dev/zero never ends.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    if !meta.is_file() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file; write the secret to one with `herald secret --file`",
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path,
            "herald: HERALD_SECRET_FILE is readable by other users; chmod 600 it"
        );
    }
    // A secret is 64 hex digits; more than this is not one, whatever follows.
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).map_err(failed)?;
    Secret::from_hex(&text).map_err(|source| BootstrapError::BadSecret {
        var: "HERALD_SECRET_FILE",
        source,
    })
}
