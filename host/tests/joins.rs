//! Runtimes joining a running in-process job: the joiner replays the job's
//! registrations in order before any task runs there, a replay that fails
//! refuses the join naming the joiner and the registration, and views change
//! everywhere they are learned.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::View;
use herald_host::{
    CodeRef, Executor, HostConfig, HostError, LocalCluster, Runtime, TaskCode, TaskVariant,
};

const GUARD: Duration = Duration::from_secs(30);

/// Records every invocation and task run, in order; fails invocations of
/// `fail_on`.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    fail_on: Option<&'static str>,
}

impl Executor for Recorder {
    fn invoke(&self, payload: &[u8], _args: &[u8]) -> Result<(), String> {
        let payload = String::from_utf8_lossy(payload).into_owned();
        self.events
            .lock()
            .unwrap()
            .push(format!("invoke {payload}"));
        if self.fail_on == Some(payload.as_str()) {
            return Err(format!("cannot load {payload} here"));
        }
        Ok(())
    }

    fn run_task(&self, payload: &[u8], _args: &[u8]) -> Result<Vec<u8>, String> {
        let payload = String::from_utf8_lossy(payload).into_owned();
        self.events.lock().unwrap().push(format!("task {payload}"));
        Ok(payload.into_bytes())
    }
}

fn custom(payload: &str) -> CodeRef {
    CodeRef::Custom {
        kind: "rec".into(),
        payload: payload.as_bytes().to_vec(),
    }
}

fn started(nodes: u32) -> LocalCluster {
    let cluster = LocalCluster::start(nodes, HostConfig::default()).expect("cluster");
    for runtime in cluster.runtimes() {
        runtime.register_executor("rec", Arc::new(Recorder::default()));
    }
    cluster
}

/// The job's history: two registrations and a task registered globally.
fn history(first: &Runtime) {
    for payload in ["libone", "libtwo"] {
        let result = first
            .register_global(custom(payload), vec![], None)
            .wait_timeout(GUARD)
            .expect("answered");
        assert!(result.is_ok(), "{result:?}");
    }
    let task = TaskVariant {
        name: "square".into(),
        code: TaskCode::Custom {
            kind: "rec".into(),
            payload: b"square".to_vec(),
        },
    };
    let handle = first.register_task(task).expect("registered");
    assert!(handle.wait_timeout(GUARD).expect("answered").is_ok());
}

#[test]
fn a_joiner_replays_the_log_in_order_and_then_runs_a_launched_task() {
    let mut cluster = started(3);
    history(&cluster.runtimes()[1]);
    let views: Arc<Mutex<Vec<View>>> = Arc::default();
    let seen = Arc::clone(&views);
    cluster.runtimes()[0].on_view_change(Arc::new(move |view| seen.lock().unwrap().push(view)));

    let recorder = Arc::new(Recorder::default());
    let executors: Vec<(String, Arc<dyn Executor>)> = vec![("rec".into(), recorder.clone())];
    let joiner = cluster
        .join_with(HostConfig::default(), executors)
        .expect("admitted");
    assert_eq!(joiner.node_id(), 3);
    assert_eq!(joiner.num_nodes(), 4);
    // Replayed in order before start_joining returned (the task batch registers
    // nothing through the executor).
    assert_eq!(
        *recorder.events.lock().unwrap(),
        ["invoke libone", "invoke libtwo"]
    );

    let first = &cluster.runtimes()[0];
    assert_eq!(first.num_nodes(), 4, "node 0 admitted it");
    assert!(views.lock().unwrap().iter().any(|v| v.size == 4));
    let output = first
        .launch(3, "square", vec![])
        .wait_timeout(GUARD)
        .expect("the task ran on the joiner");
    assert_eq!(output, b"square");
    assert_eq!(
        recorder.events.lock().unwrap().last().map(String::as_str),
        Some("task square")
    );

    // A registration made after the join reaches the joiner, exactly once.
    let result = cluster.runtimes()[2]
        .register_global(custom("libthree"), vec![], None)
        .wait_timeout(GUARD)
        .expect("answered");
    assert!(result.is_ok(), "{result:?}");
    let threes = recorder
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| *e == "invoke libthree")
        .count();
    assert_eq!(threes, 1);
    cluster.shutdown();
}

#[test]
fn a_joiner_that_cannot_replay_a_registration_is_not_admitted() {
    let mut cluster = started(3);
    history(&cluster.runtimes()[0]);
    let recorder = Arc::new(Recorder {
        fail_on: Some("libtwo"),
        ..Recorder::default()
    });
    let executors: Vec<(String, Arc<dyn Executor>)> = vec![("rec".into(), recorder)];
    let error = match cluster.join_with(HostConfig::default(), executors) {
        Err(error) => error,
        Ok(runtime) => panic!("node {} was admitted", runtime.node_id()),
    };
    let text = error.to_string();
    assert!(matches!(error, HostError::NotAdmitted { .. }), "{text}");
    assert!(text.contains("node 3 was not admitted"), "{text}");
    assert!(text.contains("libtwo"), "{text}");
    assert!(text.contains("cannot load libtwo here"), "{text}");

    // The job goes on without it: a launch to it fails, registrations complete
    // naming it unreachable once its declaration arrived.
    let first = &cluster.runtimes()[0];
    let launched = first.launch(3, "square", vec![]).wait_timeout(GUARD);
    assert!(matches!(launched, Err(HostError::Task(_))), "{launched:?}");
    cluster.shutdown();
}
