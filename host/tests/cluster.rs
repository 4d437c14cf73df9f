//! The host's event loop, workers, nesting, deduplication, batching and launches,
//! on runtimes connected in memory, with a custom executor (no native code).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use herald_host::{
    CodeRef, Executor, HostConfig, HostError, JobEnd, RegistrationHandle, Runtime, TaskCode,
    TaskVariant,
};

const GUARD: Duration = Duration::from_secs(30);

/// Counts invocations per payload; "outer:<inner>" registers <inner> nested;
/// "self-wait" waits on its own key (must be refused); "fail" fails. The task
/// "gate" returns only once the test opens the gate.
struct Recorder {
    runtime: OnceLock<Runtime>,
    seen: Mutex<HashMap<String, u32>>,
    refused: Mutex<Vec<String>>,
    gate: (Mutex<bool>, Condvar),
}

impl Executor for Recorder {
    fn invoke(&self, payload: &[u8], args: &[u8]) -> Result<(), String> {
        let payload = String::from_utf8_lossy(payload).into_owned();
        *self
            .seen
            .lock()
            .unwrap()
            .entry(payload.clone())
            .or_default() += 1;
        let runtime = self.runtime.get().expect("set");
        if let Some(inner) = payload.strip_prefix("outer:") {
            let handle = runtime.register_global(custom(inner), args.to_vec(), None);
            // Waiting for a nested registration is fine: it runs on another worker.
            let _ = handle.wait_timeout(GUARD).map_err(|e| e.to_string())?;
        }
        if payload == "self-wait" {
            let again = runtime.register_global(custom("self-wait"), args.to_vec(), None);
            match again.wait_timeout(GUARD) {
                Err(HostError::WouldDeadlock { reason }) => {
                    self.refused.lock().unwrap().push(reason)
                }
                other => return Err(format!("expected WouldDeadlock, got {other:?}")),
            }
        }
        if payload == "fail" {
            return Err("failed on purpose".into());
        }
        Ok(())
    }

    fn run_task(&self, payload: &[u8], args: &[u8]) -> Result<Vec<u8>, String> {
        if payload == b"gate" {
            let (open, opened) = &self.gate;
            let open = open.lock().unwrap();
            let (open, _) = opened.wait_timeout_while(open, GUARD, |o| !*o).unwrap();
            if !*open {
                return Err(format!("the gate stayed shut for {GUARD:?}"));
            }
        }
        let node = self.runtime.get().expect("set").node_id();
        Ok(format!("{}:{}:{node}", String::from_utf8_lossy(payload), args.len()).into_bytes())
    }
}

fn custom(payload: &str) -> CodeRef {
    CodeRef::Custom {
        kind: "rec".into(),
        payload: payload.as_bytes().to_vec(),
    }
}

fn cluster(nodes: u32) -> (Vec<Runtime>, Vec<Arc<Recorder>>) {
    cluster_with(nodes, HostConfig::default())
}

fn cluster_with(nodes: u32, config: HostConfig) -> (Vec<Runtime>, Vec<Arc<Recorder>>) {
    let runtimes = Runtime::local_cluster(nodes, config).expect("cluster");
    let recorders = runtimes
        .iter()
        .map(|runtime| {
            let recorder = Arc::new(Recorder {
                runtime: OnceLock::new(),
                seen: Mutex::new(HashMap::new()),
                refused: Mutex::new(Vec::new()),
                gate: (Mutex::new(false), Condvar::new()),
            });
            let _ = recorder.runtime.set(runtime.clone());
            runtime.register_executor("rec", recorder.clone());
            recorder
        })
        .collect();
    (runtimes, recorders)
}

fn count(recorder: &Recorder, payload: &str) -> u32 {
    recorder
        .seen
        .lock()
        .unwrap()
        .get(payload)
        .copied()
        .unwrap_or(0)
}

/// Registers task "gated" on every node (the handle is the caller's to keep): it
/// returns once the test opens the gate of the recorder where it runs.
fn register_gated(node: &Runtime) -> RegistrationHandle {
    let gated = TaskVariant {
        name: "gated".into(),
        code: TaskCode::Custom {
            kind: "rec".into(),
            payload: b"gate".to_vec(),
        },
    };
    node.register_task(gated).expect("register")
}

/// Lets every "gated" task on `recorder`'s node return.
fn open_gate(recorder: &Recorder) {
    let (open, opened) = &recorder.gate;
    *open.lock().unwrap() = true;
    opened.notify_all();
}

#[test]
fn nested_registrations_run_once_everywhere_and_never_block() {
    let (nodes, recorders) = cluster(5);
    let result = nodes[3]
        .register_global(custom("outer:inner"), b"a".to_vec(), None)
        .wait_timeout(GUARD)
        .expect("completes");
    assert!(result.is_ok());
    for recorder in &recorders {
        assert_eq!(count(recorder, "outer:inner"), 1);
        assert_eq!(count(recorder, "inner"), 1, "nested ran once on every node");
    }
    nodes.iter().for_each(Runtime::shutdown);
}

#[test]
fn concurrent_requesters_share_one_invocation_per_node() {
    let (nodes, recorders) = cluster(4);
    let handles: Vec<_> = nodes
        .iter()
        .map(|n| n.register_global(custom("shared"), vec![], Some("tag".into())))
        .collect();
    for handle in &handles {
        let _ = handle.wait_timeout(GUARD).expect("completes");
    }
    for recorder in &recorders {
        assert_eq!(count(recorder, "shared"), 1);
    }
    nodes.iter().for_each(Runtime::shutdown);
}

#[test]
fn waiting_on_the_enclosing_registration_is_refused() {
    let (nodes, recorders) = cluster(2);
    let _ = nodes[0]
        .register_global(custom("self-wait"), vec![], None)
        .wait_timeout(GUARD)
        .expect("completes");
    for recorder in &recorders {
        let refused = recorder.refused.lock().unwrap();
        assert_eq!(refused.len(), 1, "each node refused the wait once");
        assert!(
            refused[0].contains("cannot finish before the invocation"),
            "{}",
            refused[0]
        );
    }
    nodes.iter().for_each(Runtime::shutdown);
}

#[test]
fn failures_name_every_node() {
    let (nodes, _) = cluster(3);
    let error = nodes[1]
        .register_global(custom("fail"), vec![], None)
        .wait_timeout(GUARD)
        .expect_err("fails");
    let HostError::Registration { what, result } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(result.failures.len(), 3);
    // Named by its code, not by a key.
    assert_eq!(what, "rec:fail");
    assert!(
        error
            .to_string()
            .starts_with("registration of rec:fail failed"),
        "{error}"
    );
    assert!(
        error.to_string().contains("node 2: failed on purpose"),
        "{error}"
    );
    nodes.iter().for_each(Runtime::shutdown);
}

#[test]
fn launches_run_registered_tasks_and_refuse_unknown_ones() {
    let (nodes, _) = cluster(3);
    let variant = TaskVariant {
        name: "echo".into(),
        code: TaskCode::Custom {
            kind: "rec".into(),
            payload: b"echo".to_vec(),
        },
    };
    let _handle = nodes[0].register_task(variant).expect("register");
    // No wait: the launch carries the registration as a requirement.
    for target in 0..3 {
        let result = nodes[0]
            .launch(target, "echo", vec![1, 2])
            .wait_timeout(GUARD);
        assert_eq!(
            result.expect("runs"),
            format!("echo:2:{target}").into_bytes()
        );
    }
    let error = nodes[0]
        .launch(2, "nope", vec![])
        .wait_timeout(GUARD)
        .expect_err("unknown");
    assert!(
        error
            .to_string()
            .contains("task 'nope' is not registered on node 2"),
        "{error}"
    );
    nodes.iter().for_each(Runtime::shutdown);
}

#[test]
fn many_variants_travel_in_few_messages() {
    let (nodes, _) = cluster(4);
    let handles: Vec<_> = (0..20_000)
        .map(|i| {
            nodes[0]
                .register_task(TaskVariant {
                    name: format!("t{i}"),
                    code: TaskCode::Custom {
                        kind: "rec".into(),
                        payload: b"t".to_vec(),
                    },
                })
                .expect("register")
        })
        .collect();
    let _ = handles[0].wait_timeout(GUARD).expect("registered");
    let _ = handles
        .last()
        .expect("some")
        .wait_timeout(GUARD)
        .expect("registered");
    for node in &nodes {
        assert_eq!(node.registered_tasks(), 20_000);
    }
    let sent: u64 = nodes.iter().map(|n| n.stats().messages_sent).sum();
    assert!(sent < 200, "{sent} messages for 20000 variants");
    nodes.iter().for_each(Runtime::shutdown);
}

#[test]
fn job_end_reaches_every_node() {
    let (nodes, _) = cluster(3);
    nodes[0].end_job().expect("ended");
    for node in &nodes[1..] {
        let end = node.wait_for_job_end(Some(GUARD)).expect("ends");
        assert_eq!(end, herald_host::JobEnd::Ended { by: 0 });
    }
    nodes.iter().for_each(Runtime::shutdown);
}

#[test]
fn an_open_batch_goes_out_when_due_without_a_wait_or_launch() {
    let (nodes, _) = cluster(2);
    for round in 0..20 {
        // Work that the event loop finishes, and then goes idle.
        let _ = nodes[0]
            .register_global(custom(&format!("busy-{round}")), vec![], None)
            .wait_timeout(GUARD)
            .expect("completes");
        // Nothing else happens on node 0 after this: no wait, no launch, no frame.
        // The event loop must still wake when the batch is due (batch_idle) and send it.
        drop(
            nodes[0]
                .register_task(TaskVariant {
                    name: format!("quiet-{round}"),
                    code: TaskCode::Custom {
                        kind: "rec".into(),
                        payload: b"quiet".to_vec(),
                    },
                })
                .expect("register"),
        );
        // Polling with a deadline: a bound on a failure, not a wait for something.
        let deadline = std::time::Instant::now() + GUARD;
        while nodes[1].registered_tasks() <= round {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the batch was never sent (node 1 lacks it after {GUARD:?})"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    nodes.iter().for_each(Runtime::shutdown);
}

#[test]
fn try_result_never_blocks_and_agrees_with_wait() {
    let (nodes, recorders) = cluster(2);
    let _registered = register_gated(&nodes[0]);
    let task = nodes[0].launch(1, "gated", vec![]);
    assert_eq!(
        task.try_result(),
        None,
        "the task cannot finish: its gate is shut"
    );
    open_gate(&recorders[1]);
    let bytes = task.wait_timeout(GUARD).expect("runs once the gate opens");
    assert_eq!(task.try_result(), Some(Ok(bytes)));

    // A registration that failed is an error for try_result as for wait.
    let failed = nodes[0].register_global(custom("fail"), vec![], None);
    let waited = failed.wait_timeout(GUARD).expect_err("fails");
    assert!(
        matches!(waited, HostError::Registration { .. }),
        "{waited:?}"
    );
    assert_eq!(failed.try_result(), Some(Err(waited)));

    nodes.iter().for_each(Runtime::shutdown);
    // After shutdown a pending handle does not wait: it reports the stop.
    let orphan = nodes[0].launch(1, "gated", vec![]);
    assert_eq!(orphan.try_result(), Some(Err(HostError::Stopped)));
}

/// Runs invocations until the test lets them finish.
struct Blocker(Mutex<bool>, Condvar);

impl Executor for Blocker {
    fn invoke(&self, _payload: &[u8], _args: &[u8]) -> Result<(), String> {
        let open = self.0.lock().unwrap();
        let (open, _) = self.1.wait_timeout_while(open, GUARD, |o| !*o).unwrap();
        if *open {
            Ok(())
        } else {
            Err(format!("still blocked after {GUARD:?}"))
        }
    }
}

#[test]
fn dropping_the_last_runtime_stops_it() {
    let runtime = Runtime::single_process(HostConfig::default()).expect("start");
    let blocker = Arc::new(Blocker(Mutex::new(false), Condvar::new()));
    runtime.register_executor("block", blocker.clone());
    let code = CodeRef::Custom {
        kind: "block".into(),
        payload: vec![],
    };
    let pending = runtime.register_global(code, vec![], None);
    let clone = runtime.clone();
    drop(runtime);
    assert!(!clone.is_stopped(), "a clone still drives the node");
    drop(clone);
    // The event loop stops: the pending handle fails instead of waiting for ever.
    assert_eq!(pending.wait_timeout(GUARD), Err(HostError::Stopped));
    *blocker.0.lock().unwrap() = true;
    blocker.1.notify_all();
}

#[test]
fn herald_own_tasks_cannot_be_launched() {
    let (nodes, _) = cluster(2);
    let error = nodes[0]
        .launch(1, "herald.end_job", vec![])
        .wait_timeout(GUARD)
        .expect_err("refused");
    assert!(
        matches!(&error, HostError::InvalidArgument(text) if text.contains("reserved for herald")),
        "{error:?}"
    );
    // Node 1 did not end its job.
    assert!(matches!(
        nodes[1].wait_for_job_end(Some(Duration::ZERO)),
        Err(HostError::TimedOut { .. })
    ));
    nodes.iter().for_each(Runtime::shutdown);
}

/// A transport that drops every frame: the peer it would reach never answers.
struct Silent;

impl herald_host::Transport for Silent {
    fn send(&self, _to: u32, _frame: Vec<u8>) {}
}

/// A peer that sends a frame no correct node sends is treated as down: the
/// registration completes naming it, instead of waiting for it forever.
#[test]
fn a_peer_sending_garbage_is_named_unreachable_not_waited_for() {
    let (events, runtime) = silent_node(0);
    let handle = runtime.register_global(custom("garbage-peer"), vec![], None);
    events
        .send(herald_tcp::MeshEvent::Frame {
            from: 1,
            bytes: vec![0xff, 0x01, 0x02],
        })
        .expect("event loop listening");
    match handle.wait_timeout(GUARD) {
        Err(HostError::Registration { result, .. }) => {
            assert_eq!(result.unreachable, [herald_core::NodeId(1)]);
            assert!(result.failures.is_empty());
        }
        other => panic!("expected node 1 named unreachable, got {other:?}"),
    }
    runtime.shutdown();
}

#[test]
fn finalize_waits_for_released_launches_then_ends_the_job_on_every_node() {
    let (nodes, recorders) = cluster(3);
    let _registered = register_gated(&nodes[0]);
    // Fire and forget: the handle is released at once, the task still runs.
    drop(nodes[0].launch(1, "gated", vec![]));
    let (left_tx, left) = crossbeam_channel::unbounded();
    let finalizers: Vec<_> = nodes
        .iter()
        .cloned()
        .map(|node| {
            let left_tx = left_tx.clone();
            std::thread::spawn(move || {
                let outcome = node.finalize();
                let _ = left_tx.send(node.node_id());
                (outcome, node.is_stopped())
            })
        })
        .collect();
    // Node 0's own launch is unanswered while the gate is shut, so no node may
    // leave: node 0 has not arrived, and the others wait for it. (A bounded look
    // for what must not happen; nothing waits on it.)
    assert_eq!(
        left.recv_timeout(Duration::from_millis(300)).ok(),
        None,
        "a node left finalize while node 0's launch was unanswered"
    );
    open_gate(&recorders[1]);
    for (node, finalizer) in finalizers.into_iter().enumerate() {
        let (outcome, stopped) = finalizer.join().expect("no panic");
        assert_eq!(outcome, Ok(()), "node {node}");
        assert!(stopped, "node {node}'s runtime is stopped");
    }
}

/// A node the job declares down while it has work outstanding leaves finalize
/// with the reason, instead of waiting for answers that will never come.
#[test]
fn a_fenced_node_leaves_finalize_with_the_reason() {
    let (events, runtime) = silent_node(1);
    // Never answered: node 0 is silent.
    let _pending = runtime.register_global(custom("never-answered"), vec![], None);
    tell_down(&events, 0, 1, 0, "missed its heartbeats");
    // A fenced node's job is over for it.
    assert!(matches!(
        runtime.wait_for_job_end(Some(GUARD)),
        Ok(herald_host::JobEnd::Fenced { by: 0, .. })
    ));
    let (outcome_tx, outcome) = crossbeam_channel::unbounded();
    {
        let runtime = runtime.clone();
        std::thread::spawn(move || outcome_tx.send(runtime.finalize()));
    }
    match outcome.recv_timeout(GUARD).expect("finalize returned") {
        Err(HostError::Finalize(why)) => assert!(
            why.contains("declared down by node 0") && why.contains("missed its heartbeats"),
            "{why}"
        ),
        other => panic!("expected the fence's reason, got {other:?}"),
    }
    assert!(runtime.is_stopped());
}

/// A node declared down while its finalize waits for node 0 to take its arrival
/// fails the collective with the reason (`HostError::Finalize`, which the C ABI
/// returns as HERALD_ERR_FAILED), not with the bare fence of the wait.
#[test]
fn a_node_fenced_while_it_arrives_leaves_finalize_with_the_reason() {
    let (events, runtime) = silent_node(1);
    let (outcome_tx, outcome) = crossbeam_channel::unbounded();
    {
        let runtime = runtime.clone();
        std::thread::spawn(move || outcome_tx.send(runtime.finalize()));
    }
    // Its arrival is launched to node 0, which never answers.
    let deadline = std::time::Instant::now() + GUARD;
    while runtime.stats().launches == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "finalize never arrived"
        );
        std::thread::yield_now();
    }
    tell_down(&events, 0, 1, 0, "missed its heartbeats");
    match outcome.recv_timeout(GUARD).expect("finalize returned") {
        Err(HostError::Finalize(why)) => assert!(
            why.contains("declared down by node 0") && why.contains("missed its heartbeats"),
            "{why}"
        ),
        other => panic!("expected the fence's reason, got {other:?}"),
    }
}

/// At one end of a broken link to node 0, a node declares node 0 down itself
/// (the job's end: node 0 lost), then hears the job's verdict that it is down
/// (from node 2): the fence replaces the loss of node 0, and `wait_for_verdict`
/// returns it, so the node can end as one the job declared down.
#[test]
fn a_fence_heard_after_losing_node_0_replaces_that_end() {
    let (events, runtime) = silent_node_of(1, 3);
    events
        .send(herald_tcp::MeshEvent::PeerDown {
            node: 0,
            reason: "link cut".into(),
        })
        .expect("event loop listening");
    assert!(matches!(
        runtime.wait_for_job_end(Some(GUARD)),
        Ok(herald_host::JobEnd::CoordinatorLost { .. })
    ));
    tell_down(&events, 2, 1, 0, "missed its heartbeats");
    match runtime.wait_for_verdict(GUARD) {
        Ok(herald_host::JobEnd::Fenced { by: 0, reason }) => {
            assert!(reason.contains("missed its heartbeats"), "{reason}")
        }
        other => panic!("expected the fence by node 0, got {other:?}"),
    }
    runtime.shutdown();
}

/// Node `node` of a two-node job whose other node never sends anything (frames
/// are injected through the returned sender), accepting every "rec" invocation.
fn silent_node(node: u32) -> (crossbeam_channel::Sender<herald_tcp::MeshEvent>, Runtime) {
    silent_node_of(node, 2)
}

/// Hands the node listening on `events` a frame from `from` with the news that
/// `by` declared `node` down for `reason`.
fn tell_down(
    events: &crossbeam_channel::Sender<herald_tcp::MeshEvent>,
    from: u32,
    node: u32,
    by: u32,
    reason: &str,
) {
    let down = herald_core::Message::Down {
        node: herald_core::NodeId(node),
        by: herald_core::NodeId(by),
        reason: reason.into(),
    };
    for bytes in herald_core::encode_frames(&[down], 1 << 20).expect("encodes") {
        events
            .send(herald_tcp::MeshEvent::Frame { from, bytes })
            .expect("event loop listening");
    }
}

/// Node `node` of a job of `nodes` whose other nodes never send anything.
fn silent_node_of(
    node: u32,
    nodes: u32,
) -> (crossbeam_channel::Sender<herald_tcp::MeshEvent>, Runtime) {
    let (events, event_receiver) = crossbeam_channel::unbounded();
    let runtime = Runtime::start_with_transport(
        Box::new(Silent),
        event_receiver,
        node,
        nodes,
        HostConfig::default(),
    )
    .expect("start");
    runtime.register_executor("rec", Arc::new(Accepting));
    (events, runtime)
}

struct Accepting;

impl Executor for Accepting {
    fn invoke(&self, _payload: &[u8], _args: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// What a [`Recording`] transport was asked to do.
#[derive(Debug)]
enum Sent {
    Frame(u32, Vec<herald_core::Message>),
    Close(u32),
}

/// A transport that reports every frame (decoded) and every close, in order.
struct Recording(crossbeam_channel::Sender<Sent>);

impl herald_host::Transport for Recording {
    fn send(&self, to: u32, frame: Vec<u8>) {
        let messages = herald_core::decode_frame(&frame, herald_core::DEFAULT_MAX_FRAME_BYTES)
            .expect("the host sends valid frames");
        let _ = self.0.send(Sent::Frame(to, messages));
    }

    fn close_peer(&self, to: u32) {
        let _ = self.0.send(Sent::Close(to));
    }
}

/// A lost link becomes the job's view: node 0 tells every node (node 2 itself
/// included) that node 2 is down, and closes the link to node 2 only after the
/// frame carrying that news was handed to the transport.
#[test]
fn a_lost_link_is_announced_to_everyone_before_the_link_closes() {
    let (sent_tx, sent) = crossbeam_channel::unbounded();
    let (events, event_receiver) = crossbeam_channel::unbounded();
    let runtime = Runtime::start_with_transport(
        Box::new(Recording(sent_tx)),
        event_receiver,
        0,
        3,
        HostConfig::default(),
    )
    .expect("start");
    events
        .send(herald_tcp::MeshEvent::PeerDown {
            node: 2,
            reason: "connection reset".into(),
        })
        .expect("event loop listening");
    let mut told = Vec::new();
    loop {
        match sent.recv_timeout(GUARD).expect("the link to node 2 closes") {
            Sent::Frame(to, messages) => {
                for message in messages {
                    if let herald_core::Message::Down { node, by, reason } = message {
                        assert_eq!((node.0, by.0), (2, 0));
                        assert!(reason.contains("connection reset"), "{reason}");
                        told.push(to);
                    }
                }
            }
            Sent::Close(2) => break,
            Sent::Close(other) => panic!("closed the link to node {other}"),
        }
    }
    told.sort_unstable();
    assert_eq!(
        told,
        [1, 2],
        "node 1 and node 2 itself hear it before the close"
    );
    runtime.shutdown();
}

/// Node 1 hears that node 0 declared it down: it stops, every waiter gets an
/// error naming who declared it down and why, and the job end says so.
#[test]
fn a_fenced_node_stops_and_its_waiters_learn_who_and_why() {
    let (events, runtime) = silent_node(1);
    let handle = runtime.register_global(custom("fenced"), vec![], None);
    let task = runtime.launch(0, "anything", vec![]);
    tell_down(&events, 0, 1, 0, "sent nothing for 10 s");
    let fenced = |error: HostError| {
        assert!(
            matches!(&error, HostError::Fenced { by: 0, reason } if reason.contains("sent nothing")),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("declared down by node 0"),
            "{error}"
        );
    };
    fenced(handle.wait_timeout(GUARD).expect_err("fenced"));
    fenced(task.wait_timeout(GUARD).expect_err("fenced"));
    assert!(matches!(
        runtime.wait_for_job_end(Some(GUARD)),
        Ok(JobEnd::Fenced { by: 0, .. })
    ));
    fenced(
        runtime
            .register_global(custom("after"), vec![], None)
            .wait_timeout(GUARD)
            .expect_err("nothing runs after the fence"),
    );
    runtime.shutdown();
}

/// A runtime started with `hold_events` handles no frame from another node until
/// `open_events`: the registration cannot complete before, and does after.
#[test]
fn held_events_wait_for_open_events() {
    let config = HostConfig {
        hold_events: true,
        ..HostConfig::default()
    };
    let (nodes, recorders) = cluster_with(2, config);
    let handle = nodes[0].register_global(custom("held"), b"x".to_vec(), None);
    // A bounded look for something that must not happen, not a synchronisation.
    assert!(
        handle.wait_timeout(Duration::from_millis(300)).is_err(),
        "completed while node 1 held its frames"
    );
    assert_eq!(count(&recorders[1], "held"), 0, "node 1 ran it while held");
    for node in &nodes {
        node.open_events();
    }
    let result = handle.wait().expect("completes once the frames flow");
    assert!(
        result.failures.is_empty() && result.unreachable.is_empty(),
        "{result:?}"
    );
    assert_eq!(count(&recorders[1], "held"), 1);
    for node in nodes {
        node.shutdown();
    }
}

/// Node-down hooks hear of every node that goes down in the job's view.
#[test]
fn node_down_hooks_hear_of_a_node_going_down() {
    let (nodes, _recorders) = cluster(3);
    let (down_tx, down) = crossbeam_channel::unbounded();
    nodes[0].on_node_down(Arc::new(move |node| {
        let _ = down_tx.send(node);
    }));
    nodes[2].shutdown();
    assert_eq!(down.recv_timeout(GUARD).expect("the hook ran"), 2);
    for node in &nodes[..2] {
        node.shutdown();
    }
}

/// A hook that panics is the program's bug, not the protocol's: the panic is
/// logged, the next hook still runs, and the node goes on working.
#[test]
fn a_panicking_hook_does_not_stop_the_node() {
    let (nodes, recorders) = cluster(3);
    nodes[0].on_node_down(Arc::new(|_| panic!("a hook's bug")));
    let (down_tx, down) = crossbeam_channel::unbounded();
    nodes[0].on_node_down(Arc::new(move |node| {
        let _ = down_tx.send(node);
    }));
    nodes[2].shutdown();
    assert_eq!(down.recv_timeout(GUARD).expect("the second hook ran"), 2);
    // Node 2 is down, so the result names it; what matters is that it comes.
    match nodes[0]
        .register_global(custom("after-panic"), vec![], None)
        .wait_timeout(GUARD)
    {
        Ok(_) | Err(HostError::Registration { .. }) => {}
        Err(other) => panic!("the node stopped working after its hook panicked: {other}"),
    }
    assert_eq!(count(&recorders[1], "after-panic"), 1);
    for node in &nodes[..2] {
        node.shutdown();
    }
}

/// `quiesce` never hangs on a runtime that stopped: a `quiesce` waiting for a
/// task when the runtime shuts down returns (its answer channel goes with the
/// loop), and one called after `shutdown` returns at once.
#[test]
fn quiesce_returns_when_the_runtime_stops() {
    let (nodes, recorders) = cluster(2);
    let _registered = register_gated(&nodes[0]);
    let gated = nodes[0].launch(1, "gated", vec![]);
    let waiting = {
        let node = nodes[0].clone();
        std::thread::spawn(move || node.quiesce())
    };
    nodes[0].shutdown();
    assert!(matches!(waiting.join().unwrap(), Err(HostError::Stopped)));
    assert!(matches!(nodes[0].quiesce(), Err(HostError::Stopped)));
    assert!(matches!(gated.wait_timeout(GUARD), Err(HostError::Stopped)));
    open_gate(&recorders[1]);
    nodes.iter().for_each(Runtime::shutdown);
}

/// A rank that goes down without calling finalize makes finalize fail on every
/// survivor, naming it, not only on node 0 (which learns it first-hand).
#[test]
fn finalize_fails_on_every_survivor_naming_a_node_that_went_down() {
    let (nodes, _recorders) = cluster(3);
    nodes[2].shutdown();
    let finalizers: Vec<_> = nodes[..2]
        .iter()
        .cloned()
        .map(|node| std::thread::spawn(move || node.finalize()))
        .collect();
    for (node, finalizer) in finalizers.into_iter().enumerate() {
        match finalizer.join().expect("no panic") {
            Err(HostError::Finalize(why)) => assert!(
                why.contains("node(s) [2] went down before calling herald_finalize"),
                "node {node}: {why}"
            ),
            other => panic!("node {node}: expected node 2 named, got {other:?}"),
        }
    }
}
