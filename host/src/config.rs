//! [`HostConfig`]: how a runtime behaves, with defaults that suit one job on a cluster.

use std::path::PathBuf;
use std::time::Duration;

/// Environment variable listing the allowed library directories, separated by `:`.
/// When set it replaces the default list.
pub const LIBRARY_PATH_ENV: &str = "HERALD_LIBRARY_PATH";

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
    /// Default: the directories in `HERALD_LIBRARY_PATH` if it is set, otherwise
    /// the working directory the process started in and the directory of its
    /// executable. Loading anything else is refused, on every node.
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
        }
    }
}

impl HostConfig {
    /// Adds an allowed library directory.
    pub fn with_library_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.library_dirs.push(dir.into());
        self
    }
}

/// `HERALD_LIBRARY_PATH` if set, else the working directory and the executable's.
pub fn default_library_dirs() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os(LIBRARY_PATH_ENV) {
        return std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let mut dirs = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
    {
        dirs.push(dir);
    }
    dirs
}
