//! Waits that could never end, across the threads and invocations of one node,
//! are refused with `WouldDeadlock` instead of hanging; waits that can end are
//! not. Runtimes connected in memory, with a custom executor; the invocations
//! are brought to the state under test with condition variables, never sleeps.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use herald_host::{
    CodeRef, Executor, HostConfig, HostError, RegistrationHandle, Runtime, TaskCode, TaskVariant,
};

const GUARD: Duration = Duration::from_secs(30);

/// One node's executor. Payloads:
/// * `"a"` / `"b"`: meet the other at the node's rendezvous, then register the
///   other nested and wait for it;
/// * `"late-a"`: wait for the node's top-level handle of `"late-b"`;
/// * `"late-b"`: once an invocation of this node blocks in a wait, register
///   `"late-a"` nested (closing a cycle through that wait), and return;
/// * `"task-a"` / `"task-b"`: meet the other, then launch the task `"echo"` to
///   this node and wait for it (the core holds it until the other is done here).
struct Cycles {
    runtime: OnceLock<Runtime>,
    /// How each waiting payload's wait ended: "ok", or the refusal's reason.
    outcomes: Mutex<HashMap<String, Result<(), String>>>,
    rendezvous: (Mutex<u32>, Condvar),
    late_b: OnceLock<RegistrationHandle>,
    late_b_set: (Mutex<bool>, Condvar),
}

impl Executor for Cycles {
    fn invoke(&self, payload: &[u8], _args: &[u8]) -> Result<(), String> {
        let payload = String::from_utf8_lossy(payload).into_owned();
        let runtime = self.runtime.get().ok_or("no runtime")?;
        let outcome = match payload.as_str() {
            "a" | "b" => {
                self.meet()?;
                let other = if payload == "a" { "b" } else { "a" };
                let handle = runtime.register_global(custom(other), vec![], None);
                handle.wait_timeout(GUARD)
            }
            "late-a" => {
                let (set, changed) = &self.late_b_set;
                let set = set.lock().unwrap();
                let set = changed.wait_timeout_while(set, GUARD, |s| !*s).unwrap().0;
                if !*set {
                    return Err("the test never handed over late-b's handle".into());
                }
                drop(set);
                self.late_b.get().ok_or("no handle")?.wait_timeout(GUARD)
            }
            "task-a" | "task-b" => {
                self.meet()?;
                let node = runtime.node_id();
                let outcome = runtime
                    .launch(node, "cycles.echo", vec![])
                    .wait_timeout(GUARD);
                let outcome = match outcome {
                    Ok(_) => Ok(()),
                    Err(HostError::WouldDeadlock { reason }) => Err(reason),
                    Err(other) => return Err(format!("{payload}: unexpected {other}")),
                };
                self.outcomes.lock().unwrap().insert(payload, outcome);
                return Ok(());
            }
            "late-b" => {
                let deadline = Instant::now() + GUARD;
                while runtime.stats().invocations_waiting == 0 {
                    if Instant::now() > deadline {
                        return Err("late-a never started waiting".into());
                    }
                    std::thread::yield_now();
                }
                drop(runtime.register_global(custom("late-a"), vec![], None));
                return Ok(());
            }
            other => return Err(format!("unknown payload {other}")),
        };
        let outcome = match outcome {
            Ok(_) => Ok(()),
            Err(HostError::WouldDeadlock { reason }) => Err(reason),
            Err(other) => return Err(format!("{payload}: unexpected {other}")),
        };
        self.outcomes.lock().unwrap().insert(payload, outcome);
        Ok(())
    }

    fn run_task(&self, payload: &[u8], _args: &[u8]) -> Result<Vec<u8>, String> {
        Ok(payload.to_vec())
    }
}

impl Cycles {
    /// Returns once two invocations of this node are here.
    fn meet(&self) -> Result<(), String> {
        let (arrived, changed) = &self.rendezvous;
        let mut arrived = arrived.lock().unwrap();
        *arrived += 1;
        changed.notify_all();
        let arrived = changed
            .wait_timeout_while(arrived, GUARD, |n| *n < 2)
            .unwrap()
            .0;
        if *arrived < 2 {
            return Err("the other invocation never started".into());
        }
        Ok(())
    }

    fn outcome(&self, payload: &str) -> Option<Result<(), String>> {
        self.outcomes.lock().unwrap().get(payload).cloned()
    }
}

fn custom(payload: &str) -> CodeRef {
    CodeRef::Custom {
        kind: "cycles".into(),
        payload: payload.as_bytes().to_vec(),
    }
}

fn cluster(nodes: u32) -> (Vec<Runtime>, Vec<Arc<Cycles>>) {
    let runtimes = Runtime::local_cluster(nodes, HostConfig::default()).expect("cluster");
    let executors = runtimes
        .iter()
        .map(|runtime| {
            let executor = Arc::new(Cycles {
                runtime: OnceLock::new(),
                outcomes: Mutex::new(HashMap::new()),
                rendezvous: (Mutex::new(0), Condvar::new()),
                late_b: OnceLock::new(),
                late_b_set: (Mutex::new(false), Condvar::new()),
            });
            let _ = executor.runtime.set(runtime.clone());
            runtime.register_executor("cycles", executor.clone());
            executor
        })
        .collect();
    (runtimes, executors)
}

/// The case: invocations A and B run at once on each node; A nests B
/// and waits for it, B nests A and waits for it. On every node exactly one of
/// the two waits is refused (the one that would close the cycle), the other
/// ends once the refused invocation returns, and both registrations complete.
#[test]
fn two_invocations_nesting_each_other_do_not_both_wait() {
    let (nodes, executors) = cluster(3);
    let a = nodes[0].register_global(custom("a"), vec![], None);
    let b = nodes[1].register_global(custom("b"), vec![], None);
    assert!(a.wait_timeout(GUARD).expect("A completes").is_ok());
    assert!(b.wait_timeout(GUARD).expect("B completes").is_ok());
    for (node, executor) in executors.iter().enumerate() {
        let outcomes = [executor.outcome("a"), executor.outcome("b")];
        let refused: Vec<&String> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().and_then(|o| o.as_ref().err()))
            .collect();
        let ended = outcomes
            .iter()
            .filter(|o| matches!(o, Some(Ok(()))))
            .count();
        assert_eq!(
            (refused.len(), ended),
            (1, 1),
            "node {node}: one wait refused, one ended: {outcomes:?}"
        );
        assert!(
            refused[0].contains("cannot finish before the invocation running on this thread"),
            "node {node}: {}",
            refused[0]
        );
        // The registration waited for is named by what it runs, not only its key.
        assert!(
            refused[0].contains("(cycles:a) cannot") || refused[0].contains("(cycles:b) cannot"),
            "node {node}: {}",
            refused[0]
        );
    }
    nodes.iter().for_each(Runtime::shutdown);
}

/// A's invocation blocks on a top-level registration B (allowed: nothing ties
/// B to A yet); then B's invocation nests A, which ties them in a cycle. The
/// blocked wait is woken with WouldDeadlock, and both registrations complete.
#[test]
fn a_cycle_closed_while_waiting_refuses_the_blocked_wait() {
    let (nodes, executors) = cluster(2);
    let a = nodes[0].register_global(custom("late-a"), vec![], None);
    for (node, executor) in nodes.iter().zip(&executors) {
        let b = node.register_global(custom("late-b"), vec![], None);
        assert!(executor.late_b.set(b).is_ok());
        let (set, changed) = &executor.late_b_set;
        *set.lock().unwrap() = true;
        changed.notify_all();
    }
    assert!(a.wait_timeout(GUARD).expect("A completes").is_ok());
    for (node, executor) in executors.iter().enumerate() {
        let handle = executor.late_b.get().expect("set");
        assert!(handle.wait_timeout(GUARD).expect("B completes").is_ok());
        match executor.outcome("late-a") {
            Some(Err(reason)) => assert!(reason.contains("closes a cycle"), "{reason}"),
            other => panic!("node {node}: late-a's wait should be refused: {other:?}"),
        }
        assert_eq!(nodes[node].stats().invocations_waiting, 0);
    }
    nodes.iter().for_each(Runtime::shutdown);
}

/// Invocations A and B run at once on each node and each launches a task to its
/// own node and waits for it; the core holds each task until the other
/// registration is done here. On every node exactly one wait is refused, the
/// other task runs once the refused invocation returns, and both complete.
#[test]
fn two_invocations_waiting_for_tasks_held_for_each_other_do_not_both_wait() {
    let (nodes, executors) = cluster(2);
    let echo = TaskVariant {
        name: "cycles.echo".into(),
        code: TaskCode::Custom {
            kind: "cycles".into(),
            payload: b"echo".to_vec(),
        },
    };
    let registered = nodes[0].register_task(echo).expect("register");
    assert!(registered.wait_timeout(GUARD).expect("registered").is_ok());
    let a = nodes[0].register_global(custom("task-a"), vec![], None);
    let b = nodes[1].register_global(custom("task-b"), vec![], None);
    assert!(a.wait_timeout(GUARD).expect("A completes").is_ok());
    assert!(b.wait_timeout(GUARD).expect("B completes").is_ok());
    for (node, executor) in executors.iter().enumerate() {
        let outcomes = [executor.outcome("task-a"), executor.outcome("task-b")];
        let refused: Vec<&String> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().and_then(|o| o.as_ref().err()))
            .collect();
        let ended = outcomes
            .iter()
            .filter(|o| matches!(o, Some(Ok(()))))
            .count();
        assert_eq!(
            (refused.len(), ended),
            (1, 1),
            "node {node}: one wait refused, one ended: {outcomes:?}"
        );
        assert!(refused[0].contains("task"), "node {node}: {}", refused[0]);
    }
    nodes.iter().for_each(Runtime::shutdown);
}
