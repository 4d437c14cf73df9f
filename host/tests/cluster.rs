//! The host's event loop, workers, nesting, deduplication, batching and launches,
//! on runtimes connected in memory, with a custom executor (no native code).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herald_host::{CodeRef, Executor, HostConfig, HostError, Runtime, TaskCode, TaskVariant};

const GUARD: Duration = Duration::from_secs(30);

/// Counts invocations per payload; "outer:<inner>" registers <inner> nested;
/// "self-wait" waits on its own key (must be refused); "fail" fails.
struct Recorder {
    runtime: OnceLock<Runtime>,
    seen: Mutex<HashMap<String, u32>>,
    refused: Mutex<Vec<String>>,
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
    let runtimes = Runtime::local_cluster(nodes, HostConfig::default()).expect("cluster");
    let recorders = runtimes
        .iter()
        .map(|runtime| {
            let recorder = Arc::new(Recorder {
                runtime: OnceLock::new(),
                seen: Mutex::new(HashMap::new()),
                refused: Mutex::new(Vec::new()),
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
    let HostError::Registration(result) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(result.failures.len(), 3);
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
