//! Which files may be loaded: libraries from the allowed directories, their
//! dependencies from those or from the system library directories.
//!
//! Every check is on a canonical path (symlinks resolved) and by whole path
//! components, so `/opt/plug` does not allow `/opt/plugins`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use crate::error::LoadError;

/// The allowed directories of one runtime, canonicalised, with the system's.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    allowed: Vec<Allowed>,
}

/// One allowed directory, and whether anyone could write to it when the
/// runtime started: one that anyone can write to only later allows nothing
/// from then on (anyone may have put the file there since).
#[derive(Clone, Debug)]
struct Allowed {
    dir: PathBuf,
    open_at_start: bool,
}

impl Allowed {
    fn new(dir: PathBuf) -> Allowed {
        let open_at_start = writable_by_anyone(&dir);
        Allowed { dir, open_at_start }
    }

    /// Whether anyone may write to it now, though nobody could at the start.
    fn opened(&self) -> bool {
        !self.open_at_start && writable_by_anyone(&self.dir)
    }
}

impl Policy {
    /// Canonicalises each directory, dropping (with a log line) those that do not exist.
    pub(crate) fn new(dirs: &[PathBuf]) -> Policy {
        let mut allowed: Vec<Allowed> = Vec::new();
        for dir in dirs {
            match std::fs::canonicalize(dir) {
                Ok(dir) if !allowed.iter().any(|a| a.dir == dir) => allowed.push(Allowed::new(dir)),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(dir = %dir.display(), %error, "herald: allowed directory skipped")
                }
            }
        }
        Policy { allowed }
    }

    /// The allowed directories, canonical (those anyone may write to since the
    /// start left out).
    pub(crate) fn allowed(&self) -> Vec<PathBuf> {
        self.allowed
            .iter()
            .filter(|a| !a.opened())
            .map(|a| a.dir.clone())
            .collect()
    }

    /// Whether a library may be loaded from `canonical`.
    pub(crate) fn allows(&self, canonical: &Path) -> bool {
        self.allowed
            .iter()
            .any(|a| is_under(canonical, &a.dir) && !a.opened())
    }

    /// Why `canonical`, which [`allows`](Self::allows) refused, may not be
    /// loaded: it lies in an allowed directory that anyone may write to since
    /// the start, or outside every allowed directory.
    pub(crate) fn refusal(&self, canonical: &Path) -> LoadError {
        match self.allowed.iter().find(|a| is_under(canonical, &a.dir)) {
            Some(opened) => LoadError::OpenedDirectory {
                path: canonical.to_path_buf(),
                dir: opened.dir.clone(),
            },
            None => LoadError::NotAllowed {
                path: canonical.to_path_buf(),
                allowed: self.allowed(),
            },
        }
    }

    /// Whether `canonical` lies in a system library directory (where
    /// dependencies are trusted like the system itself).
    pub(crate) fn is_system(&self, canonical: &Path) -> bool {
        system_dirs().iter().any(|dir| is_under(canonical, dir))
    }
}

/// Whether anyone, not only its owner and group, may write to `dir`.
fn writable_by_anyone(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o002 != 0)
}

/// Whether `path` is `dir` or inside it, comparing whole components.
pub(crate) fn is_under(path: &Path, dir: &Path) -> bool {
    // `Path::starts_with` compares components, not bytes.
    path.starts_with(dir)
}

/// The system library directories, canonical: those `/etc/ld.so.conf` lists
/// (with its includes) and the loader's built-in ones.
pub(crate) fn system_dirs() -> &'static [PathBuf] {
    static DIRS: LazyLock<Vec<PathBuf>> = LazyLock::new(|| {
        let mut dirs = Vec::new();
        read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
        dirs.extend(default_dirs());
        let mut canonical: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            if let Ok(dir) = std::fs::canonicalize(&dir) {
                if !canonical.contains(&dir) && dir != Path::new("/") {
                    canonical.push(dir);
                }
            }
        }
        canonical
    });
    &DIRS
}

/// The directories `ld.so.conf` lists, in order: what the loader's cache indexes.
pub(crate) fn ld_so_conf_dirs() -> &'static [PathBuf] {
    static DIRS: LazyLock<Vec<PathBuf>> = LazyLock::new(|| {
        let mut dirs = Vec::new();
        read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
        dirs
    });
    &DIRS
}

/// The loader's built-in directories, searched last.
pub(crate) fn default_dirs() -> Vec<PathBuf> {
    let triple = match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        other => other,
    };
    [
        format!("/lib/{triple}"),
        format!("/usr/lib/{triple}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

fn read_ld_so_conf(file: &Path, dirs: &mut Vec<PathBuf>, depth: u32) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    if depth > 8 {
        return;
    }
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(pattern) = line.strip_prefix("include") {
            for included in glob_conf(pattern.trim(), file) {
                read_ld_so_conf(&included, dirs, depth + 1);
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
}

/// Expands an `include` pattern of the form `DIR/*.conf` (the only form the
/// distributions use); a plain path is returned as it is.
fn glob_conf(pattern: &str, from: &Path) -> Vec<PathBuf> {
    let pattern = match from.parent() {
        Some(parent) if !pattern.starts_with('/') => parent.join(pattern),
        _ => PathBuf::from(pattern),
    };
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(suffix) = name.strip_prefix('*') else {
        return vec![pattern];
    };
    let Some(dir) = pattern.parent() else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_match_whole_components() {
        let policy = Policy {
            allowed: vec![Allowed {
                dir: PathBuf::from("/opt/plug"),
                open_at_start: false,
            }],
        };
        assert!(policy.allows(Path::new("/opt/plug/lib.so")));
        assert!(policy.allows(Path::new("/opt/plug/sub/lib.so")));
        assert!(!policy.allows(Path::new("/opt/plugins/lib.so")));
        assert!(!policy.allows(Path::new("/opt/lib.so")));
    }

    #[test]
    fn system_directories_never_include_the_root() {
        assert!(system_dirs().iter().all(|dir| dir != Path::new("/")));
        let policy = Policy::new(&[]);
        let libc = system_dirs()
            .iter()
            .map(|dir| dir.join("libc.so.6"))
            .find(|path| path.exists());
        if let Some(libc) = libc {
            assert!(policy.is_system(&libc));
        }
        assert!(!policy.is_system(Path::new("/tmp/libc.so.6")));
    }
}
