//! Rank 0's report of processes joining a running job, in the order of their
//! ranks.
//!
//! A joiner is given its rank when its hello arrives and is admitted when its
//! listen address (its `Register`) arrives; with several joining at once these
//! can cross. The mesh's owner (herald's core) takes the admission of a rank to
//! mean that every rank below it was given out, and declares absent any lower
//! one it has not seen admitted, so admissions are reported in rank order: a
//! joiner still registering holds back those after it until it registers or its
//! connection is lost (it is then skipped, and the next admission declares it
//! absent, as its `PeerDown` did).

use std::collections::BTreeSet;

/// Joiners given a rank and not yet reported.
#[derive(Debug)]
pub(crate) struct JoinOrder {
    /// The lowest rank not yet reported or skipped.
    next: u32,
    /// Ranks admitted (registered) and not yet reported.
    admitted: BTreeSet<u32>,
    /// Ranks lost before they could be reported.
    lost: BTreeSet<u32>,
}

impl JoinOrder {
    /// Joiners get ranks from `first` (the job's size at formation) on.
    pub(crate) fn new(first: u32) -> JoinOrder {
        JoinOrder {
            next: first,
            admitted: BTreeSet::new(),
            lost: BTreeSet::new(),
        }
    }

    /// Joiner `rank` registered: the ranks to report as joined now, in order.
    pub(crate) fn admitted(&mut self, rank: u32) -> Vec<u32> {
        if rank >= self.next {
            self.admitted.insert(rank);
        }
        self.reportable()
    }

    /// Joiner `rank` was lost (before it was reported, or not): the ranks to
    /// report as joined now, in order.
    pub(crate) fn lost(&mut self, rank: u32) -> Vec<u32> {
        if rank >= self.next {
            self.admitted.remove(&rank);
            self.lost.insert(rank);
        }
        self.reportable()
    }

    fn reportable(&mut self) -> Vec<u32> {
        let mut report = Vec::new();
        loop {
            if self.lost.remove(&self.next) {
                self.next += 1;
            } else if self.admitted.remove(&self.next) {
                report.push(self.next);
                self.next += 1;
            } else {
                return report;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joiners_registering_in_rank_order_are_reported_at_once() {
        let mut order = JoinOrder::new(3);
        assert_eq!(order.admitted(3), [3]);
        assert_eq!(order.admitted(4), [4]);
    }

    #[test]
    fn a_later_joiner_waits_for_an_earlier_one_still_registering() {
        let mut order = JoinOrder::new(3);
        assert_eq!(order.admitted(4), Vec::<u32>::new());
        assert_eq!(order.admitted(5), Vec::<u32>::new());
        assert_eq!(order.admitted(3), [3, 4, 5]);
    }

    #[test]
    fn an_earlier_joiner_lost_before_registering_is_skipped() {
        let mut order = JoinOrder::new(3);
        assert_eq!(order.admitted(4), Vec::<u32>::new());
        assert_eq!(order.lost(3), [4]);
        assert_eq!(order.admitted(5), [5]);
    }

    #[test]
    fn a_joiner_lost_after_registering_but_before_its_report_is_skipped() {
        let mut order = JoinOrder::new(3);
        assert_eq!(order.admitted(4), Vec::<u32>::new());
        assert_eq!(order.lost(4), Vec::<u32>::new());
        assert_eq!(order.admitted(3), [3]);
        assert_eq!(order.admitted(5), [5]);
    }

    #[test]
    fn news_of_a_rank_already_reported_changes_nothing() {
        let mut order = JoinOrder::new(3);
        assert_eq!(order.admitted(3), [3]);
        assert_eq!(order.lost(3), Vec::<u32>::new());
        assert_eq!(order.admitted(3), Vec::<u32>::new());
        assert_eq!(order.admitted(4), [4]);
    }
}
