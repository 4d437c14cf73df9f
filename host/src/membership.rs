//! Membership: views that grow when a node joins and shrink when one goes down,
//! joining a running job, and an in-process cluster that nodes can join (for
//! tests and embedding).
//!
//! A joining node is started with [`Runtime::start_joining`] (on a transport
//! that authenticated it with the cluster secret and assigned it a fresh id);
//! node 0 admits it and sends it the job's registration log, which it replays
//! in order before it takes any task. `start_joining` returns once that is done,
//! or fails naming the registration that failed here (the node is then not
//! admitted: fail closed).

use std::sync::{Arc, PoisonError, RwLock};

use crossbeam_channel::{Receiver, Sender};
use herald_core::{JoinFailure, NodeId, View};
use herald_tcp::{Bootstrap, BootstrapError, Mesh, MeshEvent, bootstrap_from_env};

use crate::code::describe_registration;
use crate::shared::Command;
use crate::transport::LocalTransport;
use crate::{Executor, HostConfig, HostError, Runtime};

/// Called on every change of a node's view, with the new view, from the
/// runtime's event loop (on whichever thread runs it: the runtime's own, the
/// transport's I/O thread, or one that just called the runtime): it must return
/// quickly and must not wait on herald.
pub type ViewHook = Arc<dyn Fn(View) + Send + Sync>;

/// Called with a node that went down in the job's view, or that left after the
/// end of the job, from the runtime's event loop (on whichever thread runs it):
/// it must return quickly and must not wait on herald.
pub type NodeDownHook = Arc<dyn Fn(u32) + Send + Sync>;

/// Where a node's membership stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Started as a member of the job.
    Member,
    /// Joining: waiting for the log, or replaying it.
    Joining,
    /// Joined: the log is replayed, tasks run here.
    Admitted,
    /// Not admitted, for this reason.
    Refused(String),
}

impl Runtime {
    /// Joins a running job on `mesh`, a herald-tcp mesh that joined it (its rank
    /// is the fresh id the transport assigned, its size the ids assigned so far):
    /// node 0 admits this node and sends it the job's registration log, which it
    /// replays in order, before any task runs here. Returns at once: call
    /// [`wait_admitted`](Self::wait_admitted) (once whatever the replay needs is
    /// in place, e.g. the runtime installed for the C ABI) to learn that the
    /// replay is done, or that a replayed registration failed here (the node is
    /// then not admitted, and stops).
    ///
    /// `executors` (kinds of code of your own, see
    /// [`register_executor`](Runtime::register_executor)) are in place before
    /// the replay starts, so that the log's registrations of those kinds run.
    pub fn start_joining(
        mesh: Mesh,
        events: Receiver<MeshEvent>,
        config: HostConfig,
        executors: Vec<(String, Arc<dyn Executor>)>,
    ) -> Result<Runtime, HostError> {
        config.check_agreed(mesh.agreed())?;
        let (node, nodes) = (mesh.rank(), mesh.size());
        let transport = Box::new(mesh);
        Runtime::start_joining_with_transport(transport, events, node, nodes, config, executors)
    }

    /// [`start_joining`](Self::start_joining) on any transport: `node` is this
    /// node's fresh id, `nodes` the ids assigned so far (this one included). The
    /// transport must make node 0 admit it (herald-tcp reports the join to node
    /// 0, whose runtime admits it).
    pub fn start_joining_with_transport(
        transport: Box<dyn crate::Transport>,
        events: Receiver<MeshEvent>,
        node: u32,
        nodes: u32,
        config: HostConfig,
        executors: Vec<(String, Arc<dyn Executor>)>,
    ) -> Result<Runtime, HostError> {
        Runtime::start_node(transport, events, node, nodes, config, Some(0), executors)
    }

    /// Calls `hook` on every later change of this node's view (a node joined or
    /// went down), from the event loop: it must return quickly.
    pub fn on_view_change(&self, hook: ViewHook) {
        self.shared()
            .view_hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hook);
    }

    /// Calls `hook` with every node that later goes down in the job's view or
    /// leaves after the end of the job (rank 0 closing its links once the job
    /// ended, for example), from the event loop: it must return quickly.
    pub fn on_node_down(&self, hook: NodeDownHook) {
        self.shared()
            .down_hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(hook);
    }

    /// Starts handling frames from other nodes, for a runtime started with
    /// [`HostConfig::hold_events`](crate::HostConfig::hold_events).
    pub fn open_events(&self) {
        self.shared().send(Command::OpenEvents);
    }

    /// Admits `node`, which the transport has just authenticated with a fresh id
    /// (herald-tcp reports it on node 0): it receives the registration log.
    pub fn admit(&self, node: u32) {
        self.shared().send(Command::Admit(node));
    }

    /// Waits until this joining node has replayed the job's log; at once for a
    /// node that started as a member. Fails with [`HostError::NotAdmitted`]
    /// (naming this node and the registration) if it was refused, or with
    /// [`HostError::Fenced`] if the job declared it down while it replayed; the
    /// runtime has then stopped.
    pub fn wait_admitted(&self) -> Result<(), HostError> {
        let shared = self.shared();
        let mut admission = shared
            .admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            match &*admission {
                Admission::Admitted | Admission::Member => return Ok(()),
                Admission::Refused(reason) => {
                    let reason = reason.clone();
                    drop(admission);
                    self.shutdown();
                    return Err(HostError::NotAdmitted { reason });
                }
                Admission::Joining if self.is_stopped() => {
                    // Declared down while replaying (e.g. stopped for longer than
                    // the peer timeout): say so, as for any fenced node.
                    return Err(match shared.stopped_error() {
                        fenced @ HostError::Fenced { .. } => fenced,
                        _ => HostError::NotAdmitted {
                            reason: format!(
                                "node {} stopped before it was admitted",
                                shared.node.0
                            ),
                        },
                    });
                }
                Admission::Joining => {
                    admission = shared
                        .admission_changed
                        .wait_timeout(admission, std::time::Duration::from_millis(100))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

/// The variable that makes `herald_init`, herald-python and the `herald` Python
/// package join a running job through rank 0's address (`HOST:PORT`), like
/// `herald node --join`.
pub const JOIN_ENV: &str = "HERALD_JOIN";

/// The bootstrap of a process joining a running job through rank 0 at
/// `address`: herald's own variables from `env` (secret, bind address,
/// heartbeat and timeout), rank 0's address as the coordinator. The rank and
/// size are placeholders (`Mesh::join` ignores them: rank 0 assigns a fresh
/// rank); launcher variables (MPI, Slurm) are not read.
pub fn join_bootstrap(
    address: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Bootstrap, BootstrapError> {
    bootstrap_from_env(&|name| match name {
        "HERALD_COORDINATOR" => Some(address.to_owned()),
        "HERALD_RANK" => Some("1".to_owned()),
        "HERALD_SIZE" => Some("2".to_owned()),
        other if other.starts_with("HERALD_") => env(other),
        _ => None,
    })
}

/// Why a joining node was not admitted, naming it and the registration.
pub(crate) fn describe_refusal(node: NodeId, failure: &JoinFailure) -> String {
    match failure {
        JoinFailure::Replay {
            registration,
            error,
            ..
        } => format!(
            "node {} was not admitted: replaying {} failed there: {error}",
            node.0,
            describe_registration(&registration.code, registration.tag.as_deref())
        ),
        JoinFailure::AdmitterDown { admitter, reason } => format!(
            "node {} was not admitted: {admitter} went down before it admitted it ({reason})",
            node.0
        ),
    }
}

/// Runtimes of one process connected by channels, which more can join: for
/// tests and embedding.
pub struct LocalCluster {
    runtimes: Vec<Runtime>,
    peers: Arc<RwLock<Vec<Sender<MeshEvent>>>>,
    config: HostConfig,
}

impl LocalCluster {
    /// `nodes` runtimes (node 0 admits those that join later).
    pub fn start(nodes: u32, config: HostConfig) -> Result<LocalCluster, HostError> {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..nodes).map(|_| crossbeam_channel::unbounded()).unzip();
        let peers = Arc::new(RwLock::new(senders));
        let runtimes = receivers
            .into_iter()
            .enumerate()
            .map(|(node, events)| {
                let transport = LocalTransport::new(node as u32, Arc::clone(&peers));
                Runtime::start_with_transport(
                    Box::new(transport),
                    events,
                    node as u32,
                    nodes,
                    config.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LocalCluster {
            runtimes,
            peers,
            config,
        })
    }

    /// A new runtime joins with the next id; returns once node 0 admitted it and
    /// it replayed the log, or the reason it was not admitted.
    pub fn join(&mut self) -> Result<&Runtime, HostError> {
        self.join_with(self.config.clone(), Vec::new())
    }

    /// [`join`](Self::join) with its own configuration (e.g. other allowed
    /// library directories) and executors, in place before it replays the log.
    pub fn join_with(
        &mut self,
        config: HostConfig,
        executors: Vec<(String, Arc<dyn Executor>)>,
    ) -> Result<&Runtime, HostError> {
        let (sender, events) = crossbeam_channel::unbounded();
        let node = {
            let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
            peers.push(sender);
            peers.len() as u32 - 1
        };
        let transport = LocalTransport::new(node, Arc::clone(&self.peers));
        let joining = Runtime::start_node(
            Box::new(transport),
            events,
            node,
            node + 1,
            config,
            Some(0),
            executors,
        )?;
        // What node 0 does when herald-tcp reports that a newcomer authenticated.
        self.runtimes[0].admit(node);
        joining.wait_admitted()?;
        self.runtimes.push(joining);
        Ok(&self.runtimes[self.runtimes.len() - 1])
    }

    /// The runtimes: the first ones by node id, then those that joined, in
    /// order (a node whose join failed is not listed, and its id is not reused).
    pub fn runtimes(&self) -> &[Runtime] {
        &self.runtimes
    }

    /// Shuts every runtime down.
    pub fn shutdown(&self) {
        for runtime in &self.runtimes {
            runtime.shutdown();
        }
    }
}
