//! What a global registration is, and the key that makes two requests the same one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

use crate::NodeId;

/// A piece of code to run once on every node, with its argument bytes.
///
/// The core never interprets `code`: the host encodes a portable reference in it
/// (a shared object path, symbol and digest; a Python module and qualified name; a
/// simulated script). Two registrations are the same registration exactly when their
/// [`Key`]s are equal.
///
/// ```
/// use herald_core::Registration;
/// let a = Registration::new(b"libtasks.so:register".to_vec(), b"mode=fast".to_vec());
/// let b = Registration::new(b"libtasks.so:register".to_vec(), b"mode=safe".to_vec());
/// assert_ne!(a.key(), b.key(), "argument bytes are part of the key");
/// let tagged = a.clone().with_tag("tasks-v1");
/// assert_eq!(tagged.key(), b.with_tag("tasks-v1").key(), "an explicit tag replaces the digest");
/// ```
///
/// Code and arguments are shared, not copied, when a registration is cloned: it
/// is stored once per node and forwarded to every child in the tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Registration {
    /// Host-encoded portable reference to the code to run.
    pub code: Arc<[u8]>,
    /// Argument bytes handed to the code on every node.
    pub args: Arc<[u8]>,
    /// Explicit deduplication tag: when set, the key is derived from it alone.
    pub tag: Option<String>,
}

impl Registration {
    /// A registration keyed by the digest of its code reference and arguments.
    pub fn new(code: impl Into<Arc<[u8]>>, args: impl Into<Arc<[u8]>>) -> Self {
        Self {
            code: code.into(),
            args: args.into(),
            tag: None,
        }
    }

    /// The same registration, keyed by an explicit deduplication tag instead.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// The registration's key: SHA-256 of the tag if there is one, otherwise of the
    /// length-prefixed code reference and argument bytes (so no two different
    /// (code, args) pairs concatenate to the same input).
    pub fn key(&self) -> Key {
        let mut hasher = Sha256::new();
        match &self.tag {
            Some(tag) => {
                hasher.update(b"herald-tag-v1\0");
                hasher.update(tag.as_bytes());
            }
            None => {
                hasher.update(b"herald-code-v1\0");
                hasher.update((self.code.len() as u64).to_le_bytes());
                hasher.update(&self.code);
                hasher.update((self.args.len() as u64).to_le_bytes());
                hasher.update(&self.args);
            }
        }
        Key(hasher.finalize().into())
    }

    /// Bytes this registration occupies on the wire, near enough to check it against
    /// the frame size limit before it is accepted.
    pub fn payload_len(&self) -> usize {
        self.code.len() + self.args.len() + self.tag.as_ref().map_or(0, String::len)
    }
}

/// The identity of a registration: requests with equal keys are one registration.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Key(pub [u8; 32]);

/// Byte-wise order, compared a machine word at a time: keys are looked up in
/// ordered maps on every message, and a call to `memcmp` per comparison was the
/// largest single cost of handling one.
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Keys are digests: the first word almost always decides.
        match self.word(0).cmp(&other.word(0)) {
            std::cmp::Ordering::Equal => self.0.cmp(&other.0),
            decided => decided,
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Key {
    /// Word `i` of the key, big-endian: ordering words is ordering the bytes.
    fn word(&self, i: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[i * 8..i * 8 + 8]);
        u64::from_be_bytes(bytes)
    }

    /// The node that coordinates this key when every node is alive: a deterministic
    /// function of the key, so that all requesters of one key meet at one node.
    pub fn home(&self, nodes: u32) -> NodeId {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&self.0[..8]);
        NodeId((u64::from_le_bytes(prefix) % u64::from(nodes.max(1))) as u32)
    }

    /// The first four bytes in hex (eight digits): enough to tell keys apart in logs
    /// and traces.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::Key;
    use proptest::prelude::*;

    proptest! {
        /// Word-wise comparison orders keys exactly as their bytes.
        #[test]
        fn key_order_is_byte_order(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), prefix in 0usize..32) {
            let mut b = b;
            b[..prefix].copy_from_slice(&a[..prefix]);
            prop_assert_eq!(Key(a).cmp(&Key(b)), a.cmp(&b));
        }
    }
}
