//! [`HostConfig`]: how a runtime behaves, with defaults that suit one job on a cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use herald_tcp::{Agreed, MeshConfig};

use crate::HostError;

/// Name under which links agree on the protocol version.
const PROTOCOL_VERSION: &str = "protocol version";
/// Name under which links agree on the fan-out.
const FANOUT: &str = "fan-out";

/// Environment variable listing more allowed library directories, separated by
/// `:`. They are added to the implicit defaults (see [`default_library_dirs`]).
pub const LIBRARY_PATH_ENV: &str = "HERALD_LIBRARY_PATH";

/// Default [`HostConfig::poll_window`]: 100 µs.
pub const DEFAULT_POLL_WINDOW: Duration = Duration::from_micros(100);

/// Settings of one runtime.
///
/// ```
/// use herald_host::HostConfig;
/// let config = HostConfig::default().with_library_dir("/opt/plugins");
/// assert!(config.library_dirs.contains(&"/opt/plugins".into()));
/// ```
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Directories libraries may be loaded from (their subdirectories included).
    /// Default: [`default_library_dirs`]. Loading anything else is refused, on
    /// every node; so is a library whose dependencies lie outside these and the
    /// system library directories.
    pub library_dirs: Vec<PathBuf>,
    /// Children per node of the dissemination tree.
    pub fanout: u32,
    /// Largest frame sent or accepted; must match the transport's limit.
    pub max_frame_bytes: usize,
    /// Task variants registered one by one are batched into one registration;
    /// a batch is sent once no variant was added to it for this long...
    pub batch_idle: Duration,
    /// ...or once its first variant is this old...
    pub batch_max_delay: Duration,
    /// ...or once it holds about this many bytes (or at the next launch, wait, or
    /// end of the load or invocation that registered them).
    pub batch_max_bytes: usize,
    /// An idle worker thread beyond the first exits after this long.
    pub worker_idle_timeout: Duration,
    /// A registration or launch still unanswered after this long is logged as a
    /// warning naming what it waits for, and a callback or task still running
    /// here after this long as one naming it (again each time the wait
    /// doubles); zero: never. `herald node` sets it to half the peer timeout.
    pub slow_warning: Duration,
    /// The runtime handles no frame from other nodes until
    /// [`Runtime::open_events`](crate::Runtime::open_events): for a program that
    /// must put executors, hooks or the C ABI's runtime in place before work from
    /// other nodes arrives. Frames wait in the transport's channel meanwhile.
    pub hold_events: bool,
    /// After activity, idle workers (and the event loop thread, for a transport
    /// that cannot hand it frames on its own thread) keep polling for this long
    /// (yielding the core to any thread that has work) before they park, so the
    /// next message or job of a burst costs no wake-up; an idle runtime parks.
    /// Idle workers and the transport's I/O thread park at once while a job
    /// (user code) has been running on a worker for over 50 µs, leaving it the
    /// core. Default 100 µs, or `HERALD_POLL_US`; zero on cores shared with
    /// CPU-bound work of other processes, where polling takes time from it.
    pub poll_window: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            library_dirs: default_library_dirs(),
            fanout: herald_core::DEFAULT_FANOUT,
            max_frame_bytes: herald_core::DEFAULT_MAX_FRAME_BYTES,
            batch_idle: Duration::from_millis(2),
            batch_max_delay: Duration::from_millis(100),
            batch_max_bytes: 8 << 20,
            worker_idle_timeout: Duration::from_secs(30),
            slow_warning: Duration::from_secs(10),
            hold_events: false,
            poll_window: herald_tcp::poll_from_env().unwrap_or(DEFAULT_POLL_WINDOW),
        }
    }
}

impl HostConfig {
    /// Makes `mesh` check, on every link as it forms, that both ends use this
    /// configuration's protocol version, fan-out and frame limit (a mismatch fails
    /// formation naming both values), and sets its frame limit to this one's.
    pub fn agree_on(&self, mesh: &mut MeshConfig) {
        mesh.max_frame_bytes = self.max_frame_bytes;
        mesh.agree(
            PROTOCOL_VERSION,
            u64::from(herald_core::WIRE_VERSION),
            "herald build",
        );
        mesh.agree(FANOUT, u64::from(self.fanout), "--fanout");
    }

    /// Refuses a mesh that did not agree on what [`agree_on`](Self::agree_on) adds.
    pub(crate) fn check_agreed(&self, agreed: &[Agreed]) -> Result<(), HostError> {
        let value = |name: &str| agreed.iter().find(|a| a.name == name).map(|a| a.value);
        let frame_limit = value("frame limit (bytes)");
        let wanted = [
            (PROTOCOL_VERSION, u64::from(herald_core::WIRE_VERSION)),
            (FANOUT, u64::from(self.fanout)),
        ];
        let disagrees = wanted.iter().any(|(name, v)| value(name) != Some(*v))
            || frame_limit != Some(self.max_frame_bytes as u64);
        if disagrees {
            return Err(HostError::Start(
                "the mesh was formed without checking that every rank uses this runtime's \
                 protocol version, fan-out and frame limit: pass its MeshConfig through \
                 HostConfig::agree_on before Mesh::establish"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Adds an allowed library directory.
    pub fn with_library_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.library_dirs.push(dir.into());
        self
    }
}

/// The default allowed directories: those in `HERALD_LIBRARY_PATH`, plus the
/// implicit ones — the working directory the process started in and the
/// directory of its executable — unless an implicit one is unsafe to allow
/// without being asked: `/`, the home directory or one of its ancestors, or a
/// directory anyone may write to. (A rank started in `/` or in `/tmp` does not
/// allow every file; name such a directory in `HERALD_LIBRARY_PATH` or
/// `--library-path` to allow it.)
pub fn default_library_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os(LIBRARY_PATH_ENV)
        .map(|list| {
            std::env::split_paths(&list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let cwd = std::env::current_dir().ok();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from));
    for dir in cwd.into_iter().chain(exe_dir) {
        match implicit_dir_problem(&dir) {
            None => dirs.push(dir),
            Some(problem) => tracing::debug!(
                dir = %dir.display(),
                problem,
                "herald: directory not allowed implicitly"
            ),
        }
    }
    dirs
}

/// Why `dir` must not be allowed without being named, if it must not.
pub fn implicit_dir_problem(dir: &Path) -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(canonical) = std::fs::canonicalize(dir) else {
        return Some("it does not exist");
    };
    if canonical == Path::new("/") {
        return Some("it is the root directory");
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .and_then(|h| std::fs::canonicalize(h).ok());
    if home.is_some_and(|home| home.starts_with(&canonical)) {
        return Some("it is the home directory or contains it");
    }
    match std::fs::metadata(&canonical) {
        Ok(meta) if meta.permissions().mode() & 0o002 != 0 => Some("anyone may write to it"),
        Ok(_) => None,
        Err(_) => Some("it cannot be read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_directories_are_never_implicit() {
        assert_eq!(
            implicit_dir_problem(Path::new("/")),
            Some("it is the root directory")
        );
        let tmp = std::env::temp_dir();
        if std::fs::metadata(&tmp).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o002 != 0
        }) {
            assert_eq!(implicit_dir_problem(&tmp), Some("anyone may write to it"));
        }
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            if home.is_dir() {
                assert!(implicit_dir_problem(&home).is_some());
            }
        }
        let private = tempfile::tempdir().expect("tempdir");
        assert_eq!(implicit_dir_problem(private.path()), None);
    }
}
