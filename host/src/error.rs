//! Errors of the host, each saying what to do next.

use std::path::PathBuf;
use std::time::Duration;

use herald_core::{RegistrationResult, TaskError};

use crate::code::Digest;

/// Everything a herald host call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The registration ran, but failed on some nodes or could not reach them. The
    /// result names each; `what` names the registration (its tag, code or tasks).
    #[error("{}", describe_result(what, result))]
    Registration {
        /// The registration, by name.
        what: String,
        /// Its result.
        result: RegistrationResult,
    },
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
    /// Another node declared this one down (it stopped answering, its link broke,
    /// or it sent something invalid): the job goes on without it, and this runtime
    /// has stopped.
    #[error(
        "this node was declared down by node {by} ({reason}); the job goes on without it, \
         so herald stopped here: check this node's network and load, or raise \
         --peer-timeout-ms (HERALD_PEER_TIMEOUT_MS)"
    )]
    Fenced {
        /// The node that declared this one down.
        by: u32,
        /// Why.
        reason: String,
    },
    /// This node joined a running job but was not admitted: a registration of
    /// the job's log failed here (the reason names it and this node), or its
    /// admitter went down first. It takes no part in the job.
    #[error("{reason}; check that this node can load what the rest of the job loaded")]
    NotAdmitted {
        /// Why, naming this node and the registration.
        reason: String,
    },
    /// The C ABI was called in a process with no runtime installed.
    #[error(
        "no herald runtime is running in this process: call herald_init first, or load \
         plugins from a herald host (`herald node --load`, herald-python, or a program that calls \
         herald_host::install_global)"
    )]
    NoRuntime,
    /// The C ABI was called after `herald_finalize` ended this process's runtime.
    #[error(
        "herald_finalize has ended herald in this process, and a process joins one job, \
         once: make every herald call before herald_finalize"
    )]
    Finalized,
    /// The C ABI was called in a child forked from the process whose runtime it
    /// is: the child has none of its threads and shares its links.
    #[error(
        "this process (pid {pid}) was forked from process {node}, which is the job's node: \
         herald works in that process only (a forked child has a copy of its runtime but none \
         of its threads, and shares its links); call herald there, or exec a program that \
         joins a job of its own"
    )]
    Forked {
        /// This process.
        pid: u32,
        /// The process that started the runtime.
        node: u32,
    },
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
    /// A registration was refused before it started (the text says why).
    #[error("{0}")]
    Refused(String),
    /// The protocol core rejected the request (e.g. a registration too large for a frame).
    #[error("{0}")]
    Protocol(String),
    /// Starting the runtime failed.
    #[error("cannot start the herald runtime: {0}")]
    Start(String),
    /// Ending the job collectively ([`Runtime::finalize`](crate::Runtime::finalize)) failed.
    #[error("herald_finalize: {0}")]
    Finalize(String),
}

/// Why a library could not be loaded, or a symbol found in it, on this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The library lies outside every allowed directory.
    #[error(
        "library {path} is outside the allowed directories ({allowed}); add its directory \
         to HERALD_LIBRARY_PATH on every node (or pass --library-path to herald node or \
         herald-python; both add to the defaults)",
        allowed = display_dirs(allowed)
    )]
    NotAllowed {
        /// The canonical path.
        path: PathBuf,
        /// The allowed directories.
        allowed: Vec<PathBuf>,
    },
    /// The library lies in an allowed directory that anyone may write to now,
    /// though nobody could when herald started here: anyone may have put it there.
    #[error(
        "library {path} is in {dir}, which has become writable by anyone since herald \
         started here, so nothing loads from it; make it writable by its owner only \
         (chmod o-w) on every node"
    )]
    OpenedDirectory {
        /// The canonical path.
        path: PathBuf,
        /// The allowed directory anyone may now write to.
        dir: PathBuf,
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
    /// A dependency of the library lies outside the allowed directories and the
    /// system library directories; nothing was loaded.
    #[error(
        "library {library} depends on {dependency}, which is outside the allowed directories \
         ({allowed}) and the system library directories; nothing was loaded; add its directory \
         to HERALD_LIBRARY_PATH on every node (or pass --library-path to herald node or \
         herald-python; both add to the defaults)",
        allowed = display_dirs(allowed)
    )]
    DependencyNotAllowed {
        /// The library being loaded (or the dependency that needs this one).
        library: PathBuf,
        /// The dependency, canonical.
        dependency: PathBuf,
        /// The allowed directories.
        allowed: Vec<PathBuf>,
    },
    /// The loader would not find a dependency.
    #[error(
        "library {library} needs {name}, which the loader does not find here (rpath, \
         LD_LIBRARY_PATH, runpath, system directories); nothing was loaded; install it on every node"
    )]
    DependencyNotFound {
        /// The library that needs it.
        library: PathBuf,
        /// The `DT_NEEDED` name.
        name: String,
    },
    /// A dependency differs from the one the reference names, or is resolved
    /// elsewhere.
    #[error(
        "library {library}: its dependency {dependency} does not match the registration: \
         {reason}; install the same builds at the same paths on every node"
    )]
    DependencyMismatch {
        /// The library.
        library: PathBuf,
        /// The dependency.
        dependency: PathBuf,
        /// How it differs.
        reason: String,
    },
    /// A dependency found through `$ORIGIN` whose soname is not the name it is
    /// needed by: loaded by descriptor, the library could not find it.
    #[error(
        "library {library} needs {name} through $ORIGIN, but {dependency} has no soname {name}; \
         herald loads libraries from the descriptor it hashed and matches such dependencies \
         by soname: link it with -Wl,-soname,{name}"
    )]
    DependencyUnmatchable {
        /// The library that needs it.
        library: PathBuf,
        /// The dependency.
        dependency: PathBuf,
        /// The `DT_NEEDED` name.
        name: String,
    },
    /// The file changed while it was being hashed or loaded.
    #[error(
        "library {path} changed while it was being hashed or loaded; install libraries by \
         renaming a complete file into place, and try again"
    )]
    Changed {
        /// The path.
        path: PathBuf,
    },
    /// The file is not a shared object for this machine.
    #[error("library {path} cannot be loaded: {reason}")]
    NotElf {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The loader did not map the file that was hashed.
    #[error("library {path} was loaded, but it cannot be verified: {reason}")]
    NotVerified {
        /// The path.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A library loaded outside herald no longer matches the file at its path.
    #[error(
        "library {path} was replaced on disk after this process loaded it, so other nodes \
         would load another file; load it again in a new process, or install new builds \
         at new paths"
    )]
    Replaced {
        /// The path.
        path: PathBuf,
    },
    /// The path is not valid UTF-8, so it cannot be named to other nodes.
    #[error("library path {path:?} is not valid UTF-8; rename it")]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
}

/// A registration's result, with the registration named.
fn describe_result(what: &str, result: &RegistrationResult) -> String {
    let text = result.to_string();
    let short = result.key.short();
    text.replacen(
        &format!("registration {short}"),
        &format!("registration of {what}"),
        1,
    )
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
