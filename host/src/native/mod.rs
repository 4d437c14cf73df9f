//! Native code: allowed directories, file digests, loading by descriptor, the
//! dependencies the loader will pull in, and `dladdr` to turn a function
//! pointer into a portable reference.
//!
//! A library is opened once; its digest is computed from that descriptor and
//! the loader is handed the same descriptor (`/proc/self/fd/N`), then the file
//! it mapped is checked (device and inode) — so what runs is what was hashed,
//! on the loading node and on every other. Its dependencies outside the system
//! library directories are resolved first, checked against the allowed
//! directories, hashed and loaded the same way, before the library itself.
//!
//! Loaded libraries are never closed (nor their descriptors): code references
//! into them may be used at any time. The table of loaded libraries and the
//! digest cache are process-wide, like `dlopen` itself.

mod deps;
mod file;
mod loader;
mod policy;

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use libloading::os::unix::Library;

use crate::code::{DependencyRef, LibraryRef};
use crate::error::{HostError, LoadError};
use file::{CheckedFile, FileId};
pub(crate) use policy::Policy;

/// A library this process has loaded, with the reference it was loaded under.
#[derive(Clone)]
pub(crate) struct LoadedLibrary {
    pub(crate) reference: LibraryRef,
    pub(crate) library: Arc<Library>,
    /// The loader's name for the object (`/proc/self/fd/N`).
    pub(crate) loader_path: PathBuf,
}

/// Libraries loaded through herald, by canonical path.
static LOADED: LazyLock<Mutex<HashMap<PathBuf, LoadedLibrary>>> = LazyLock::new(Default::default);

/// Files herald had the loader map (libraries and dependencies).
static MAPPED: LazyLock<Mutex<HashSet<FileId>>> = LazyLock::new(Default::default);

/// Every descriptor herald handed to the loader, kept open for ever: the loader
/// knows each object by the name `/proc/self/fd/N` it was opened under (several,
/// when one file was opened twice), and would take that name for the same
/// object if the number came to mean another file.
static HANDED_TO_LOADER: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());

/// Libraries this process is loading now, by canonical path: the reference,
/// the loader's name for the descriptor and the file. A registration made by
/// a constructor during the load runs here too, on a worker, and must load that
/// same file, not whatever the path names by then.
static LOADING: LazyLock<Mutex<HashMap<PathBuf, InProgress>>> = LazyLock::new(Default::default);

#[derive(Clone)]
struct InProgress {
    reference: LibraryRef,
    loader_path: PathBuf,
    id: FileId,
}

/// References already made by `dladdr`, by the loader's name for the object: the
/// object in memory does not change, so neither does its reference.
static BY_LOADER_NAME: LazyLock<Mutex<HashMap<Vec<u8>, LibraryRef>>> =
    LazyLock::new(Default::default);

/// A library opened, hashed and checked, with its dependencies: ready to load.
struct Checked {
    main: CheckedFile,
    dependencies: Vec<CheckedFile>,
}

/// Loads the library at `path` on this node for the caller: inside the allowed
/// directories with every dependency, loaded from the descriptor it was hashed
/// from. Its constructors run on the calling thread.
pub(crate) fn load_local(path: &Path, policy: &Policy) -> Result<LoadedLibrary, LoadError> {
    if let Some(loaded) = std::fs::canonicalize(path).ok().and_then(|p| loaded(&p)) {
        if policy.allows(Path::new(&loaded.reference.path)) {
            return Ok(loaded);
        }
    }
    load_checked(check(path, policy)?)
}

/// Loads the library a reference names, refusing a path outside the allowed
/// directories, a file whose digest differs from the reference's, and a
/// dependency that is not where, or not what, the reference says.
pub(crate) fn load_reference(
    reference: &LibraryRef,
    policy: &Policy,
) -> Result<LoadedLibrary, LoadError> {
    let given = Path::new(&reference.path);
    // Being loaded first, then loaded: the order in which `load_checked`
    // leaves one for the other.
    let in_progress = lock(&LOADING).get(given).cloned();
    if let Some(loading) = in_progress.filter(|_| policy.allows(given)) {
        compare(reference, &loading.reference)?;
        // Waits for the loader lock, which the load in progress holds, then
        // finds the object under the name that load gave it.
        let library = loader::open_verified(&loading.loader_path, given, loading.id)?;
        return Ok(LoadedLibrary {
            reference: loading.reference,
            library: Arc::new(library),
            loader_path: loading.loader_path,
        });
    }
    if let Some(loaded) = loaded(given).filter(|_| policy.allows(given)) {
        return compare(reference, &loaded.reference).map(|()| loaded);
    }
    let checked = check(given, policy)?;
    compare(reference, &checked.reference()?)?;
    load_checked(checked)
}

/// Checks, without loading anything, that this node would load the library a
/// reference names: what registering lazy task variants does on every node, so
/// that a node that will refuse the library fails the registration.
pub(crate) fn check_reference(reference: &LibraryRef, policy: &Policy) -> Result<(), LoadError> {
    let given = Path::new(&reference.path);
    if policy.allows(given) {
        // Being loaded here now: what runs here is that file, not the path's.
        // (Looked up before the loaded ones: see `load_reference`.)
        if let Some(loading) = lock(&LOADING).get(given).cloned() {
            return compare(reference, &loading.reference);
        }
        if let Some(loaded) = loaded(given) {
            return compare(reference, &loaded.reference);
        }
    }
    compare(reference, &check(given, policy)?.reference()?)
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
/// path, digests) and its exported symbol name, found with `dladdr`. A library
/// loaded outside herald (plain `dlopen`, `ctypes`) is checked here like one
/// herald loads: allowed directories, dependencies, and that the file at its
/// path is still the one in memory.
pub(crate) fn reference_for_address(
    address: usize,
    policy: &Policy,
) -> Result<(LibraryRef, String), HostError> {
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
    let name = unsafe { CStr::from_ptr(info.dli_fname) }
        .to_bytes()
        .to_vec();
    let exported = !info.dli_sname.is_null() && info.dli_saddr as usize == address;
    if exported && is_data_symbol(address) {
        return Err(not_exported(
            "it is not a function but data (a variable cast to a function pointer?); pass the function itself",
        ));
    }
    // SAFETY: as above, for the symbol name, when there is one.
    let symbol = exported.then(|| {
        unsafe { CStr::from_ptr(info.dli_sname) }
            .to_string_lossy()
            .into_owned()
    });
    let cached = lock(&BY_LOADER_NAME).get(&name).cloned();
    if let Some(library) = cached {
        let Some(symbol) = symbol else {
            return Err(not_exported(NOT_EXPORTED));
        };
        if !policy.allows(Path::new(&library.path)) {
            return Err(policy.refusal(Path::new(&library.path)).into());
        }
        return Ok((library, symbol));
    }
    let file = PathBuf::from(std::ffi::OsStr::from_bytes(&name));
    let canonical = std::fs::canonicalize(&file).map_err(|e| not_exported(&e.to_string()))?;
    if is_main_program(&canonical) {
        return Err(not_exported(
            "it lives in the main program, which other nodes cannot load; put it in a shared library",
        ));
    }
    let Some(symbol) = symbol else {
        return Err(not_exported(NOT_EXPORTED));
    };
    let library = match loaded(&canonical) {
        Some(loaded) => loaded.reference,
        None => {
            let checked = check(&canonical, policy)?;
            // The object in memory must be the file at its path now, or the
            // reference would name a file that is not what runs here.
            if loader::mapped_file(address) != Some(checked.main.id) {
                return Err(LoadError::Replaced { path: canonical }.into());
            }
            checked.reference()?
        }
    };
    lock(&BY_LOADER_NAME).insert(name, library.clone());
    Ok((library, symbol))
}

/// Whether the exported symbol at `address` is data (an object, common or
/// thread-local symbol): calling it would crash every node. Symbols of no type
/// (hand-written assembly) pass, as does everything where `dladdr1` is missing.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn is_data_symbol(address: usize) -> bool {
    /// `Elf64_Sym` of <elf.h>.
    #[repr(C)]
    struct Elf64Sym {
        st_name: u32,
        st_info: u8,
        st_other: u8,
        st_shndx: u16,
        st_value: u64,
        st_size: u64,
    }
    const RTLD_DL_SYMENT: std::ffi::c_int = 1;
    const STT_OBJECT: u8 = 1;
    const STT_COMMON: u8 = 5;
    const STT_TLS: u8 = 6;
    // SAFETY: as for dladdr; zeroed is a valid Dl_info.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let mut symbol: *mut c_void = std::ptr::null_mut();
    // SAFETY: dladdr1 reads the loader's tables and stores a pointer to the
    // symbol's table entry in `symbol` (RTLD_DL_SYMENT), or returns 0.
    let found = unsafe {
        libc::dladdr1(
            address as *const c_void,
            &mut info,
            &mut symbol,
            RTLD_DL_SYMENT,
        )
    };
    if found == 0 || symbol.is_null() {
        return false;
    }
    // SAFETY: an ElfW(Sym) in the object's symbol table, mapped while it is loaded.
    let kind = unsafe { (*symbol.cast::<Elf64Sym>()).st_info } & 0xf;
    matches!(kind, STT_OBJECT | STT_COMMON | STT_TLS)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
fn is_data_symbol(_address: usize) -> bool {
    false
}

const NOT_EXPORTED: &str =
    "it is not an exported symbol; give it external linkage (not static) and default visibility";

/// A reference to the library at `path` (the loaded copy's if there is one),
/// checked like a load, without loading it.
pub(crate) fn reference_for_path(path: &Path, policy: &Policy) -> Result<LibraryRef, LoadError> {
    if let Some(loaded) = std::fs::canonicalize(path).ok().and_then(|p| loaded(&p)) {
        if policy.allows(Path::new(&loaded.reference.path)) {
            return Ok(loaded.reference);
        }
    }
    check(path, policy)?.reference()
}

/// Opens and hashes the library and its dependencies, checking every location.
fn check(path: &Path, policy: &Policy) -> Result<Checked, LoadError> {
    let main = CheckedFile::open(path)?;
    if !policy.allows(&main.path) {
        return Err(policy.refusal(&main.path));
    }
    let dependencies = deps::resolve(&main, policy)?;
    Ok(Checked { main, dependencies })
}

impl Checked {
    fn reference(&self) -> Result<LibraryRef, LoadError> {
        Ok(LibraryRef {
            path: utf8(&self.main.path)?,
            digest: self.main.digest,
            dependencies: self
                .dependencies
                .iter()
                .map(|dependency| {
                    Ok(DependencyRef {
                        path: utf8(&dependency.path)?,
                        digest: dependency.digest,
                    })
                })
                .collect::<Result<_, LoadError>>()?,
        })
    }
}

/// Whether this node's library (`found`) is the one the reference names.
fn compare(expected: &LibraryRef, found: &LibraryRef) -> Result<(), LoadError> {
    let path = PathBuf::from(&expected.path);
    if expected.digest != found.digest {
        return Err(LoadError::DigestMismatch {
            path,
            expected: expected.digest,
            found: found.digest,
        });
    }
    for dependency in &expected.dependencies {
        let here = found
            .dependencies
            .iter()
            .find(|d| d.path == dependency.path);
        let reason = match here {
            None => "the loader does not resolve it here (another file, or none, stands for it)"
                .to_owned(),
            Some(here) if here.digest != dependency.digest => format!(
                "it differs (sha256 {} here, {} expected)",
                here.digest.short(),
                dependency.digest.short()
            ),
            Some(_) => continue,
        };
        return Err(LoadError::DependencyMismatch {
            library: path,
            dependency: PathBuf::from(&dependency.path),
            reason,
        });
    }
    let known: HashSet<&str> = expected
        .dependencies
        .iter()
        .map(|d| d.path.as_str())
        .collect();
    if let Some(extra) = found
        .dependencies
        .iter()
        .find(|d| !known.contains(d.path.as_str()))
    {
        return Err(LoadError::DependencyMismatch {
            library: path,
            dependency: PathBuf::from(&extra.path),
            reason: "the loader resolves it here, but not where the registration was made".into(),
        });
    }
    Ok(())
}

/// Loads the checked dependencies (each after its own) and then the library,
/// each from its descriptor. No herald lock is held meanwhile: constructors
/// call back into herald.
fn load_checked(checked: Checked) -> Result<LoadedLibrary, LoadError> {
    let reference = checked.reference()?;
    for dependency in checked.dependencies {
        if lock(&MAPPED).contains(&dependency.id) {
            continue;
        }
        let opened = loader::open_by_descriptor(&dependency);
        lock(&HANDED_TO_LOADER).push(dependency.file);
        // Never unloaded: the library it is a dependency of needs it.
        std::mem::forget(opened?);
        lock(&MAPPED).insert(dependency.id);
    }
    let main = checked.main;
    // Known before the load: its constructors name their functions by it.
    let loader_path = main.loader_path();
    let loader_name = loader_path.as_os_str().as_bytes().to_vec();
    lock(&BY_LOADER_NAME).insert(loader_name, reference.clone());
    let in_progress = InProgress {
        reference: reference.clone(),
        loader_path: loader_path.clone(),
        id: main.id,
    };
    lock(&LOADING).insert(main.path.clone(), in_progress);
    let opened = loader::open_by_descriptor(&main);
    lock(&HANDED_TO_LOADER).push(main.file);
    let outcome = opened.map(|library| {
        lock(&MAPPED).insert(main.id);
        let fresh = LoadedLibrary {
            reference,
            library: Arc::new(library),
            loader_path,
        };
        lock(&LOADED)
            .entry(main.path.clone())
            .or_insert(fresh)
            .clone()
    });
    // Only once it is among the loaded ones (readers look here first, then
    // there): a registration its constructors made, invoked here meanwhile,
    // must never miss it in both and check the path, which may name another
    // file by now.
    lock(&LOADING).remove(&main.path);
    outcome
}

fn loaded(canonical: &Path) -> Option<LoadedLibrary> {
    lock(&LOADED).get(canonical).cloned()
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
