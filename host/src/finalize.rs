//! [`Runtime::finalize`]: ending a job in which every rank runs the program (SPMD),
//! collectively, like `MPI_Finalize`.
//!
//! Each rank first waits until its own work is answered (every registration it
//! requested has completed and every task it launched has its result), so nothing
//! it asked for still travels through other nodes. Then ranks other than 0 tell
//! rank 0 they arrived (the reserved task `herald.finalize`) and keep serving;
//! rank 0, once every other rank arrived or went down, ends the job
//! ([`Runtime::end_job`]); each rank stops its runtime only then. So no runtime
//! stops while another rank may still need it.

use std::collections::BTreeSet;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use herald_core::TaskErrorKind;

use crate::error::HostError;
use crate::runtime::{JobEnd, Runtime};
use crate::tasks::FINALIZE_TASK;

/// Longest a rank waits, once the job has ended, for node 0 to close its links.
/// Node 0 closes them once every rank acknowledged the end, so a rank that stops
/// only then never sees another rank leave while it still thinks the job runs.
const COORDINATOR_LINGER: Duration = Duration::from_secs(10);

/// Rank 0's record of the ranks that called finalize (or went down).
#[derive(Default)]
pub(crate) struct Arrivals {
    state: Mutex<ArrivalState>,
    changed: Condvar,
}

#[derive(Default)]
struct ArrivalState {
    arrived: BTreeSet<u32>,
    down: BTreeSet<u32>,
    /// Why this node was fenced, if the job declared it down.
    fenced: Option<String>,
    /// The nodes that node 0, ending the job, named as gone down before they
    /// called finalize: every survivor's finalize fails naming them.
    lost_at_end: Vec<u32>,
}

impl Arrivals {
    /// `node` called finalize.
    pub(crate) fn arrive(&self, node: u32) {
        self.update(|state| state.arrived.insert(node));
    }

    /// `node` went down: it will never arrive, and nobody can need it any more.
    pub(crate) fn down(&self, node: u32) {
        self.update(|state| state.down.insert(node));
    }

    /// The job declared this node down: it takes no further part.
    pub(crate) fn fence(&self, why: String) {
        self.update(|state| state.fenced.replace(why).is_none());
    }

    /// Node 0 ended the job naming `lost` as gone down without arriving.
    pub(crate) fn lost_at_end(&self, lost: Vec<u32>) {
        self.update(|state| {
            state.lost_at_end = lost;
            true
        });
    }

    fn lost_nodes(&self) -> Vec<u32> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.lost_at_end.clone()
    }

    fn fenced(&self) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.fenced.clone()
    }

    /// The view grew (a node joined): a wait for every node must count it too.
    pub(crate) fn view_changed(&self) {
        self.update(|_| true);
    }

    /// Blocks until every node of `0..nodes()` other than `me` arrived or went
    /// down, `nodes()` read afresh after every change: a node that joins
    /// meanwhile is a rank like the others. Returns the nodes that went down
    /// without arriving, or why this node was fenced meanwhile.
    fn wait_for_others(&self, me: u32, nodes: impl Fn() -> u32) -> Result<Vec<u32>, String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(why) = &state.fenced {
                return Err(why.clone());
            }
            let missing = (0..nodes())
                .filter(|n| *n != me && !state.arrived.contains(n) && !state.down.contains(n))
                .count();
            if missing == 0 {
                return Ok(state.down.difference(&state.arrived).copied().collect());
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until `node` went down, this node was fenced (its runtime stops, so
    /// it would never hear of `node` again), or `timeout` passed. Returns whether
    /// `node` went down.
    fn wait_down(&self, node: u32, timeout: Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |state| {
                !state.down.contains(&node) && state.fenced.is_none()
            })
            .unwrap_or_else(PoisonError::into_inner);
        state.down.contains(&node)
    }

    fn update(&self, change: impl FnOnce(&mut ArrivalState) -> bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if change(&mut state) {
            self.changed.notify_all();
        }
    }
}

impl Runtime {
    /// Ends an SPMD job collectively: every rank calls it (from a thread that runs
    /// no herald callback or task), and it returns on each once every rank has
    /// called it, with this runtime stopped. Before arriving, it waits until every
    /// registration requested here has completed and every task launched here has
    /// its result, released handles included.
    ///
    /// Fails (after stopping the runtime) if rank 0 went down first, if a rank
    /// went down without calling it (on every rank, naming them), if the job
    /// declared this node down (also after it called it), or if a registration
    /// that a library constructor made here with nobody waiting for it failed.
    pub fn finalize(&self) -> Result<(), HostError> {
        let refusal = crate::context::deadlock_reason(self.shared().id, None)
            .or_else(crate::context::user_code_refusal);
        if let Some(reason) = refusal {
            return Err(HostError::WouldDeadlock { reason });
        }
        let outcome = self.quiesce().and_then(|()| {
            // Registrations of libraries the program loaded itself (plain dlopen),
            // which nobody waited for: answered by now; a failure among them is
            // this rank's result, after the collective.
            let settled = self.settle_unawaited(true).map(|_| ());
            if let Some(why) = self.shared().arrivals.fenced() {
                Err(HostError::Finalize(why))
            } else if self.node_id() == 0 {
                self.finalize_as_coordinator().and(settled)
            } else {
                self.finalize_as_member().and(settled)
            }
        });
        self.shutdown();
        // Declared down at any step (the arrival at rank 0 included): the
        // collective failed for this rank, saying who declared it down.
        outcome.map_err(|error| match error {
            HostError::Fenced { .. } => HostError::Finalize(
                self.shared()
                    .arrivals
                    .fenced()
                    .unwrap_or_else(|| error.to_string()),
            ),
            other => other,
        })
    }

    /// Tells rank 0 that this rank runs no program of its own, so has nothing to
    /// finalize: it only serves until the job ends (`herald node` joining a job,
    /// say). A rank 0 in [`finalize`](Self::finalize) then does not wait for it,
    /// as it waits for every rank that runs the job's program. Returns at once;
    /// call it once, from a rank other than 0.
    pub fn arrive_serving(&self) {
        if self.node_id() != 0 {
            // Answered by rank 0's event loop itself; nothing waits for the answer.
            drop(self.launch_any(0, FINALIZE_TASK.to_owned(), Vec::new()));
        }
    }

    /// Rank 0: every other rank arrived (or went down); then the job ends.
    fn finalize_as_coordinator(&self) -> Result<(), HostError> {
        let lost = self
            .shared()
            .arrivals
            .wait_for_others(0, || self.num_nodes())
            .map_err(HostError::Finalize)?;
        self.end_job_naming(&lost)?;
        lost_nodes_result(&lost)
    }

    /// Any other rank: tell rank 0, then serve until it ends the job.
    fn finalize_as_member(&self) -> Result<(), HostError> {
        match self
            .launch_any(0, FINALIZE_TASK.to_owned(), Vec::new())
            .wait()
        {
            Ok(_) => {}
            Err(HostError::Task(error)) if error.kind == TaskErrorKind::Unreachable => {}
            Err(error) => return Err(error),
        }
        match self.wait_for_job_end(None)? {
            JobEnd::Ended { .. } => {
                if !self.shared().arrivals.wait_down(0, COORDINATOR_LINGER) {
                    tracing::debug!("herald: node 0 kept its links open after the end of the job");
                }
                // Declared down while it waited for node 0 to close its links
                // (stopped, or cut off, after the end reached it): the job went on
                // without it, and that is this node's result.
                if let Some(why) = self.shared().arrivals.fenced() {
                    return Err(HostError::Finalize(why));
                }
                // Node 0 named them in its end of the job: a node going down
                // may reach it before it reaches this node, or never.
                lost_nodes_result(&self.shared().arrivals.lost_nodes())
            }
            JobEnd::CoordinatorLost { reason } => Err(HostError::Finalize(format!(
                "node 0 went down before every rank called herald_finalize: {reason}"
            ))),
            JobEnd::Fenced { .. } | JobEnd::Stopped => Err(self
                .shared()
                .arrivals
                .fenced()
                .map_or(HostError::Stopped, HostError::Finalize)),
        }
    }
}

/// A finalize's result when `lost` went down before calling it.
fn lost_nodes_result(lost: &[u32]) -> Result<(), HostError> {
    if lost.is_empty() {
        Ok(())
    } else {
        Err(HostError::Finalize(format!(
            "node(s) {lost:?} went down before calling herald_finalize"
        )))
    }
}
