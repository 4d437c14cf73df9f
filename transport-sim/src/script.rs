//! Scripted "code": what a simulated host does when it runs a registration.

use herald_core::{NodeId, Registration};
use serde::{Deserialize, Serialize};

use crate::SimError;

/// The code a simulated host runs for a registration, carried postcard-encoded in
/// [`Registration::code`]: how long its load takes, the nodes where the load fails,
/// the registrations it makes while it runs (as a library constructor does during
/// `dlopen`), and the task names it adds to the node's task registry when it
/// succeeds.
///
/// Nested scripts nest further, so a script is a finite tree. Two libraries whose
/// constructors register each other are modelled with explicit tags: a nested
/// script carrying the other library's tag has the other library's key, whatever
/// its own (shallower) content.
///
/// ```
/// use herald_sim::{NodeSet, Script};
/// use herald_core::NodeId;
/// let plugin = Script::new("libplugin.so").with_load_ns(5_000).with_tasks(["saxpy"]);
/// let app = Script::new("libapp.so")
///     .failing_on([NodeId(3)])
///     .with_nested(NodeSet::All, plugin.clone());
/// let registration = app.registration();
/// assert_eq!(Script::decode(&registration.code)?, app);
/// assert_eq!(app.error_on(NodeId(3)), Some("load of 'libapp.so' failed on node 3".into()));
/// assert_eq!(app.depth(), 2);
/// # Ok::<(), herald_sim::SimError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Script {
    /// The library's name, shown in traces and error texts.
    pub name: String,
    /// Explicit deduplication tag: when set, the registration's key is the tag's.
    pub tag: Option<String>,
    /// How long the load takes on every node, in virtual nanoseconds.
    pub load_ns: u64,
    /// Nodes on which the load fails.
    pub fail_on: Vec<NodeId>,
    /// Registrations the code makes while it runs, each on a set of nodes.
    pub nested: Vec<NestedCall>,
    /// Task names registered on the node when the load succeeds.
    pub tasks: Vec<String>,
}

/// A registration a script makes from inside its own invocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NestedCall {
    /// The nodes on which the call is made.
    pub on: NodeSet,
    /// The registration made.
    pub script: Script,
}

/// A set of nodes, named without knowing the job size.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeSet {
    /// Every node.
    All,
    /// Only these nodes.
    Only(Vec<NodeId>),
    /// Every node but these.
    AllExcept(Vec<NodeId>),
}

/// Load time of a script unless set otherwise: 10 µs.
pub const DEFAULT_LOAD_NS: u64 = 10_000;

impl Script {
    /// A script that loads in [`DEFAULT_LOAD_NS`] everywhere, nests nothing and
    /// registers no task.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tag: None,
            load_ns: DEFAULT_LOAD_NS,
            fail_on: Vec::new(),
            nested: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// The same script keyed by an explicit tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// The same script with another load time.
    pub fn with_load_ns(mut self, load_ns: u64) -> Self {
        self.load_ns = load_ns;
        self
    }

    /// The same script, failing to load on `nodes`.
    pub fn failing_on(mut self, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        self.fail_on.extend(nodes);
        self
    }

    /// The same script, also registering `script` from inside its invocation on `on`.
    pub fn with_nested(mut self, on: NodeSet, script: Script) -> Self {
        self.nested.push(NestedCall { on, script });
        self
    }

    /// The same script, also registering these task names when it loads.
    pub fn with_tasks<S: Into<String>>(mut self, tasks: impl IntoIterator<Item = S>) -> Self {
        self.tasks.extend(tasks.into_iter().map(Into::into));
        self
    }

    /// The registration that runs this script: code is the postcard encoding.
    pub fn registration(&self) -> Registration {
        let code = postcard::to_allocvec(self).expect("a script always encodes");
        let registration = Registration::new(code, Vec::new());
        match &self.tag {
            Some(tag) => registration.with_tag(tag.clone()),
            None => registration,
        }
    }

    /// Reads a script back from [`Registration::code`].
    pub fn decode(code: &[u8]) -> Result<Script, SimError> {
        postcard::from_bytes(code).map_err(|e| SimError::BadScript(e.to_string()))
    }

    /// The error text of the load on `node`, if it fails there.
    pub fn error_on(&self, node: NodeId) -> Option<String> {
        self.fail_on
            .contains(&node)
            .then(|| format!("load of '{}' failed on {node}", self.name))
    }

    /// Levels of nesting: 1 for a script that nests nothing.
    pub fn depth(&self) -> u32 {
        1 + self
            .nested
            .iter()
            .map(|call| call.script.depth())
            .max()
            .unwrap_or(0)
    }

    /// The longest chain of load times from this script down through its nesting.
    pub fn longest_load_chain_ns(&self) -> u64 {
        self.load_ns
            + self
                .nested
                .iter()
                .map(|call| call.script.longest_load_chain_ns())
                .max()
                .unwrap_or(0)
    }
}

impl NodeSet {
    /// Whether `node` is in the set.
    pub fn contains(&self, node: NodeId) -> bool {
        match self {
            NodeSet::All => true,
            NodeSet::Only(nodes) => nodes.contains(&node),
            NodeSet::AllExcept(nodes) => !nodes.contains(&node),
        }
    }
}
