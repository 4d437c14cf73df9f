//! The k-ary spanning tree a registration is disseminated down.

use crate::NodeId;

/// A k-ary spanning tree over all `nodes` of the job, rooted at `root`.
///
/// Nodes are placed by their distance from the root (`(id - root) mod nodes`), so
/// every key's tree is a rotation of the same shape and any node computes any other
/// node's parent and children without messages.
///
/// ```
/// use herald_core::{NodeId, Tree};
/// let tree = Tree::new(7, 2, NodeId(5));
/// let children: Vec<_> = tree.children(NodeId(5)).collect();
/// assert_eq!(children, [NodeId(6), NodeId(0)]);
/// assert_eq!(tree.parent(NodeId(0)), Some(NodeId(5)));
/// assert_eq!(tree.depth(NodeId(4)), 2, "position 6 sits below position 2");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tree {
    nodes: u64,
    fanout: u64,
    root: u64,
}

impl Tree {
    /// The tree over `nodes` nodes with `fanout` children per node, rooted at `root`.
    pub fn new(nodes: u32, fanout: u32, root: NodeId) -> Self {
        Self {
            nodes: u64::from(nodes.max(1)),
            fanout: u64::from(fanout.max(1)),
            root: u64::from(root.0),
        }
    }

    /// The root.
    pub fn root(&self) -> NodeId {
        NodeId(self.root as u32)
    }

    /// The node's parent, or `None` for the root.
    pub fn parent(&self, node: NodeId) -> Option<NodeId> {
        let position = self.position(node);
        (position > 0).then(|| self.node_at((position - 1) / self.fanout))
    }

    /// The node's children, in order.
    pub fn children(&self, node: NodeId) -> impl Iterator<Item = NodeId> + use<> {
        let first = self.position(node) * self.fanout + 1;
        let end = (first + self.fanout).min(self.nodes);
        let tree = *self;
        (first..end.max(first)).map(move |position| tree.node_at(position))
    }

    /// Hops from the root down to the node.
    pub fn depth(&self, node: NodeId) -> u32 {
        let mut position = self.position(node);
        let mut depth = 0;
        while position > 0 {
            position = (position - 1) / self.fanout;
            depth += 1;
        }
        depth
    }

    /// Whether `ancestor` lies strictly above `node` on its path to the root.
    pub fn is_ancestor(&self, ancestor: NodeId, node: NodeId) -> bool {
        let target = self.position(ancestor);
        let mut position = self.position(node);
        while position > target {
            position = (position - 1) / self.fanout;
            if position == target {
                return true;
            }
        }
        false
    }

    /// Whether `node` is a child of the root with no children of its own: its
    /// own outcome is its whole subtree's (see `Message::Ran`).
    ///
    /// ```
    /// use herald_core::{NodeId, Tree};
    /// let tree = Tree::new(7, 2, NodeId(0));
    /// assert!(!tree.is_childless_child_of_root(NodeId(2)), "2 has children 5 and 6");
    /// assert!(Tree::new(3, 2, NodeId(0)).is_childless_child_of_root(NodeId(2)));
    /// ```
    pub fn is_childless_child_of_root(&self, node: NodeId) -> bool {
        self.parent(node) == Some(self.root()) && self.children(node).next().is_none()
    }

    fn position(&self, node: NodeId) -> u64 {
        (u64::from(node.0) + self.nodes - self.root % self.nodes) % self.nodes
    }

    fn node_at(&self, position: u64) -> NodeId {
        NodeId(((position + self.root) % self.nodes) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node but the root has exactly one parent, which lists it as a child.
    #[test]
    fn spans_every_node_once() {
        for nodes in 1..40u32 {
            for fanout in 1..6 {
                for root in [0, nodes / 2, nodes - 1] {
                    let tree = Tree::new(nodes, fanout, NodeId(root));
                    let mut seen = vec![0u32; nodes as usize];
                    for n in 0..nodes {
                        for c in tree.children(NodeId(n)) {
                            seen[c.0 as usize] += 1;
                            assert_eq!(tree.parent(c), Some(NodeId(n)));
                            assert!(tree.is_ancestor(NodeId(n), c));
                            assert!(!tree.is_ancestor(c, NodeId(n)));
                        }
                    }
                    assert_eq!(seen[root as usize], 0);
                    assert_eq!(tree.parent(NodeId(root)), None);
                    for (n, count) in seen.iter().enumerate() {
                        if n as u32 != root {
                            assert_eq!(*count, 1, "nodes={nodes} fanout={fanout} n={n}");
                        }
                    }
                }
            }
        }
    }

    /// Depth never exceeds ceil(log_k N): the bound the hop-count claims rely on.
    #[test]
    fn depth_is_logarithmic() {
        for nodes in [2u32, 3, 15, 16, 17, 256, 4096, 10_000] {
            for fanout in 2..9u32 {
                let tree = Tree::new(nodes, fanout, NodeId(1 % nodes));
                let deepest = (0..nodes).map(|n| tree.depth(NodeId(n))).max().unwrap_or(0);
                let mut bound = 0;
                while u64::from(fanout).pow(bound) < u64::from(nodes) {
                    bound += 1;
                }
                assert!(deepest <= bound, "nodes={nodes} fanout={fanout}");
            }
        }
    }
}
