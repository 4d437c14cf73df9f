//! [`Runtime`]: the public face of a running herald node.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use herald_core::{Config, Node, NodeId, Registration, RegistrationResult};
use herald_tcp::{Mesh, MeshEvent};

use crate::code::{CodeRef, LibraryRef, TaskCode, TaskVariant, WireCode};
use crate::config::HostConfig;
use crate::context;
use crate::driver::{Driver, run_loop_thread};
use crate::error::HostError;
use crate::event_loop::EventLoop;
use crate::executor::Executor;
use crate::handle::{RegistrationHandle, TaskHandle};
use crate::native;
use crate::shared::{Command, Flush, Shared};
use crate::stats::{Counters, RuntimeStats};
use crate::tasks::{END_JOB_TASK, RESERVED_PREFIX, end_job_args};
use crate::transport::{NoTransport, Transport, local_mesh};

/// A running herald node: the event loop, its workers, and the API to register
/// code globally, load libraries and launch tasks. Cheap to clone; every clone
/// drives the same node. Call [`shutdown`](Self::shutdown) to stop it; dropping
/// the last clone stops it too (without waiting for the event loop to exit).
///
/// ```
/// use herald_host::{CodeRef, Executor, HostConfig, Runtime};
/// use std::sync::Arc;
///
/// struct Noop;
/// impl Executor for Noop {
///     fn invoke(&self, _: &[u8], _: &[u8]) -> Result<(), String> { Ok(()) }
/// }
/// // Three nodes in one process, connected by channels.
/// let nodes = Runtime::local_cluster(3, HostConfig::default())?;
/// for node in &nodes {
///     node.register_executor("noop", Arc::new(Noop));
/// }
/// let code = CodeRef::Custom { kind: "noop".into(), payload: vec![] };
/// let result = nodes[1].register_global(code, b"args".to_vec(), None).wait()?;
/// assert!(result.is_ok());
/// nodes.iter().for_each(|n| n.shutdown());
/// # Ok::<(), herald_host::HostError>(())
/// ```
#[derive(Clone)]
pub struct Runtime {
    shared: Arc<Shared>,
    event_loop: Arc<LoopThread>,
}

/// The event loop's thread, shared by every clone of a [`Runtime`]; the last
/// clone to go stops the loop (which otherwise runs for ever).
struct LoopThread {
    thread: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl Drop for LoopThread {
    fn drop(&mut self) {
        // Not joined here: a drop must not block. Pending handles fail with Stopped.
        self.shared.send(Command::Shutdown);
    }
}

/// How the job ended, as seen by this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobEnd {
    /// A node called [`Runtime::end_job`].
    Ended {
        /// That node.
        by: u32,
    },
    /// Node 0, which runs the job's top-level function, went down first.
    CoordinatorLost {
        /// What the transport said.
        reason: String,
    },
    /// Another node declared this one down: it takes no further part, and its
    /// runtime has stopped. The process should end, saying so.
    Fenced {
        /// The node that declared it down.
        by: u32,
        /// Why.
        reason: String,
    },
    /// This runtime was shut down.
    Stopped,
}

/// What [`Runtime::load_library`] did.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// The library, as other nodes will name it.
    pub library: LibraryRef,
    /// The results of the registrations its constructors made, in order.
    pub registrations: Vec<RegistrationResult>,
    /// The loaded object: the file that was checked and hashed.
    loaded: native::LoadedLibrary,
}

impl LoadReport {
    /// The address of the exported `symbol` of this very library (the file that
    /// was checked and hashed, not whatever is at its path now).
    pub fn symbol(&self, symbol: &str) -> Result<*const std::ffi::c_void, HostError> {
        Ok(native::symbol_address(&self.loaded, symbol)?)
    }

    /// The name the dynamic loader knows this very object by
    /// (`/proc/self/fd/N`, never reused): `dlopen` it to get this object, where
    /// `dlopen` of the library's path would load whatever file is there now.
    pub fn loader_path(&self) -> &Path {
        &self.loaded.loader_path
    }
}

impl std::fmt::Debug for native::LoadedLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} as {}",
            self.reference.path,
            self.loader_path.display()
        )
    }
}

impl Runtime {
    /// Starts a node on an established herald-tcp mesh, formed from a
    /// `MeshConfig` passed through [`HostConfig::agree_on`] (so that every rank
    /// was checked to use the same protocol version, fan-out and frame limit).
    /// Pass `events` as the mesh returned them: frames are then handled on the
    /// mesh's I/O thread as they arrive. To hold them back until the program is
    /// ready, use [`HostConfig::hold_events`] rather than a channel of your own
    /// (frames in another channel are picked up only every 50 ms).
    pub fn start(
        mesh: Mesh,
        events: Receiver<MeshEvent>,
        config: HostConfig,
    ) -> Result<Runtime, HostError> {
        config.check_agreed(mesh.agreed())?;
        let (node, nodes) = (mesh.rank(), mesh.size());
        Runtime::start_with_transport(Box::new(mesh), events, node, nodes, config)
    }

    /// Starts node `node` of `nodes` on any transport.
    pub fn start_with_transport(
        transport: Box<dyn Transport>,
        events: Receiver<MeshEvent>,
        node: u32,
        nodes: u32,
        config: HostConfig,
    ) -> Result<Runtime, HostError> {
        Runtime::start_node(transport, events, node, nodes, config, None, Vec::new())
    }

    /// Starts node `node`, a member (`admitter: None`) or joining the running job
    /// through `admitter`, with `executors` in place before anything runs.
    pub(crate) fn start_node(
        transport: Box<dyn Transport>,
        events: Receiver<MeshEvent>,
        node: u32,
        nodes: u32,
        config: HostConfig,
        admitter: Option<u32>,
        executors: Vec<(String, Arc<dyn Executor>)>,
    ) -> Result<Runtime, HostError> {
        let core_config = Config::new(NodeId(node), nodes)
            .and_then(|c| c.with_fanout(config.fanout))
            .and_then(|c| c.with_max_frame_bytes(config.max_frame_bytes))
            .map_err(|e| HostError::Start(e.to_string()))?;
        let (driver, notes) = Driver::new(events);
        let shared = Arc::new(Shared::new(NodeId(node), nodes, config, driver));
        shared
            .executors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(executors);
        let core = match admitter {
            Some(admitter) => {
                shared.set_admission(crate::membership::Admission::Joining);
                Node::joining(core_config, NodeId(admitter))
            }
            None => Node::new(core_config),
        };
        // A transport that calls back after each event has its frames handled on
        // its own thread; the hook holds the state weakly (the transport lives in it).
        let weak = Arc::downgrade(&shared);
        let hooked = transport.on_events(Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.driver.run();
            }
        }));
        let event_loop = EventLoop::new(core, Arc::clone(&shared), transport);
        shared.driver.install(event_loop);
        let poll_window = shared.config.poll_window;
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("herald-event-loop-{node}"))
            .spawn(move || run_loop_thread(thread_shared, notes, hooked, poll_window))
            .map_err(|e| HostError::Start(format!("cannot start the event loop thread: {e}")))?;
        let event_loop = Arc::new(LoopThread {
            thread: Mutex::new(Some(thread)),
            shared: Arc::clone(&shared),
        });
        Ok(Runtime { shared, event_loop })
    }

    /// A job of one node, for tests and single-process use.
    pub fn single_process(config: HostConfig) -> Result<Runtime, HostError> {
        let events = crossbeam_channel::never();
        Runtime::start_with_transport(Box::new(NoTransport), events, 0, 1, config)
    }

    /// `nodes` runtimes in this process, connected by channels: for tests of
    /// custom executors. (Native code is per process, so use real processes to
    /// test plugins.)
    pub fn local_cluster(nodes: u32, config: HostConfig) -> Result<Vec<Runtime>, HostError> {
        local_mesh(nodes)
            .into_iter()
            .enumerate()
            .map(|(node, (transport, events))| {
                let config = config.clone();
                Runtime::start_with_transport(
                    Box::new(transport),
                    events,
                    node as u32,
                    nodes,
                    config,
                )
            })
            .collect()
    }

    /// This node's id (its rank).
    pub fn node_id(&self) -> u32 {
        self.shared.node.0
    }

    /// Number of node ids in this node's current view of the job (nodes that
    /// joined since the start included, nodes down too): every member's id is
    /// below it. [`on_view_change`](Self::on_view_change) tells when it changes.
    pub fn num_nodes(&self) -> u32 {
        self.shared.nodes()
    }

    /// Registers `code` to run once on every node, with `args`; `tag` (if any)
    /// replaces the digest of code and arguments as the deduplication key.
    /// Never blocks. Called from inside an invocation (a callback, or a
    /// constructor of a library being loaded by one) the registration is nested:
    /// it runs here only, and the enclosing registration waits for it.
    pub fn register_global(
        &self,
        code: CodeRef,
        args: Vec<u8>,
        tag: Option<String>,
    ) -> RegistrationHandle {
        let mut registration = Registration::new(WireCode::Code(code).encode(), args);
        registration.tag = tag;
        let id = self.shared.register(registration);
        RegistrationHandle::new(Arc::clone(&self.shared), id)
    }

    /// Registers the exported C function at `function` as a global callback
    /// (`int f(const void *args, size_t len)`), named portably with `dladdr`.
    pub fn register_callback(
        &self,
        function: *const std::ffi::c_void,
        args: Vec<u8>,
        tag: Option<String>,
    ) -> Result<RegistrationHandle, HostError> {
        let (library, symbol) =
            native::reference_for_address(function as usize, &self.shared.policy)?;
        let code = CodeRef::Native {
            library,
            symbol: Some(symbol),
        };
        Ok(self.register_global(code, args, tag))
    }

    /// Loads a library on this node, like `dlopen`; its constructors run on this
    /// thread and may register globally (that is how the library reaches every
    /// node). Their handles are pending while the loader lock is held; this call
    /// waits for all of them once `dlopen` has returned, and fails if any failed.
    ///
    /// Called during another load (from a library constructor) it loads nothing
    /// and fails with [`HostError::WouldDeadlock`]: it could not wait there.
    /// Called inside an invocation, the constructors' registrations are nested
    /// in it; one that encloses that invocation (so it can only finish after it
    /// returns) is not waited for and not in the report.
    pub fn load_library(&self, path: impl AsRef<Path>) -> Result<LoadReport, HostError> {
        let path = path.as_ref();
        if context::deadlock_reason(self.shared.id, None).is_some() {
            return Err(HostError::WouldDeadlock {
                reason: format!(
                    "load_library({}) was called during another library load (from a \
                     constructor), where the registrations its constructors make could not be \
                     waited for; nothing was loaded. Call dlopen instead: the registrations \
                     then made are waited for with the enclosing load's",
                    path.display()
                ),
            });
        }
        let loading = context::enter_loading();
        let loaded = native::load_local(path, &self.shared.policy);
        let made = loading.finish();
        let loaded = loaded?;
        // The safe point: no loader lock is held any more.
        self.shared.flush_batches(Flush::All);
        let mut registrations = Vec::new();
        let mut failure = None;
        let mut seen = std::collections::HashSet::new();
        for (runtime, handle) in made {
            if runtime != self.shared.id {
                continue;
            }
            if seen.insert(handle) {
                match self.shared.wait_registration(handle, None) {
                    Ok(result) => registrations.push(result),
                    // Refused only inside an invocation, for a registration that
                    // can finish only after it returns: the load itself succeeded.
                    Err(HostError::WouldDeadlock { .. }) => {}
                    Err(error) => {
                        failure.get_or_insert(error);
                    }
                }
            }
            self.shared.release_registration(handle);
        }
        // Registrations its constructors tried that were refused at once.
        let refused = self.shared.unawaited.take_refused();
        if failure.is_none() && !refused.is_empty() {
            failure = Some(HostError::Refused(refused.join("; ")));
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(LoadReport {
                library: loaded.reference.clone(),
                registrations,
                loaded,
            }),
        }
    }

    /// Loads a library on every node (its constructors run on each, nested, so
    /// their own global registrations do not start new rounds), and waits.
    pub fn load_library_everywhere(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<RegistrationResult, HostError> {
        let library = self.library_ref(path)?;
        let code = CodeRef::Native {
            library: (*library).clone(),
            symbol: None,
        };
        self.register_global(code, Vec::new(), None).wait()
    }

    /// The portable reference to a library (checked against the allowed
    /// directories, digest computed), to build many task variants from.
    pub fn library_ref(&self, path: impl AsRef<Path>) -> Result<Arc<LibraryRef>, HostError> {
        Ok(Arc::new(native::reference_for_path(
            path.as_ref(),
            &self.shared.policy,
        )?))
    }

    /// Registers a task variant on every node, lazily: nothing is loaded until
    /// the task first runs on a node. Variants registered in a row are batched
    /// into one registration; the handle is the batch's.
    pub fn register_task(&self, variant: TaskVariant) -> Result<RegistrationHandle, HostError> {
        if variant.name.starts_with(RESERVED_PREFIX) {
            return Err(HostError::InvalidArgument(format!(
                "task names starting with '{RESERVED_PREFIX}' are reserved for herald: '{}'",
                variant.name
            )));
        }
        let id = self.shared.add_variant(variant);
        Ok(RegistrationHandle::new(Arc::clone(&self.shared), id))
    }

    /// Registers task `name` as `symbol` of the library at `path`.
    pub fn register_task_symbol(
        &self,
        name: impl Into<String>,
        path: impl AsRef<Path>,
        symbol: impl Into<String>,
    ) -> Result<RegistrationHandle, HostError> {
        let library = self.library_ref(path)?;
        self.register_task(TaskVariant {
            name: name.into(),
            code: TaskCode::Native {
                library,
                symbol: symbol.into(),
            },
        })
    }

    /// Registers task `name` as the exported C function at `function`
    /// (`int f(const void *, size_t, herald_output *)`), named with `dladdr`.
    pub fn register_task_function(
        &self,
        name: impl Into<String>,
        function: *const std::ffi::c_void,
    ) -> Result<RegistrationHandle, HostError> {
        let (library, symbol) =
            native::reference_for_address(function as usize, &self.shared.policy)?;
        self.register_task(TaskVariant {
            name: name.into(),
            code: TaskCode::Native {
                library: Arc::new(library),
                symbol,
            },
        })
    }

    /// Registers task `name` as the exported C function at `function` on this
    /// node only: no other node hears of it, so launching `name` to another node
    /// fails there as unregistered. (What a runtime without global registration
    /// offers; herald-python's nativetasks example contrasts the two.)
    pub fn register_task_local(
        &self,
        name: impl Into<String>,
        function: *const std::ffi::c_void,
    ) -> Result<(), HostError> {
        let name = name.into();
        if name.starts_with(RESERVED_PREFIX) {
            return Err(HostError::InvalidArgument(format!(
                "task names starting with '{RESERVED_PREFIX}' are reserved for herald: '{name}'"
            )));
        }
        let (library, symbol) =
            native::reference_for_address(function as usize, &self.shared.policy)?;
        let variant = TaskVariant {
            name,
            code: TaskCode::Native {
                library: Arc::new(library),
                symbol,
            },
        };
        self.shared
            .tasks
            .insert(vec![variant])
            .map_err(HostError::InvalidArgument)
    }

    /// Sends the open batches of task variants now instead of when they are due.
    pub fn flush(&self) {
        self.shared.flush_batches(Flush::All);
    }

    /// Runs `task` on `node` with `args`. It runs there only after every
    /// registration requested here before this call is done there.
    /// Tasks named `herald.*` are herald's own: launching one fails with
    /// [`HostError::InvalidArgument`].
    pub fn launch(&self, node: u32, task: impl Into<String>, args: Vec<u8>) -> TaskHandle {
        let task = task.into();
        if task.starts_with(RESERVED_PREFIX) {
            let handle = self.shared.new_handle_id();
            let error = HostError::InvalidArgument(format!(
                "task names starting with '{RESERVED_PREFIX}' are reserved for herald: '{task}'"
            ));
            self.shared.task_results.insert_ready(handle, Err(error));
            return TaskHandle::new(Arc::clone(&self.shared), handle);
        }
        self.launch_any(node, task, args)
    }

    /// [`launch`](Self::launch), herald's own tasks included.
    pub(crate) fn launch_any(&self, node: u32, task: String, args: Vec<u8>) -> TaskHandle {
        self.shared.flush_batches(Flush::All);
        let handle = self.shared.new_handle_id();
        self.shared.task_results.insert_pending(handle);
        Counters::add(&self.shared.counters.launches, 1);
        let command = Command::Launch {
            handle,
            to: NodeId(node),
            task,
            args,
            parent: crate::context::placement(self.shared.id)
                .parent
                .map(|frame| frame.id),
        };
        if node == self.node_id() {
            self.shared.launch_here(handle, command);
        } else {
            self.shared.send_or_fail(handle, command);
            self.shared.driver.run();
        }
        TaskHandle::new(Arc::clone(&self.shared), handle)
    }

    /// Adds the executor for code references of `kind`. Do it on every node
    /// before the job registers code of that kind.
    pub fn register_executor(&self, kind: impl Into<String>, executor: Arc<dyn Executor>) {
        self.shared
            .executors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kind.into(), executor);
    }

    /// Ends the job: tells every other node (their [`wait_for_job_end`](Self::wait_for_job_end)
    /// returns) and waits for their acknowledgements. Nodes already down are skipped.
    pub fn end_job(&self) -> Result<(), HostError> {
        self.end_job_naming(&[])
    }

    /// [`end_job`](Self::end_job), telling every node that `lost` went down
    /// before calling finalize.
    pub(crate) fn end_job_naming(&self, lost: &[u32]) -> Result<(), HostError> {
        let me = self.node_id();
        // Marked first: nodes leaving once they have acknowledged is expected.
        self.shared.set_job_end(JobEnd::Ended { by: me });
        let args = end_job_args(lost);
        let handles: Vec<TaskHandle> = (0..self.num_nodes())
            .filter(|node| *node != me)
            .map(|node| self.launch_any(node, END_JOB_TASK.to_owned(), args.clone()))
            .collect();
        let mut first_error = None;
        for handle in handles {
            match handle.wait() {
                Ok(_) => {}
                Err(HostError::Task(error))
                    if error.kind == herald_core::TaskErrorKind::Unreachable => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Blocks until the job ends, as [`wait_for_job_end`](Self::wait_for_job_end)
    /// without a timeout; but when it ended with the loss of node 0
    /// ([`JobEnd::CoordinatorLost`]), waits up to `grace` more for the job's
    /// verdict that this node is down ([`JobEnd::Fenced`]), and returns that if it
    /// comes. A node at one end of a broken link to node 0 declares node 0 down
    /// itself, and learns only a moment later (from the other nodes) whether the
    /// job declared it down instead: node 0 declared it down too, and its news
    /// reached the others first.
    pub fn wait_for_verdict(&self, grace: Duration) -> Result<JobEnd, HostError> {
        let end = self.wait_for_job_end(None)?;
        if !matches!(end, JobEnd::CoordinatorLost { .. }) {
            return Ok(end);
        }
        let slot = self
            .shared
            .job_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (slot, _) = self
            .shared
            .job_end_changed
            .wait_timeout_while(slot, grace, |end| {
                matches!(end, Some(JobEnd::CoordinatorLost { .. }))
            })
            .unwrap_or_else(PoisonError::into_inner);
        Ok(slot.clone().unwrap_or(end))
    }

    /// Blocks until the job ends (see [`JobEnd`]), or `timeout` passes.
    pub fn wait_for_job_end(&self, timeout: Option<Duration>) -> Result<JobEnd, HostError> {
        let started = Instant::now();
        let deadline = timeout.map(|t| started + t);
        let mut slot = self
            .shared
            .job_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(end) = slot.clone() {
                return Ok(end);
            }
            slot = match deadline {
                None => self
                    .shared
                    .job_end_changed
                    .wait(slot)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        return Err(HostError::TimedOut {
                            waited: started.elapsed(),
                        });
                    };
                    self.shared
                        .job_end_changed
                        .wait_timeout(slot, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Waits for the registrations that library constructors made through the C
    /// ABI (`herald_register_on_load`) on this thread, or on every thread, while
    /// no herald load or invocation was around them to wait (a library loaded
    /// with plain `dlopen` or Python's `ctypes`). Returns how many it waited
    /// for, or the first failure (naming the registration, the nodes and why);
    /// later failures are logged.
    pub fn settle_unawaited(&self, all_threads: bool) -> Result<usize, HostError> {
        let entries = self.shared.unawaited.take(all_threads);
        let count = entries.len();
        let mut first = None;
        for entry in entries {
            let outcome = match entry {
                crate::unawaited::Entry::Handle(handle) => {
                    let outcome = self.shared.wait_registration(handle, None).map(|_| ());
                    self.shared.release_registration(handle);
                    outcome
                }
                crate::unawaited::Entry::Refused(text) => Err(HostError::Refused(text)),
            };
            if let Err(error) = outcome {
                if first.is_some() {
                    tracing::error!(%error, "herald: another registration from a constructor failed");
                } else {
                    first = Some(error);
                }
            }
        }
        first.map_or(Ok(count), Err)
    }

    /// How many registrations [`settle_unawaited`](Self::settle_unawaited)
    /// would wait for.
    pub fn unawaited_count(&self, all_threads: bool) -> usize {
        self.shared.unawaited.count(all_threads)
    }

    /// Takes over a handle `herald_register_on_load` got (0 if the registration
    /// was refused at once, with `refused` saying why): a top-level one made
    /// outside any herald load is kept for [`settle_unawaited`](Self::settle_unawaited);
    /// the others are awaited by the load or invocation around them.
    pub(crate) fn adopt_on_load(&self, handle: u64, refused: Option<String>) {
        let placement = context::placement(self.shared.id);
        let unobserved = placement.parent.is_none() && !placement.loading;
        let entry = match (handle, refused) {
            // Kept wherever it is made: the load, invocation or task around it
            // (or the next safe point) fails with it.
            (0, refused) => crate::unawaited::Entry::Refused(
                refused.unwrap_or_else(|| "the registration was refused".into()),
            ),
            (handle, _) if unobserved => crate::unawaited::Entry::Handle(handle),
            (handle, _) => return self.shared.release_registration(handle),
        };
        let shared = &self.shared;
        let done_ok = |h| matches!(shared.try_registration(h), Some(Ok(_)));
        for finished in shared.unawaited.push(entry, done_ok) {
            shared.release_registration(finished);
        }
    }

    /// Blocks until every registration requested and every task launched on this
    /// node so far has its answer (released handles included), or until the job
    /// declares this node down (then nothing more will be answered).
    pub fn quiesce(&self) -> Result<(), HostError> {
        self.flush();
        // A fenced node's event loop has stopped: nothing more will be answered,
        // which is as settled as it gets.
        let gone = || match self.shared.stopped_error() {
            HostError::Fenced { .. } => Ok(()),
            other => Err(other),
        };
        let (done, answered) = crossbeam_channel::bounded(1);
        if !self.shared.send(Command::Quiesce(done)) {
            return gone();
        }
        answered.recv().or_else(|_| gone())
    }

    /// This node's counters.
    pub fn stats(&self) -> RuntimeStats {
        let mut stats = self
            .shared
            .counters
            .snapshot(self.shared.node.0, self.shared.nodes());
        stats.invocations_waiting = self.shared.waits_in_invocations() as u64;
        stats
    }

    /// Number of task names registered on this node.
    pub fn registered_tasks(&self) -> usize {
        self.shared.tasks.len()
    }

    /// Whether the runtime has stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// Stops the event loop (queued frames are still sent) and waits for it.
    /// Pending handles fail with [`HostError::Stopped`]. Worker threads still
    /// running user code finish on their own.
    pub fn shutdown(&self) {
        self.shared.send(Command::Shutdown);
        let thread = self
            .event_loop
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("herald: the event loop panicked");
            }
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("node", &self.shared.node.0)
            .field("nodes", &self.shared.nodes())
            .finish_non_exhaustive()
    }
}
