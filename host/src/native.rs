//! Native code: allowed directories, file digests, `dlopen` through `libloading`,
//! and `dladdr` to turn a function pointer into a portable reference.
//!
//! Loaded libraries are never closed: code references into them may be used at
//! any time. The table of loaded libraries and the digest cache are process-wide,
//! like `dlopen` itself.

use std::collections::HashMap;
use std::ffi::{CStr, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::SystemTime;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use sha2::{Digest as _, Sha256};

use crate::code::{Digest, LibraryRef};
use crate::error::{HostError, LoadError};

/// A library this process has loaded, with the digest of the file it came from.
#[derive(Clone)]
pub(crate) struct LoadedLibrary {
    pub(crate) reference: LibraryRef,
    pub(crate) library: Arc<Library>,
}

/// Libraries loaded through herald, by canonical path.
static LOADED: LazyLock<Mutex<HashMap<PathBuf, LoadedLibrary>>> = LazyLock::new(Default::default);

/// References already made by `dladdr`, by the loader's name for the object: the
/// object in memory does not change, so neither does its reference.
static BY_LOADER_NAME: LazyLock<Mutex<HashMap<Vec<u8>, LibraryRef>>> =
    LazyLock::new(Default::default);

/// File digests by canonical path, valid while size and modification time match.
static DIGESTS: LazyLock<Mutex<HashMap<PathBuf, CachedDigest>>> = LazyLock::new(Default::default);

#[derive(Clone, Copy)]
struct CachedDigest {
    len: u64,
    modified: Option<SystemTime>,
    digest: Digest,
}

/// Loads the library at `path` on this node for the caller: canonicalised, inside
/// `allowed`, its digest recorded. Its constructors run on the calling thread.
pub(crate) fn load_local(path: &Path, allowed: &[PathBuf]) -> Result<LoadedLibrary, LoadError> {
    let canonical = allowed_path(path, allowed)?;
    if let Some(loaded) = loaded(&canonical) {
        return Ok(loaded);
    }
    let digest = file_digest(&canonical)?;
    open(&canonical, digest)
}

/// Loads the library a reference names, refusing a path outside `allowed` and a
/// file whose digest differs from the reference's.
pub(crate) fn load_reference(
    reference: &LibraryRef,
    allowed: &[PathBuf],
) -> Result<LoadedLibrary, LoadError> {
    // Fast path, no system call: a path already loaded is a canonical path here.
    let given = Path::new(&reference.path);
    if let Some(loaded) = loaded(given).filter(|_| allowed.iter().any(|d| given.starts_with(d))) {
        return check_digest(given, reference.digest, loaded.reference.digest).map(|()| loaded);
    }
    let canonical = allowed_path(given, allowed)?;
    if let Some(loaded) = loaded(&canonical) {
        return check_digest(&canonical, reference.digest, loaded.reference.digest)
            .map(|()| loaded);
    }
    let digest = file_digest(&canonical)?;
    check_digest(&canonical, reference.digest, digest)?;
    open(&canonical, digest)
}

/// The address of `symbol` in `library`.
pub(crate) fn symbol_address(
    loaded: &LoadedLibrary,
    symbol: &str,
) -> Result<*const c_void, LoadError> {
    let mut name = symbol.as_bytes().to_vec();
    name.push(0);
    // SAFETY: the symbol is only looked up here, as an untyped pointer; callers
    // cast it to the function type the C ABI documents for its use.
    let found = unsafe { loaded.library.get::<*const c_void>(&name) };
    match found {
        Ok(pointer) => Ok(*pointer),
        Err(error) => Err(LoadError::Symbol {
            path: PathBuf::from(&loaded.reference.path),
            symbol: symbol.to_owned(),
            reason: error.to_string(),
        }),
    }
}

/// Names the function at `address` portably: the library it lives in (canonical
/// path and digest) and its exported symbol name, found with `dladdr`.
pub(crate) fn reference_for_address(address: usize) -> Result<(LibraryRef, String), HostError> {
    let not_exported = |reason: &str| HostError::NotExported {
        address,
        reason: reason.to_owned(),
    };
    // SAFETY: dladdr only reads the loader's tables; `info` is a plain C struct
    // that it fills in, and zeroed is a valid value for it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: see above; any address may be passed, dladdr returns 0 if unknown.
    let found = unsafe { libc::dladdr(address as *const c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return Err(not_exported("it is not inside any loaded object"));
    }
    // SAFETY: a NUL-terminated string owned by the loader while the object is
    // loaded; copied at once.
    let file = unsafe { CStr::from_ptr(info.dli_fname) }
        .to_bytes()
        .to_vec();
    let exported = !info.dli_sname.is_null() && info.dli_saddr as usize == address;
    // SAFETY: as above, for the symbol name, when there is one.
    let symbol = exported.then(|| {
        unsafe { CStr::from_ptr(info.dli_sname) }
            .to_string_lossy()
            .into_owned()
    });
    let cached = BY_LOADER_NAME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&file)
        .cloned();
    if let (Some(library), Some(symbol)) = (&cached, &symbol) {
        return Ok((library.clone(), symbol.clone()));
    }
    let name = file.clone();
    let file = PathBuf::from(std::ffi::OsStr::from_bytes(&file));
    let canonical = std::fs::canonicalize(&file).map_err(|e| not_exported(&e.to_string()))?;
    if is_main_program(&canonical) {
        return Err(not_exported(
            "it lives in the main program, which other nodes cannot load; put it in a shared library",
        ));
    }
    let Some(symbol) = symbol else {
        return Err(not_exported(
            "it is not an exported symbol; give it external linkage (not static) and default visibility",
        ));
    };
    let digest = match loaded(&canonical) {
        Some(loaded) => loaded.reference.digest,
        None => file_digest(&canonical)?,
    };
    let library = LibraryRef {
        path: utf8(&canonical)?,
        digest,
    };
    BY_LOADER_NAME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(name, library.clone());
    Ok((library, symbol))
}

/// A reference to the library at `path` (canonicalised, digest of the loaded copy
/// if there is one, else of the file), without loading it.
pub(crate) fn reference_for_path(
    path: &Path,
    allowed: &[PathBuf],
) -> Result<LibraryRef, LoadError> {
    let canonical = allowed_path(path, allowed)?;
    let digest = match loaded(&canonical) {
        Some(loaded) => loaded.reference.digest,
        None => file_digest(&canonical)?,
    };
    Ok(LibraryRef {
        path: utf8(&canonical)?,
        digest,
    })
}

/// Canonicalises each directory, dropping (with a log line) those that do not exist.
pub(crate) fn canonical_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        match std::fs::canonicalize(dir) {
            Ok(dir) if !out.contains(&dir) => out.push(dir),
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(dir = %dir.display(), %error, "herald: allowed directory skipped")
            }
        }
    }
    out
}

fn allowed_path(path: &Path, allowed: &[PathBuf]) -> Result<PathBuf, LoadError> {
    let canonical = std::fs::canonicalize(path).map_err(|e| LoadError::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if allowed.iter().any(|dir| canonical.starts_with(dir)) {
        Ok(canonical)
    } else {
        Err(LoadError::NotAllowed {
            path: canonical,
            allowed: allowed.to_vec(),
        })
    }
}

fn check_digest(path: &Path, expected: Digest, found: Digest) -> Result<(), LoadError> {
    if expected == found {
        Ok(())
    } else {
        Err(LoadError::DigestMismatch {
            path: path.to_owned(),
            expected,
            found,
        })
    }
}

fn loaded(canonical: &Path) -> Option<LoadedLibrary> {
    LOADED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(canonical)
        .cloned()
}

/// `dlopen`s a checked path. No herald lock is held meanwhile: constructors call
/// back into herald.
fn open(canonical: &Path, digest: Digest) -> Result<LoadedLibrary, LoadError> {
    let path = utf8(canonical)?;
    // SAFETY: loading runs the library's constructors, which is the point: the
    // path was checked against the allowed directories and its digest against
    // the reference. Libraries are never unloaded, so no symbol outlives its code.
    let library =
        unsafe { Library::open(Some(canonical), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
            LoadError::Open {
                path: canonical.to_owned(),
                reason: hint_undefined(&e.to_string()),
            }
        })?;
    let fresh = LoadedLibrary {
        reference: LibraryRef { path, digest },
        library: Arc::new(library),
    };
    let mut table = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(table.entry(canonical.to_owned()).or_insert(fresh).clone())
}

fn hint_undefined(reason: &str) -> String {
    if reason.contains("undefined symbol: herald_") {
        format!(
            "{reason} (the executable must export the herald_* C ABI: link it with \
             -Wl,--export-dynamic-symbol=herald_*)"
        )
    } else {
        reason.to_owned()
    }
}

/// SHA-256 of a file, cached by path while its size and modification time hold.
fn file_digest(canonical: &Path) -> Result<Digest, LoadError> {
    let unreadable = |e: std::io::Error| LoadError::Unreadable {
        path: canonical.to_owned(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(canonical).map_err(unreadable)?;
    let (len, modified) = (meta.len(), meta.modified().ok());
    let mut cache = DIGESTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(hit) = cache.get(canonical) {
        if hit.len == len && hit.modified == modified && modified.is_some() {
            return Ok(hit.digest);
        }
    }
    let bytes = std::fs::read(canonical).map_err(unreadable)?;
    let digest = Digest(Sha256::digest(&bytes).into());
    cache.insert(
        canonical.to_owned(),
        CachedDigest {
            len,
            modified,
            digest,
        },
    );
    Ok(digest)
}

fn utf8(path: &Path) -> Result<String, LoadError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| LoadError::NotUtf8 {
            path: path.to_owned(),
        })
}

fn is_main_program(canonical: &Path) -> bool {
    static EXE: LazyLock<Option<PathBuf>> =
        LazyLock::new(|| std::env::current_exe().and_then(std::fs::canonicalize).ok());
    EXE.as_deref() == Some(canonical)
}
