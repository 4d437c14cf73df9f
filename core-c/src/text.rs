//! Text across the C boundary: C strings in, NUL-terminated copies out.

use std::ffi::{CStr, c_char};

/// `text` as a NUL-terminated byte string; interior NULs (text from the network
/// may hold them) become '?', so C sees the whole text.
pub(crate) fn c_text(text: &str) -> Vec<u8> {
    let mut bytes: Vec<u8> = text
        .bytes()
        .map(|b| if b == 0 { b'?' } else { b })
        .collect();
    bytes.push(0);
    bytes
}

/// `bytes` followed by a NUL (interior NULs kept: the length tells).
pub(crate) fn with_nul(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.extend_from_slice(bytes);
    out.push(0);
    out
}

/// Reads an optional C string as UTF-8.
///
/// # Safety
/// `text` is NULL or a NUL-terminated string.
pub(crate) unsafe fn optional_utf8(
    text: *const c_char,
    what: &str,
) -> Result<Option<String>, String> {
    if text.is_null() {
        return Ok(None);
    }
    // SAFETY: guaranteed by the caller.
    let text = unsafe { CStr::from_ptr(text) };
    text.to_str()
        .map(|s| Some(s.to_owned()))
        .map_err(|_| format!("{what} is not valid UTF-8"))
}

/// Reads an optional C string, replacing invalid UTF-8 (error texts).
///
/// # Safety
/// `text` is NULL or a NUL-terminated string.
pub(crate) unsafe fn optional_lossy(text: *const c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    Some(
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Why an input's bytes were refused before any was read.
pub(crate) enum Refused {
    /// NULL with a length, or a length no buffer has (above `isize::MAX`).
    Invalid(String),
    /// A length no frame holds: refused, or turned into an error, without copying.
    TooLarge(String),
}

/// Borrows `len` bytes at `data` (NULL allowed when `len` is 0). Lengths above
/// `max` are refused on the length alone, so a careless caller's huge length is
/// never read nor copied.
///
/// # Safety
/// `data` valid for `len` bytes when `len` is at most `max`, or `len` 0.
pub(crate) unsafe fn bytes<'a>(
    data: *const u8,
    len: usize,
    max: usize,
    what: &str,
) -> Result<&'a [u8], Refused> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Refused::Invalid(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    // A slice longer than isize::MAX bytes is undefined behaviour even unread.
    if isize::try_from(len).is_err() {
        return Err(Refused::Invalid(format!(
            "{what} has a length of {len} bytes, which no buffer has"
        )));
    }
    if len > max {
        return Err(Refused::TooLarge(format!(
            "{what} of {len} bytes exceeds the frame limit of {max} bytes; pass large data by reference"
        )));
    }
    // SAFETY: guaranteed by the caller (`len` is at most `max`).
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Copies `text` into the caller's buffer, NUL-terminated, cut at a character
/// boundary.
///
/// # Safety
/// `buffer` NULL or valid for `len` bytes.
pub(crate) unsafe fn copy_out(text: &str, buffer: *mut c_char, len: usize) {
    if buffer.is_null() || len == 0 {
        return;
    }
    let mut n = text.len().min(len - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `buffer` holds `len` bytes and `n + 1 <= len`.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buffer.cast::<u8>(), n);
        *buffer.add(n) = 0;
    }
}
