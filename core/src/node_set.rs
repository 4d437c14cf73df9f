//! [`NodeSet`]: a set of node ids stored as ranges, so that a report naming every
//! failed or unreachable node stays small whatever the job's size.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A set of nodes, kept as sorted, disjoint, non-adjacent inclusive ranges.
///
/// Contiguous failures (a rack, a whole subtree) cost one range; the worst case,
/// every other node, costs one range per member, which [`Config`](crate::Config)
/// bounds against the frame limit.
///
/// ```
/// use herald_core::{NodeId, NodeSet};
/// let mut set = NodeSet::default();
/// for n in [3, 1, 2, 7] {
///     set.insert(NodeId(n));
/// }
/// assert_eq!(set.ranges(), &[(1, 3), (7, 7)]);
/// assert_eq!(set.iter().map(|n| n.0).collect::<Vec<_>>(), [1, 2, 3, 7]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSet {
    ranges: Vec<(u32, u32)>,
}

impl NodeSet {
    /// Adds one node.
    pub fn insert(&mut self, node: NodeId) {
        self.insert_range(node.0, node.0);
    }

    /// Adds every node of `other`.
    pub fn union_with(&mut self, other: &NodeSet) {
        for &(start, end) in &other.ranges {
            self.insert_range(start, end);
        }
    }

    /// Whether `node` is a member.
    pub fn contains(&self, node: NodeId) -> bool {
        let i = self.ranges.partition_point(|&(_, end)| end < node.0);
        self.ranges
            .get(i)
            .is_some_and(|&(start, _)| start <= node.0)
    }

    /// True when the set has no member.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of members.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(start, end)| u64::from(end - start) + 1)
            .sum()
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.ranges
            .iter()
            .flat_map(|&(start, end)| (start..=end).map(NodeId))
    }

    /// The inclusive ranges, sorted.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// The largest member, if any: what a receiver checks against the job size.
    pub fn max(&self) -> Option<NodeId> {
        self.ranges.last().map(|&(_, end)| NodeId(end))
    }

    /// Whether the ranges are sorted, disjoint, non-adjacent and each ordered: what
    /// every set this crate builds looks like, and what a received one must.
    pub fn is_canonical(&self) -> bool {
        self.ranges.iter().all(|&(start, end)| start <= end)
            && self
                .ranges
                .windows(2)
                .all(|w| u64::from(w[0].1) + 1 < u64::from(w[1].0))
    }

    fn insert_range(&mut self, start: u32, end: u32) {
        let (start, end) = (start.min(end), start.max(end));
        // Every range that overlaps or touches [start, end] merges with it.
        let first = self
            .ranges
            .partition_point(|&(_, e)| u64::from(e) + 1 < u64::from(start));
        let last = self
            .ranges
            .partition_point(|&(s, _)| u64::from(s) <= u64::from(end) + 1);
        if first == last {
            self.ranges.insert(first, (start, end));
            return;
        }
        let merged = (
            start.min(self.ranges[first].0),
            end.max(self.ranges[last - 1].1),
        );
        self.ranges.splice(first..last, [merged]);
    }
}

impl Extend<NodeId> for NodeSet {
    fn extend<I: IntoIterator<Item = NodeId>>(&mut self, iter: I) {
        for node in iter {
            self.insert(node);
        }
    }
}

impl FromIterator<NodeId> for NodeSet {
    fn from_iter<I: IntoIterator<Item = NodeId>>(iter: I) -> Self {
        let mut set = NodeSet::default();
        for node in iter {
            set.insert(node);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(members in proptest::collection::vec(0u32..64, 0..80)) {
            let mut set = NodeSet::default();
            let mut model = BTreeSet::new();
            for m in members {
                set.insert(NodeId(m));
                model.insert(m);
                prop_assert!(set.is_canonical());
            }
            prop_assert_eq!(set.iter().map(|n| n.0).collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(set.len(), model.len() as u64);
            for probe in 0..66 {
                prop_assert_eq!(set.contains(NodeId(probe)), model.contains(&probe));
            }
        }

        #[test]
        fn union_is_canonical(a in proptest::collection::vec(0u32..40, 0..30), b in proptest::collection::vec(0u32..40, 0..30)) {
            let mut left: NodeSet = a.iter().map(|&n| NodeId(n)).collect();
            let right: NodeSet = b.iter().map(|&n| NodeId(n)).collect();
            left.union_with(&right);
            let model: BTreeSet<u32> = a.into_iter().chain(b).collect();
            prop_assert!(left.is_canonical());
            prop_assert_eq!(left.iter().map(|n| n.0).collect::<Vec<_>>(), model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn extremes_do_not_overflow() {
        let mut set = NodeSet::default();
        set.insert(NodeId(u32::MAX));
        set.insert(NodeId(u32::MAX - 1));
        set.insert(NodeId(0));
        assert_eq!(set.ranges(), &[(0, 0), (u32::MAX - 1, u32::MAX)]);
        assert!(set.is_canonical());
    }
}
