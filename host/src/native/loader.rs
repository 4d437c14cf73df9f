//! Talking to the dynamic loader: `dlopen` of an open descriptor, checking which
//! file the loader really mapped, and which object a name already stands for.

use std::ffi::{CStr, CString, c_char, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use super::file::{CheckedFile, FileId};
use crate::error::LoadError;

/// The start of glibc's `struct link_map` (the public part, `<link.h>`).
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: *const c_void,
}

/// Loads exactly the file `checked` holds open, through `/proc/self/fd/N`, then
/// checks that the loader mapped that file (device and inode) and that it was
/// not written to meanwhile. No herald lock is held: constructors call back
/// into herald.
pub(crate) fn open_by_descriptor(checked: &CheckedFile) -> Result<Library, LoadError> {
    let library = open_verified(&checked.loader_path(), &checked.path, checked.id)?;
    checked.check_unchanged()?;
    Ok(library)
}

/// `dlopen`s `loader_path` (a `/proc/self/fd/N` herald holds open) and checks
/// that the loader mapped the file `id`; `path` names it in errors.
pub(crate) fn open_verified(
    loader_path: &Path,
    path: &Path,
    id: FileId,
) -> Result<Library, LoadError> {
    // SAFETY: loading runs the library's constructors, which is the point: the
    // file was checked against the allowed directories and hashed through this
    // very descriptor. Libraries are never unloaded, so no symbol outlives its code.
    let library =
        unsafe { Library::open(Some(loader_path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
            LoadError::Open {
                path: path.to_owned(),
                reason: hint_undefined(
                    &e.to_string()
                        .replace(&*loader_path.to_string_lossy(), &path.to_string_lossy()),
                ),
            }
        })?;
    let handle = library.into_raw();
    // SAFETY: `handle` came from `into_raw` just above and is turned back once.
    let library = unsafe { Library::from_raw(handle) };
    let mapped = dynamic_section(handle).and_then(|address| mapped_file(address as usize));
    if mapped != Some(id) {
        return Err(LoadError::NotVerified {
            path: path.to_owned(),
            reason: format!("the loader mapped {mapped:?}, not the file that was hashed ({id:?})"),
        });
    }
    Ok(library)
}

/// The object already loaded under `name` (matched by the loader by name or
/// soname), without loading anything: its canonical path and the file it was
/// mapped from.
pub(crate) fn loaded_object(name: &str) -> Option<(PathBuf, Option<FileId>)> {
    let name = CString::new(name).ok()?;
    // SAFETY: RTLD_NOLOAD never loads an object (so runs no constructor); it
    // only returns a new reference to one already loaded, dropped below.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    let found = link_map(handle).and_then(|map| {
        // SAFETY: `l_name` is a NUL-terminated string owned by the loader while
        // the object is loaded (it is: we hold a reference); copied at once.
        let name = unsafe { CStr::from_ptr(map.l_name) };
        let name = Path::new(std::ffi::OsStr::from_bytes(name.to_bytes()));
        if name.as_os_str().is_empty() {
            return None;
        }
        // A file herald loaded by descriptor may have been renamed over since:
        // its old path is then still the one to check (and to find replaced).
        let path = std::fs::canonicalize(name).ok().or_else(|| {
            let target = std::fs::read_link(name).ok()?;
            let text = target.to_str()?;
            Some(PathBuf::from(
                text.strip_suffix(" (deleted)").unwrap_or(text),
            ))
        })?;
        Some((path, mapped_file(map.l_ld as usize)))
    });
    // SAFETY: drops the reference taken above; the object stays loaded for
    // whoever loaded it.
    unsafe { libc::dlclose(handle) };
    found
}

/// Device and inode of the file mapped at `address`, from `/proc/self/maps`.
pub(crate) fn mapped_file(address: usize) -> Option<FileId> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        if !(start..end).contains(&address) {
            return None;
        }
        let _perms = fields.next()?;
        let _offset = fields.next()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let ino: u64 = fields.next()?.parse().ok()?;
        let dev = libc::makedev(
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        (ino != 0).then_some(FileId { dev, ino })
    })
}

/// The address of an object's dynamic section: inside one of its mappings.
fn dynamic_section(handle: *mut c_void) -> Option<*const c_void> {
    link_map(handle).map(|map| map.l_ld)
}

fn link_map(handle: *mut c_void) -> Option<&'static LinkMap> {
    let mut map: *const LinkMap = std::ptr::null();
    // SAFETY: RTLD_DI_LINKMAP stores a `struct link_map *` into the pointer
    // given; `handle` is a live handle from dlopen.
    let status = unsafe {
        libc::dlinfo(
            handle,
            libc::RTLD_DI_LINKMAP,
            (&mut map as *mut *const LinkMap).cast(),
        )
    };
    // SAFETY: on success the loader owns the link map for as long as the
    // object stays loaded; herald never unloads objects, and the callers hold a
    // reference while they read it.
    (status == 0 && !map.is_null()).then(|| unsafe { &*map })
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
