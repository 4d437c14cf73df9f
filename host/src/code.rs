//! Portable code references: what a registration or a task variant names, so that
//! every node finds the same code. The core treats them as opaque bytes
//! (`Registration::code`); this module defines their encoding.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// First byte of every code reference this host encodes, so foreign bytes fail to
/// decode with a clear message rather than as something else.
const CODE_FORMAT: u8 = 0x48;

/// SHA-256 of a library file: two nodes run the same library only if it matches.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

/// A shared library named portably: its canonical path, the digest of its file
/// and of each dependency the loader resolves for it outside the system library
/// directories.
///
/// The path must be the same on every node (install plugins at the same place);
/// the digests make a different file at that path, or a different dependency,
/// an error instead of a silent mismatch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LibraryRef {
    /// Canonical absolute path of the library.
    pub path: String,
    /// SHA-256 of the file, computed where the reference was made.
    pub digest: Digest,
    /// Its dependencies outside the system library directories, in load order.
    pub dependencies: Vec<DependencyRef>,
}

/// A dependency of a library, as the loader resolved it where the reference
/// was made.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DependencyRef {
    /// Canonical absolute path of the dependency.
    pub path: String,
    /// SHA-256 of its file.
    pub digest: Digest,
}

/// Code to run once on every node, as a global registration.
///
/// ```
/// use herald_host::CodeRef;
/// let custom = CodeRef::Custom { kind: "python".into(), payload: b"numpy".to_vec() };
/// assert_eq!(custom.to_string(), "python:numpy");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CodeRef {
    /// Load `library` (its constructors run) and, if `symbol` is set, call that
    /// symbol as `int symbol(const void *args, size_t args_len)`.
    Native {
        /// The library to load.
        library: LibraryRef,
        /// The callback to call once it is loaded.
        symbol: Option<String>,
    },
    /// Handed to the [`Executor`](crate::Executor) registered for `kind` on each node.
    Custom {
        /// The executor's name, e.g. `"python"`.
        kind: String,
        /// What the executor should run, in its own encoding.
        payload: Vec<u8>,
    },
}

/// One task implementation, registered under a task name and resolved lazily on
/// each node the first time the task runs there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaskCode {
    /// A symbol of a shared library, called as
    /// `int symbol(const void *args, size_t args_len, herald_output *out)`.
    Native {
        /// The library holding the symbol (shared by every variant from it).
        library: Arc<LibraryRef>,
        /// The symbol's name.
        symbol: String,
    },
    /// Run by the [`Executor`](crate::Executor) registered for `kind`.
    Custom {
        /// The executor's name.
        kind: String,
        /// What to run, in the executor's encoding.
        payload: Vec<u8>,
    },
}

/// A task name with its implementation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TaskVariant {
    /// The name launches use.
    pub name: String,
    /// The implementation.
    pub code: TaskCode,
}

/// What `Registration::code` holds for this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireCode {
    /// A global registration of code.
    Code(CodeRef),
    /// A batch of task variants to record on every node.
    Tasks(TaskBatch),
}

/// Task variants on the wire: libraries listed once, variants pointing at them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskBatch {
    pub(crate) libraries: Vec<LibraryRef>,
    pub(crate) variants: Vec<WireVariant>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireVariant {
    pub(crate) name: String,
    pub(crate) code: WireTaskCode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireTaskCode {
    Native { library: u32, symbol: String },
    Custom { kind: String, payload: Vec<u8> },
}

impl WireCode {
    /// The bytes for `Registration::code`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![CODE_FORMAT];
        // Serialising plain data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Reads `Registration::code` received from another node.
    pub(crate) fn decode(bytes: &[u8]) -> Result<WireCode, String> {
        match bytes.split_first() {
            Some((&CODE_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| {
                format!("malformed code reference ({e}); run the same herald on every node")
            }),
            _ => Err("not a herald-host code reference; run the same herald on every node".into()),
        }
    }
}

impl TaskBatch {
    /// Encoded size of a variant, near enough to cap batches by bytes.
    pub(crate) fn variant_len(variant: &TaskVariant) -> usize {
        16 + variant.name.len()
            + match &variant.code {
                TaskCode::Native { symbol, .. } => symbol.len(),
                TaskCode::Custom { kind, payload } => kind.len() + payload.len(),
            }
    }

    /// Appends a variant, listing its library once.
    pub(crate) fn push(&mut self, variant: TaskVariant) {
        let code = match variant.code {
            TaskCode::Native { library, symbol } => {
                let index = match self.libraries.iter().rposition(|l| *l == *library) {
                    Some(index) => index,
                    None => {
                        self.libraries.push((*library).clone());
                        self.libraries.len() - 1
                    }
                };
                WireTaskCode::Native {
                    library: index as u32,
                    symbol,
                }
            }
            TaskCode::Custom { kind, payload } => WireTaskCode::Custom { kind, payload },
        };
        self.variants.push(WireVariant {
            name: variant.name,
            code,
        });
    }

    /// The variants with their libraries resolved; a dangling library index is an error.
    pub(crate) fn into_variants(self) -> Result<Vec<TaskVariant>, String> {
        let libraries: Vec<Arc<LibraryRef>> = self.libraries.into_iter().map(Arc::new).collect();
        self.variants
            .into_iter()
            .map(|v| {
                let code = match v.code {
                    WireTaskCode::Native { library, symbol } => TaskCode::Native {
                        library: libraries
                            .get(library as usize)
                            .cloned()
                            .ok_or_else(|| format!("task '{}' names a missing library", v.name))?,
                        symbol,
                    },
                    WireTaskCode::Custom { kind, payload } => TaskCode::Custom { kind, payload },
                };
                Ok(TaskVariant { name: v.name, code })
            })
            .collect()
    }
}

/// A short name for a registration, for error texts: its tag, its code, or the
/// tasks it registers.
pub(crate) fn describe_registration(code: &[u8], tag: Option<&str>) -> String {
    let what = match WireCode::decode(code) {
        Ok(WireCode::Code(code)) => printable(&code.to_string()),
        Ok(WireCode::Tasks(batch)) => describe_tasks(
            batch.variants.iter().map(|v| v.name.as_str()),
            batch.variants.len(),
        ),
        Err(_) => "code this host cannot read".into(),
    };
    match tag {
        Some(tag) => format!("'{}' ({what})", printable(tag)),
        None => what,
    }
}

/// "task 'a'", "tasks 'a', 'b', 'c' and 4 more".
pub(crate) fn describe_tasks<'a>(names: impl Iterator<Item = &'a str>, count: usize) -> String {
    const SHOWN: usize = 3;
    let shown: Vec<String> = names
        .take(SHOWN)
        .map(|name| format!("'{}'", printable(name)))
        .collect();
    let more = match count.saturating_sub(SHOWN) {
        0 => String::new(),
        more => format!(" and {more} more"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("task{plural} {}{more}", shown.join(", "))
}

/// At most 100 characters of `text`, without control characters (payloads
/// may be binary).
fn printable(text: &str) -> String {
    const LIMIT: usize = 100;
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(LIMIT)
        .collect();
    if text.chars().count() > LIMIT {
        out.push_str("...");
    }
    out
}

impl Digest {
    /// The first eight hex digits: enough to tell two files apart in a message.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl fmt::Display for CodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeRef::Native {
                library,
                symbol: Some(symbol),
            } => write!(f, "{}:{symbol}", library.path),
            CodeRef::Native {
                library,
                symbol: None,
            } => write!(f, "{}", library.path),
            CodeRef::Custom { kind, payload } => {
                write!(f, "{kind}:{}", String::from_utf8_lossy(payload))
            }
        }
    }
}

impl fmt::Display for TaskCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskCode::Native { library, symbol } => write!(f, "{}:{symbol}", library.path),
            TaskCode::Custom { kind, payload } => {
                write!(f, "{kind}:{}", String::from_utf8_lossy(payload))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_share_libraries() {
        let library = Arc::new(LibraryRef {
            path: "/opt/lib.so".into(),
            digest: Digest([7; 32]),
            dependencies: vec![],
        });
        let mut batch = TaskBatch::default();
        for i in 0..3 {
            batch.push(TaskVariant {
                name: format!("t{i}"),
                code: TaskCode::Native {
                    library: Arc::clone(&library),
                    symbol: format!("f{i}"),
                },
            });
        }
        assert_eq!(batch.libraries.len(), 1);
        let bytes = WireCode::Tasks(batch.clone()).encode();
        assert_eq!(WireCode::decode(&bytes), Ok(WireCode::Tasks(batch.clone())));
        let text = describe_registration(&bytes, None);
        assert_eq!(text, "tasks 't0', 't1', 't2'");
        let variants = batch.into_variants().unwrap();
        assert_eq!(variants[2].code.to_string(), "/opt/lib.so:f2");
        assert!(WireCode::decode(b"garbage").is_err());
    }
}
