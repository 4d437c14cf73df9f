//! Per-frame integrity and confidentiality: every record after the handshake is
//! sealed with ChaCha20-Poly1305 under a key of its own direction, derived with
//! HKDF-SHA256 from the cluster secret and both handshake nonces.
//!
//! Record on the wire: `len:u32le` then `len` bytes of ciphertext and tag. The
//! plaintext is one kind byte then the payload. The nonce is a per-direction
//! counter that both ends keep without sending it, and the length prefix is the
//! associated data: a flipped bit anywhere, a replayed, dropped, reordered or
//! cut-and-spliced record fails to open, and the link is closed.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::secret::Secret;

/// Bytes a record adds to its payload: the kind byte and the Poly1305 tag.
pub(crate) const RECORD_OVERHEAD: usize = 1 + TAG_LEN;
const TAG_LEN: usize = 16;
const LABEL_TO_ACCEPTOR: &[u8] = b"herald-tcp v3 connector to acceptor";
const LABEL_TO_CONNECTOR: &[u8] = b"herald-tcp v3 acceptor to connector";

/// What a record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A frame for the layer above.
    Data,
    /// Nothing: proves the sender is alive on an idle link.
    Heartbeat,
    /// A message of herald-tcp's own (hello, formation, refusal).
    Control,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Data => 0,
            Kind::Heartbeat => 1,
            Kind::Control => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            0 => Some(Kind::Data),
            1 => Some(Kind::Heartbeat),
            2 => Some(Kind::Control),
            _ => None,
        }
    }
}

/// The two directions' keys of one connection, as one end sees them.
pub(crate) struct LinkKeys {
    pub(crate) seal: Sealer,
    pub(crate) open: Opener,
}

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKeys(<redacted>)")
    }
}

impl LinkKeys {
    /// Derives both directions' keys from the secret and the two fresh nonces;
    /// `connector` says which end this is.
    pub(crate) fn derive(
        secret: &Secret,
        connector_nonce: &[u8],
        acceptor_nonce: &[u8],
        connector: bool,
    ) -> LinkKeys {
        let mut salt = Vec::with_capacity(connector_nonce.len() + acceptor_nonce.len());
        salt.extend_from_slice(connector_nonce);
        salt.extend_from_slice(acceptor_nonce);
        let hkdf = Hkdf::<Sha256>::new(Some(&salt), secret.as_bytes());
        let key = |label: &[u8]| {
            let mut okm = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
            hkdf.expand(label, &mut okm)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            ChaCha20Poly1305::new(Key::from_slice(&okm))
        };
        let (mine, theirs) = if connector {
            (LABEL_TO_ACCEPTOR, LABEL_TO_CONNECTOR)
        } else {
            (LABEL_TO_CONNECTOR, LABEL_TO_ACCEPTOR)
        };
        LinkKeys {
            seal: Sealer {
                cipher: key(mine),
                counter: 0,
            },
            open: Opener {
                cipher: key(theirs),
                counter: 0,
            },
        }
    }
}

/// Seals this end's records, numbering them.
pub(crate) struct Sealer {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl Sealer {
    /// The whole record for `payload`: length prefix, ciphertext, tag.
    pub(crate) fn seal(&mut self, kind: Kind, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() + RECORD_OVERHEAD;
        let mut record = Vec::with_capacity(4 + len);
        // Callers keep payloads below the frame limit, which is below u32::MAX.
        let prefix = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
        record.extend_from_slice(&prefix);
        record.push(kind.byte());
        record.extend_from_slice(payload);
        let nonce = nonce(self.counter);
        self.counter += 1;
        // Encryption fails only for plaintexts beyond 256 GiB.
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce, &prefix, &mut record[4..])
            .expect("records are far below ChaCha20-Poly1305's length limit");
        record.extend_from_slice(&tag);
        record
    }
}

/// Opens the peer's records, in the order it sealed them.
pub(crate) struct Opener {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

/// A record that did not open: altered, replayed, reordered, or not from the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "record {counter} from the peer failed authentication (altered, replayed, reordered or forged \
     in transit); the link is closed"
)]
pub(crate) struct OpenError {
    pub(crate) counter: u64,
}

impl Opener {
    /// Opens `body` (the `len` bytes after the prefix) in place; returns the kind
    /// and the payload.
    pub(crate) fn open(&mut self, mut body: Vec<u8>) -> Result<(Kind, Vec<u8>), OpenError> {
        let failed = OpenError {
            counter: self.counter,
        };
        if body.len() < RECORD_OVERHEAD {
            return Err(failed);
        }
        let prefix = u32::try_from(body.len())
            .map_err(|_| failed.clone())?
            .to_le_bytes();
        let tag = Tag::clone_from_slice(&body[body.len() - TAG_LEN..]);
        body.truncate(body.len() - TAG_LEN);
        let nonce = nonce(self.counter);
        self.cipher
            .decrypt_in_place_detached(&nonce, &prefix, &mut body, &tag)
            .map_err(|_| failed.clone())?;
        self.counter += 1;
        let kind = Kind::from_byte(body[0]).ok_or(failed)?;
        body.remove(0);
        Ok((kind, body))
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (LinkKeys, LinkKeys) {
        let secret = Secret::from_bytes([7; 32]);
        let c = LinkKeys::derive(&secret, &[1; 32], &[2; 32], true);
        let a = LinkKeys::derive(&secret, &[1; 32], &[2; 32], false);
        (c, a)
    }

    fn body(record: &[u8]) -> Vec<u8> {
        record[4..].to_vec()
    }

    #[test]
    fn records_open_in_order_in_both_directions() {
        let (mut c, mut a) = pair();
        for text in [&b"one"[..], b"", b"three"] {
            let record = c.seal.seal(Kind::Data, text);
            assert_eq!(
                u32::from_le_bytes(record[..4].try_into().unwrap()) as usize,
                record.len() - 4
            );
            assert_eq!(
                a.open.open(body(&record)).unwrap(),
                (Kind::Data, text.to_vec())
            );
            let back = a.seal.seal(Kind::Control, text);
            assert_eq!(
                c.open.open(body(&back)).unwrap(),
                (Kind::Control, text.to_vec())
            );
        }
        let beat = c.seal.seal(Kind::Heartbeat, &[]);
        assert_eq!(a.open.open(body(&beat)).unwrap(), (Kind::Heartbeat, vec![]));
    }

    #[test]
    fn replayed_reordered_reflected_and_foreign_records_fail() {
        let (mut c, mut a) = pair();
        let first = c.seal.seal(Kind::Data, b"first");
        let second = c.seal.seal(Kind::Data, b"second");
        // Reordered: the second record first.
        assert!(a.open.open(body(&second)).is_err());
        let (mut c, mut a) = pair();
        let first_again = c.seal.seal(Kind::Data, b"first");
        assert_eq!(
            first, first_again,
            "deterministic for the same keys and counter"
        );
        a.open.open(body(&first)).unwrap();
        // Replayed.
        assert!(a.open.open(body(&first)).is_err());
        // Reflected: a record of ours fed back to us.
        let (mut c, _) = pair();
        let mine = c.seal.seal(Kind::Data, b"mine");
        assert!(c.open.open(body(&mine)).is_err());
        // Another connection (other nonces) or another secret.
        let other = LinkKeys::derive(&Secret::from_bytes([7; 32]), &[3; 32], &[2; 32], false);
        let mut other_open = other.open;
        let (mut c, _) = pair();
        assert!(
            other_open
                .open(body(&c.seal.seal(Kind::Data, b"x")))
                .is_err()
        );
        // Too short to hold a tag.
        let (_, mut a) = pair();
        assert!(a.open.open(vec![0; 5]).is_err());
    }
}
