//! Errors of the host, each saying what to do next.

use std::path::PathBuf;
use std::time::Duration;

use herald_core::{RegistrationResult, TaskError};

use crate::code::Digest;

/// Everything a herald host call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The registration ran, but failed on some nodes or could not reach them. The
    /// result names each.
    #[error("{0}")]
    Registration(RegistrationResult),
    /// A launched task produced no result.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// Waiting here could never end.
    #[error("waiting here would deadlock: {reason}")]
    WouldDeadlock {
        /// Why.
        reason: String,
    },
    /// Loading or resolving native code failed on this node.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The runtime has stopped; nothing more will complete.
    #[error("the herald runtime has stopped; start a new one to register or launch more")]
    Stopped,
    /// The C ABI was called in a process with no runtime installed.
    #[error(
        "no herald runtime is running in this process: load plugins from a herald host \
         (`herald node --load`, or a program that calls herald_host::install_global)"
    )]
    NoRuntime,
    /// A function pointer that cannot be named portably.
    #[error("cannot name the function at {address:#x} portably: {reason}")]
    NotExported {
        /// The address.
        address: usize,
        /// Why (not in a shared library, not an exported symbol, ...).
        reason: String,
    },
    /// A handle that does not exist (never created, or released).
    #[error("handle {0} is unknown: it was never created or has been released")]
    UnknownHandle(u64),
    /// A bounded wait ran out.
    #[error("still not complete after {waited:?}; wait longer or check the nodes' logs")]
    TimedOut {
        /// How long it waited.
        waited: Duration,
    },
    /// An argument is unusable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The protocol core rejected the request (e.g. a registration too large for a frame).
    #[error("{0}")]
    Protocol(String),
    /// Starting the runtime failed.
    #[error("cannot start the herald runtime: {0}")]
    Start(String),
}

/// Why a library could not be loaded, or a symbol found in it, on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The library lies outside every allowed directory.
    #[error(
        "library {path} is outside the allowed directories ({allowed}); add its directory \
         with --library-path or HERALD_LIBRARY_PATH on every node",
        allowed = display_dirs(allowed)
    )]
    NotAllowed {
        /// The canonical path.
        path: PathBuf,
        /// The allowed directories.
        allowed: Vec<PathBuf>,
    },
    /// The file is not there, or not readable.
    #[error("library {path} cannot be read: {reason}; install it at the same path on every node")]
    Unreadable {
        /// The path as given.
        path: PathBuf,
        /// The system's error.
        reason: String,
    },
    /// The file differs from the one the reference was made from.
    #[error(
        "library {path} differs from the one the registration names (sha256 {found} here, \
         {expected} expected); install the same build on every node",
        found = found.short(),
        expected = expected.short()
    )]
    DigestMismatch {
        /// The path.
        path: PathBuf,
        /// The digest in the reference.
        expected: Digest,
        /// The digest of the file here (or of the copy already loaded here).
        found: Digest,
    },
    /// `dlopen` failed.
    #[error("cannot load library {path}: {reason}")]
    Open {
        /// The path.
        path: PathBuf,
        /// `dlerror`'s text.
        reason: String,
    },
    /// `dlsym` failed.
    #[error("library {path} has no symbol {symbol}: {reason}; export it with C linkage")]
    Symbol {
        /// The library.
        path: PathBuf,
        /// The symbol.
        symbol: String,
        /// `dlerror`'s text.
        reason: String,
    },
    /// The path is not valid UTF-8, so it cannot be named to other nodes.
    #[error("library path {path:?} is not valid UTF-8; rename it")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "none".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
