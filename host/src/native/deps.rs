//! A library's dependencies, found the way the dynamic loader (glibc's `ld.so`)
//! finds them, before anything is loaded, so a dependency from an untrusted
//! place is refused before any constructor runs.
//!
//! For each `DT_NEEDED` name: a name with a `/` is a path; a name the process
//! has loaded already is that object (the loader reuses it, matched by name or
//! soname); otherwise the first match of: `DT_RPATH` of the object and of the
//! objects that loaded it (only when the object has no `DT_RUNPATH`),
//! `LD_LIBRARY_PATH`, `DT_RUNPATH`, the directories of `/etc/ld.so.conf` (what
//! the loader's cache indexes), and the loader's built-in directories, skipping
//! files built for another machine. `$ORIGIN` is the directory of the object.
//!
//! Dependencies in the system library directories are trusted like the system
//! and are not followed further, and so are objects this process has already
//! loaded from elsewhere (nothing new runs); every other one must lie in an
//! allowed directory, is opened and hashed, and its own dependencies are resolved.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use super::file::{CheckedFile, ElfInfo, FileId};
use super::loader;
use super::policy::{self, Policy};
use crate::error::LoadError;

/// The non-system dependencies of `main`, opened and hashed, each after its own
/// dependencies (the order to load them in).
pub(crate) fn resolve(main: &CheckedFile, policy: &Policy) -> Result<Vec<CheckedFile>, LoadError> {
    let mut resolver = Resolver {
        policy,
        names: HashSet::new(),
        ids: HashSet::from([main.id]),
        out: Vec::new(),
    };
    resolver.visit(&main.path, &main.elf, &[])?;
    Ok(resolver.out)
}

struct Resolver<'a> {
    policy: &'a Policy,
    /// Names already resolved: the loader resolves each name once.
    names: HashSet<String>,
    ids: HashSet<FileId>,
    out: Vec<CheckedFile>,
}

/// The `DT_RPATH` of an object above in the loading chain, with its origin.
#[derive(Clone)]
struct Inherited {
    origin: PathBuf,
    rpath: Vec<String>,
}

struct Found {
    path: PathBuf,
    /// An object this process has loaded already (with the file it was mapped
    /// from): the loader reuses it, so nothing new runs.
    loaded: Option<Option<FileId>>,
    /// Found through an `$ORIGIN` entry: the loader, loading the object by
    /// descriptor, can match it only by its soname.
    via_origin: bool,
}

impl Resolver<'_> {
    fn visit(
        &mut self,
        object: &Path,
        elf: &ElfInfo,
        chain: &[Inherited],
    ) -> Result<(), LoadError> {
        let origin = object.parent().unwrap_or(Path::new("/")).to_path_buf();
        for name in &elf.needed {
            if !self.names.insert(name.clone()) {
                continue;
            }
            let Some(found) = find(name, &origin, elf, chain) else {
                return Err(LoadError::DependencyNotFound {
                    library: object.to_owned(),
                    name: name.clone(),
                });
            };
            let canonical =
                std::fs::canonicalize(&found.path).map_err(|e| LoadError::Unreadable {
                    path: found.path.clone(),
                    reason: e.to_string(),
                })?;
            if self.policy.is_system(&canonical) {
                continue;
            }
            let allowed = self.policy.allows(&canonical);
            if found.loaded.is_some() && !allowed {
                // Part of this process already (a dependency of the executable,
                // say): nothing new would run. A node that would load it afresh
                // checks it there.
                continue;
            }
            if !allowed {
                return Err(LoadError::DependencyNotAllowed {
                    library: object.to_owned(),
                    dependency: canonical,
                    allowed: self.policy.allowed(),
                });
            }
            let dependency = CheckedFile::open(&canonical)?;
            if let Some(mapped) = found.loaded {
                // What runs here must be the file other nodes will be told about.
                if mapped != Some(dependency.id) {
                    return Err(LoadError::Replaced { path: canonical });
                }
            }
            if !self.ids.insert(dependency.id) {
                continue;
            }
            if found.via_origin && dependency.elf.soname.as_deref() != Some(name.as_str()) {
                return Err(LoadError::DependencyUnmatchable {
                    library: object.to_owned(),
                    dependency: dependency.path.clone(),
                    name: name.clone(),
                });
            }
            let mut inner = chain.to_vec();
            if elf.runpath.is_empty() {
                inner.push(Inherited {
                    origin: origin.clone(),
                    rpath: elf.rpath.clone(),
                });
            }
            let dependency_elf = std::sync::Arc::clone(&dependency.elf);
            self.visit(&dependency.path.clone(), &dependency_elf, &inner)?;
            self.out.push(dependency);
        }
        Ok(())
    }
}

/// Where the loader finds `name` for an object in `origin` (see the module doc).
fn find(name: &str, origin: &Path, elf: &ElfInfo, chain: &[Inherited]) -> Option<Found> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(Found {
            path,
            loaded: None,
            via_origin: false,
        });
    }
    if let Some((path, mapped)) = loader::loaded_object(name) {
        return Some(Found {
            path,
            loaded: Some(mapped),
            via_origin: false,
        });
    }
    let mut dirs: Vec<(String, &Path)> = Vec::new();
    if elf.runpath.is_empty() {
        dirs.extend(elf.rpath.iter().map(|d| (d.clone(), origin)));
        for above in chain.iter().rev() {
            dirs.extend(
                above
                    .rpath
                    .iter()
                    .map(|d| (d.clone(), above.origin.as_path())),
            );
        }
    }
    let root = Path::new("/");
    dirs.extend(LD_LIBRARY_PATH.iter().map(|d| (d.clone(), root)));
    dirs.extend(elf.runpath.iter().map(|d| (d.clone(), origin)));
    let system = policy::ld_so_conf_dirs()
        .iter()
        .cloned()
        .chain(policy::default_dirs());
    dirs.extend(system.map(|d| (d.to_string_lossy().into_owned(), root)));
    for (dir, origin) in dirs {
        let Some((dir, via_origin)) = expand_origin(&dir, origin) else {
            continue;
        };
        let candidate = dir.join(name);
        if candidate.is_file() && built_for_this_machine(&candidate) {
            return Some(Found {
                path: candidate,
                loaded: None,
                via_origin,
            });
        }
    }
    None
}

/// `LD_LIBRARY_PATH` as the loader read it at start.
static LD_LIBRARY_PATH: LazyLock<Vec<String>> = LazyLock::new(|| {
    std::env::var("LD_LIBRARY_PATH")
        .map(|list| {
            list.split([':', ';'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
});

/// Replaces `$ORIGIN`; entries with other substitutions (`$LIB`, `$PLATFORM`)
/// are skipped.
fn expand_origin(dir: &str, origin: &Path) -> Option<(PathBuf, bool)> {
    let origin_text = origin.to_string_lossy();
    let expanded = dir
        .replace("${ORIGIN}", &origin_text)
        .replace("$ORIGIN", &origin_text);
    if expanded.contains('$') {
        return None;
    }
    Some((PathBuf::from(expanded), dir.contains("ORIGIN")))
}

/// Whether `path` is a 64-bit ELF object for this machine (the loader skips
/// others while searching).
fn built_for_this_machine(path: &Path) -> bool {
    let mut header = [0u8; 64];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header));
    read.is_ok() && super::file::parse_elf_header(&header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_replaced_and_other_substitutions_skipped() {
        let origin = Path::new("/opt/pkg/lib");
        assert_eq!(
            expand_origin("$ORIGIN/../deps", origin),
            Some((PathBuf::from("/opt/pkg/lib/../deps"), true))
        );
        assert_eq!(
            expand_origin("${ORIGIN}", origin),
            Some((PathBuf::from("/opt/pkg/lib"), true))
        );
        assert_eq!(
            expand_origin("/usr/local/lib", origin),
            Some((PathBuf::from("/usr/local/lib"), false))
        );
        assert_eq!(expand_origin("/opt/$LIB", origin), None);
    }
}
