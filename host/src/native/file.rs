//! A library file opened once: its canonical path read back from the open
//! descriptor, its identity (device, inode), its SHA-256 computed from that
//! descriptor, and what its dynamic section asks of the loader. Loading goes
//! through the same descriptor, so what is hashed is what is loaded.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object::elf;
use object::read::elf::{Dyn as _, FileHeader as _};
use sha2::{Digest as _, Sha256};

use crate::code::Digest;
use crate::error::LoadError;

/// Device and inode: which file an open descriptor or a mapping is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

/// What a file's metadata says about its content: unchanged stamp, unchanged
/// bytes (given the cache's precaution about recent changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Stamp {
    id: FileId,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// What the dynamic section asks of the loader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    pub(crate) needed: Vec<String>,
    pub(crate) rpath: Vec<String>,
    pub(crate) runpath: Vec<String>,
    pub(crate) soname: Option<String>,
}

/// An open library file, hashed.
pub(crate) struct CheckedFile {
    /// Kept open while the file may still be loaded: the loader opens it again
    /// through `/proc/self/fd`.
    pub(crate) file: File,
    /// Canonical path of the open file (read back from the descriptor).
    pub(crate) path: PathBuf,
    pub(crate) id: FileId,
    pub(crate) digest: Digest,
    pub(crate) elf: Arc<ElfInfo>,
    stamp: Stamp,
}

/// What hashing and parsing a file found.
type Hashed = (Digest, Arc<ElfInfo>);

/// Digests and dynamic sections by file stamp.
static CACHE: LazyLock<Mutex<HashMap<Stamp, Hashed>>> = LazyLock::new(Default::default);

/// A change within this long of hashing may share a timestamp with it (file
/// timestamps advance in clock ticks): such a digest is not cached.
const RACY_WINDOW: Duration = Duration::from_secs(2);

impl CheckedFile {
    /// Opens `path`, reads back the canonical path of what was opened, and
    /// hashes it (from the cache when its stamp is known and old enough).
    pub(crate) fn open(path: &Path) -> Result<CheckedFile, LoadError> {
        let unreadable = |e: std::io::Error| LoadError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let file = File::open(path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(LoadError::Unreadable {
                path: path.to_owned(),
                reason: "not a regular file".into(),
            });
        }
        let canonical = descriptor_path(&file).map_err(unreadable)?;
        let stamp = stamp(&meta);
        let cached = lock_cache().get(&stamp).cloned();
        let (digest, elf) = match cached {
            Some(hit) => hit,
            None => hash_and_parse(&file, &canonical, stamp)?,
        };
        Ok(CheckedFile {
            file,
            path: canonical,
            id: stamp.id,
            digest,
            elf,
            stamp,
        })
    }

    /// The path the loader opens to load exactly this file.
    pub(crate) fn loader_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Fails if the file was written to since it was hashed (its size or
    /// modification time moved). Its change time is not compared: renaming
    /// another file over its path, the usual way to install, changes it too.
    pub(crate) fn check_unchanged(&self) -> Result<(), LoadError> {
        let meta = self.file.metadata().map_err(|e| LoadError::Unreadable {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if stamp(&meta).same_content(&self.stamp) {
            Ok(())
        } else {
            Err(LoadError::Changed {
                path: self.path.clone(),
            })
        }
    }
}

impl Stamp {
    /// Whether the content can be assumed unchanged: same file, size and
    /// modification time.
    fn same_content(&self, other: &Stamp) -> bool {
        (self.id, self.size, self.mtime_ns) == (other.id, other.size, other.mtime_ns)
    }
}

fn hash_and_parse(file: &File, path: &Path, stamp: Stamp) -> Result<Hashed, LoadError> {
    let started = SystemTime::now();
    let mut bytes = Vec::with_capacity(usize::try_from(stamp.size).unwrap_or(0));
    let mut reader = file;
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| LoadError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let after = file.metadata().map(|m| self::stamp(&m)).ok();
    if !after.is_some_and(|after| after.same_content(&stamp)) || bytes.len() as u64 != stamp.size {
        return Err(LoadError::Changed {
            path: path.to_owned(),
        });
    }
    let digest = Digest(Sha256::digest(&bytes).into());
    let elf = Arc::new(parse_elf(&bytes).map_err(|reason| LoadError::NotElf {
        path: path.to_owned(),
        reason,
    })?);
    if settled(stamp.ctime_ns, started) {
        lock_cache().insert(stamp, (digest, Arc::clone(&elf)));
    }
    Ok((digest, elf))
}

/// Whether a file last changed at `ctime_ns` (since the epoch) had settled when
/// hashing started: a later write cannot carry the same timestamps.
fn settled(ctime_ns: i128, started: SystemTime) -> bool {
    let changed = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ctime_ns).unwrap_or(0));
    started
        .duration_since(changed)
        .is_ok_and(|age| age > RACY_WINDOW)
}

/// Reads the dynamic section of a shared object built for this machine.
pub(crate) fn parse_elf(bytes: &[u8]) -> Result<ElfInfo, String> {
    let header = elf::FileHeader64::<object::Endianness>::parse(bytes)
        .map_err(|e| format!("not a 64-bit ELF file ({e})"))?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    if header.e_machine(endian) != this_machine() {
        return Err(format!(
            "built for another machine (ELF machine {}, this one is {})",
            header.e_machine(endian),
            this_machine()
        ));
    }
    let sections = header.sections(endian, bytes).map_err(|e| e.to_string())?;
    let Some((dynamics, strings_index)) =
        sections.dynamic(endian, bytes).map_err(|e| e.to_string())?
    else {
        return Ok(ElfInfo::default());
    };
    let strings = sections
        .strings(endian, bytes, strings_index)
        .map_err(|e| e.to_string())?;
    let mut info = ElfInfo::default();
    for entry in dynamics {
        let tag = entry.d_tag(endian);
        if tag == elf::DT_NULL {
            break;
        }
        let string = || {
            let offset = u32::try_from(entry.d_val(endian)).unwrap_or(u32::MAX);
            strings
                .get(offset)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .map_err(|_| "a dynamic entry names a string outside the string table".to_owned())
        };
        if tag == elf::DT_NEEDED {
            info.needed.push(string()?);
        } else if tag == elf::DT_SONAME {
            info.soname = Some(string()?);
        } else if tag == elf::DT_RPATH {
            info.rpath.extend(split_path_list(&string()?));
        } else if tag == elf::DT_RUNPATH {
            info.runpath.extend(split_path_list(&string()?));
        }
    }
    Ok(info)
}

/// Whether a file starting with `bytes` is a 64-bit ELF object for this machine.
pub(crate) fn parse_elf_header(bytes: &[u8]) -> bool {
    elf::FileHeader64::<object::Endianness>::parse(bytes)
        .ok()
        .and_then(|header| {
            let endian = header.endian().ok()?;
            Some(header.e_machine(endian) == this_machine())
        })
        .unwrap_or(false)
}

fn split_path_list(list: &str) -> Vec<String> {
    list.split(':')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn this_machine() -> elf::Machine {
    match std::env::consts::ARCH {
        "x86_64" => elf::EM_X86_64,
        "aarch64" => elf::EM_AARCH64,
        "riscv64" => elf::EM_RISCV,
        "powerpc64" => elf::EM_PPC64,
        "s390x" => elf::EM_S390,
        "loongarch64" => elf::EM_LOONGARCH,
        _ => elf::EM_NONE,
    }
}

/// The canonical path of an open file, as the kernel names it: where it was
/// when it was opened. (If another file has been renamed over that path since,
/// the kernel adds " (deleted)"; the path is still where this file was found,
/// and other nodes will find the other file there and refuse it by digest.)
fn descriptor_path(file: &File) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let path = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let bytes = path.into_os_string().into_vec();
    let bytes = bytes
        .strip_suffix(b" (deleted)")
        .map(<[u8]>::to_vec)
        .unwrap_or(bytes);
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    Stamp {
        id: FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        size: meta.size(),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
    }
}

fn lock_cache() -> std::sync::MutexGuard<'static, HashMap<Stamp, Hashed>> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_executable_parses_and_hashes_from_its_descriptor() {
        let exe = std::env::current_exe().expect("exe");
        let checked = CheckedFile::open(&exe).expect("open");
        assert_eq!(
            checked.path,
            std::fs::canonicalize(&exe).expect("canonical")
        );
        let bytes = std::fs::read(&exe).expect("read");
        assert_eq!(checked.digest.0, <[u8; 32]>::from(Sha256::digest(&bytes)));
        assert!(checked.elf.needed.iter().any(|n| n.starts_with("libc.so")));
        checked.check_unchanged().expect("unchanged");
    }

    #[test]
    fn only_settled_files_are_cached() {
        let now = SystemTime::now();
        let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128;
        assert!(!settled(ns(now), now), "changed just now");
        assert!(!settled(ns(now - Duration::from_secs(1)), now));
        assert!(settled(ns(now - Duration::from_secs(3)), now));
        assert!(
            !settled(ns(now + Duration::from_secs(5)), now),
            "a clock that went back"
        );
    }

    #[test]
    fn a_library_rewritten_in_place_with_the_same_size_gets_its_new_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let build = |value: u32| {
            let source = dir.path().join(format!("v{value}.c"));
            std::fs::write(&source, format!("int version = {value};\n")).expect("write");
            let output = dir.path().join(format!("libv{value}.so"));
            let status = std::process::Command::new("cc")
                .args(["-shared", "-fPIC", "-o"])
                .arg(&output)
                .arg(&source)
                .status()
                .expect("cc");
            assert!(status.success());
            std::fs::read(&output).expect("read")
        };
        let (one, two) = (build(1), build(2));
        assert_eq!(one.len(), two.len());
        let path = dir.path().join("libplugin.so");
        std::fs::write(&path, &one).expect("write");
        let first = CheckedFile::open(&path).expect("open").digest;
        // In place: same inode, same size, within the same second.
        std::fs::write(&path, &two).expect("rewrite");
        let second = CheckedFile::open(&path).expect("open").digest;
        assert_ne!(first, second);
        assert_eq!(second.0, <[u8; 32]>::from(Sha256::digest(&two)));
    }

    #[test]
    fn a_file_that_is_not_elf_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("libfake.so");
        std::fs::write(&path, b"not a library").expect("write");
        match CheckedFile::open(&path) {
            Err(LoadError::NotElf { path: named, .. }) => assert!(named.ends_with("libfake.so")),
            Err(other) => panic!("expected NotElf, got {other}"),
            Ok(_) => panic!("expected NotElf"),
        }
    }
}
