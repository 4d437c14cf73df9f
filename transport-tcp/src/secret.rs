//! The cluster secret that authenticates every link.

use std::fmt;

/// Length of a cluster secret in bytes (256 bits).
pub const SECRET_LEN: usize = 32;

/// A 32-byte cluster secret shared by every rank of a job.
///
/// It keys the HMAC-SHA256 challenge-response of every link handshake. It is
/// never printed: `Debug` shows `Secret(<redacted>)`, and there is no `Display`.
/// Hand it to child processes as hex (`HERALD_SECRET`) or in a file
/// (`HERALD_SECRET_FILE`), never on a command line, where `ps` would show it.
///
/// ```
/// use herald_tcp::Secret;
/// let secret = Secret::random();
/// let again = Secret::from_hex(&secret.to_hex()).expect("round trip");
/// assert_eq!(again.to_hex(), secret.to_hex());
/// assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
/// ```
#[derive(Clone)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Wraps raw secret bytes.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }

    /// A fresh secret from the operating system's random number generator.
    ///
    /// # Panics
    /// If the OS random number generator fails, which on a working Linux system
    /// it does not; use [`Secret::try_random`] to handle that case.
    pub fn random() -> Secret {
        match Secret::try_random() {
            Ok(secret) => secret,
            Err(err) => panic!("{err}"),
        }
    }

    /// A fresh secret from the OS random number generator, or an error if it failed.
    pub fn try_random() -> Result<Secret, SecretError> {
        let mut bytes = [0u8; SECRET_LEN];
        getrandom::fill(&mut bytes).map_err(|err| SecretError::Rng(err.to_string()))?;
        Ok(Secret(bytes))
    }

    /// The secret as 64 lowercase hex digits, the form `HERALD_SECRET` takes.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(SECRET_LEN * 2);
        for byte in self.0 {
            out.push(DIGITS[usize::from(byte >> 4)] as char);
            out.push(DIGITS[usize::from(byte & 0x0f)] as char);
        }
        out
    }

    /// Parses 64 hex digits (either case; surrounding whitespace is ignored, so
    /// the contents of a secret file with a trailing newline parse as they are).
    pub fn from_hex(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        if text.len() != SECRET_LEN * 2 {
            return Err(SecretError::Length { found: text.len() });
        }
        let mut bytes = [0u8; SECRET_LEN];
        let digits = text.as_bytes();
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (hex_value(digits, 2 * i)? << 4) | hex_value(digits, 2 * i + 1)?;
        }
        Ok(Secret(bytes))
    }

    /// The raw key bytes, for the handshake's HMAC.
    pub(crate) fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be parsed or generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text was not 64 hex digits long.
    #[error(
        "a herald secret is 64 hex digits (32 bytes), found {found} characters; \
         generate one with `herald secret` or Secret::random().to_hex()"
    )]
    Length {
        /// Number of characters found after trimming whitespace.
        found: usize,
    },
    /// The text contained something other than hex digits. (The character itself
    /// is not reported: it is part of a secret.)
    #[error(
        "a herald secret may contain only hex digits 0-9 and a-f; character {position} is not one"
    )]
    NotHex {
        /// Zero-based position of the first offending character.
        position: usize,
    },
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed ({0}); check that /dev/urandom is usable")]
    Rng(String),
}

fn hex_value(digits: &[u8], position: usize) -> Result<u8, SecretError> {
    let digit = digits[position];
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(SecretError::NotHex { position }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_case() {
        let secret = Secret::from_bytes([0xab; SECRET_LEN]);
        assert_eq!(secret.to_hex(), "ab".repeat(SECRET_LEN));
        let upper = "AB".repeat(SECRET_LEN);
        assert_eq!(Secret::from_hex(&upper).unwrap().to_hex(), secret.to_hex());
        assert_eq!(
            Secret::from_hex(&format!("{upper}\n")).unwrap().as_bytes(),
            &[0xab; SECRET_LEN]
        );
    }

    #[test]
    fn bad_hex_is_a_typed_error() {
        assert_eq!(
            Secret::from_hex("abc").unwrap_err(),
            SecretError::Length { found: 3 }
        );
        let bad = format!("{}zz", "00".repeat(SECRET_LEN - 1));
        assert_eq!(
            Secret::from_hex(&bad).unwrap_err(),
            SecretError::NotHex {
                position: 2 * SECRET_LEN - 2
            }
        );
    }

    #[test]
    fn debug_redacts_and_random_differs() {
        let a = Secret::random();
        let b = Secret::random();
        assert_ne!(a.to_hex(), b.to_hex());
        assert!(!format!("{a:?}").contains(&a.to_hex()[..8]));
    }
}
