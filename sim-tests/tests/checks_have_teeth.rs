//! Every check of the simulator can fail: herald's node with one thing broken is
//! caught by the invariant it breaks.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, Ordering};

use herald_core::{
    Config, DEFAULT_MAX_FRAME_BYTES, Message, Node, NodeId, Output, Scope, TaskRequest, TaskRunId,
    decode_frame,
};
use herald_sim::{RunReport, Scenario, Script};
use sim_tests::{EarlyAnswer, Tamper, Tampered, not_home_of, run_once, run_twice};

fn library() -> Script {
    Script::new("libtasks.so").with_tasks(["saxpy"])
}

/// A job of 8 nodes with one requester that is not the key's home.
fn one_request() -> Scenario {
    let script = library();
    Scenario::new(8).with_request(not_home_of(&script, 8), 0, script)
}

fn assert_caught(report: &RunReport, needle: &str) {
    assert!(
        report.violations.iter().any(|v| v.contains(needle)),
        "expected a violation containing {needle:?}, got {:?}",
        report.violations
    );
}

#[test]
fn the_fault_free_baseline_is_clean() {
    let report = run_once::<Node>(&one_request());
    assert!(
        report.is_ok() && report.completed,
        "{:?}",
        report.violations
    );
}

#[test]
fn an_answer_before_the_job_is_done_is_caught() {
    assert_caught(
        &run_once::<Tampered<EarlyAnswer>>(&one_request()),
        "had not finished",
    );
}

#[test]
fn a_failure_left_out_of_the_result_is_caught() {
    let script = library().failing_on([NodeId(3)]);
    let scenario = Scenario::new(8).with_request(NodeId(0), 0, script);
    assert_caught(
        &run_once::<Tampered<ForgetsFailures>>(&scenario),
        "with outcome None for node 3",
    );
}

#[test]
fn a_live_node_named_unreachable_is_caught() {
    assert_caught(
        &run_once::<Tampered<NamesLiveNodes>>(&one_request()),
        "unreachable, but",
    );
}

#[test]
fn a_lost_answer_is_caught_at_the_end() {
    assert_caught(
        &run_once::<Tampered<DropsCompletes>>(&one_request()),
        "was never answered",
    );
}

#[test]
fn a_message_storm_is_caught_by_the_liveness_deadline() {
    let report = run_once::<Tampered<Echoes>>(&one_request());
    assert_caught(&report, "past the liveness deadline");
}

#[test]
fn a_second_invocation_is_caught() {
    assert_caught(&run_once::<Tampered<InvokesTwice>>(&one_request()), "times");
}

#[test]
fn a_task_run_before_its_registration_is_caught() {
    let scenario = Scenario::new(4)
        .with_request(NodeId(0), 0, library().with_load_ns(1_000_000))
        .with_launch(NodeId(0), NodeId(2), 10, "saxpy");
    assert_caught(
        &run_once::<Tampered<RunsTasksAtOnce>>(&scenario),
        "before required registration",
    );
}

#[test]
fn a_nondeterministic_run_is_caught_by_the_double_run() {
    let result = catch_unwind(AssertUnwindSafe(|| {
        run_twice::<Tampered<Nondeterministic>>(&one_request(), "replay")
    }));
    let message = result.expect_err("two different traces must fail");
    let text = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(text.contains("not deterministic"), "{text}");
}

/// Reports every job-wide registration as free of failures.
#[derive(Clone, Default, Hash)]
struct ForgetsFailures;

impl Tamper for ForgetsFailures {
    const NAME: &'static str = "forgets-failures";

    fn output(&mut self, _node: &Node, output: Output) -> Vec<Output> {
        match output {
            Output::Completed {
                request,
                mut result,
            } => {
                result.failures.clear();
                vec![Output::Completed { request, result }]
            }
            other => vec![other],
        }
    }
}

/// Names the next node (alive and connected) unreachable in job-wide results.
#[derive(Clone, Default, Hash)]
struct NamesLiveNodes;

impl Tamper for NamesLiveNodes {
    const NAME: &'static str = "names-live-nodes";

    fn output(&mut self, node: &Node, output: Output) -> Vec<Output> {
        match output {
            Output::Completed {
                request,
                mut result,
            } if result.scope == Scope::Global => {
                let next = NodeId((node.config().node().0 + 1) % node.config().nodes());
                result.unreachable = vec![next];
                vec![Output::Completed { request, result }]
            }
            other => vec![other],
        }
    }
}

/// Never sends a coordinator's answer to a requester.
#[derive(Clone, Default, Hash)]
struct DropsCompletes;

impl Tamper for DropsCompletes {
    const NAME: &'static str = "drops-completes";

    fn output(&mut self, _node: &Node, output: Output) -> Vec<Output> {
        match output {
            Output::Transmit { to, messages } => {
                let messages: Vec<Message> = messages
                    .into_iter()
                    .filter(|m| !matches!(m, Message::Complete { .. }))
                    .collect();
                if messages.is_empty() {
                    vec![]
                } else {
                    vec![Output::Transmit { to, messages }]
                }
            }
            other => vec![other],
        }
    }
}

/// Sends every frame it receives straight back: the two ends echo forever.
#[derive(Clone, Default, Hash)]
struct Echoes;

impl Tamper for Echoes {
    const NAME: &'static str = "echoes";

    fn received(&mut self, _node: &Node, from: NodeId, bytes: &[u8]) -> Vec<Output> {
        let messages = decode_frame(bytes, DEFAULT_MAX_FRAME_BYTES).expect("a valid frame");
        vec![Output::Transmit { to: from, messages }]
    }
}

/// Asks its host to run every invocation twice.
#[derive(Clone, Default, Hash)]
struct InvokesTwice;

impl Tamper for InvokesTwice {
    const NAME: &'static str = "invokes-twice";

    fn output(&mut self, _node: &Node, output: Output) -> Vec<Output> {
        match output {
            Output::Invoke(invocation) => vec![
                Output::Invoke(invocation.clone()),
                Output::Invoke(invocation),
            ],
            other => vec![other],
        }
    }
}

/// Runs a launched task the moment it arrives, required registrations or not.
#[derive(Clone, Default, Hash)]
struct RunsTasksAtOnce;

impl Tamper for RunsTasksAtOnce {
    const NAME: &'static str = "runs-tasks-at-once";

    fn received(&mut self, _node: &Node, from: NodeId, bytes: &[u8]) -> Vec<Output> {
        let messages = decode_frame(bytes, DEFAULT_MAX_FRAME_BYTES).expect("a valid frame");
        messages
            .into_iter()
            .filter_map(|message| match message {
                Message::Launch {
                    launch, task, args, ..
                } => {
                    let run = TaskRunId {
                        origin: from,
                        launch,
                    };
                    Some(Output::RunTask(TaskRequest { run, task, args }))
                }
                _ => None,
            })
            .collect()
    }
}

/// Picks its fan-out from a process-wide counter: each run differs from the last.
#[derive(Clone, Default, Hash)]
struct Nondeterministic;

static RUNS: AtomicU32 = AtomicU32::new(0);

impl Tamper for Nondeterministic {
    const NAME: &'static str = "nondeterministic";

    fn config(&mut self, config: Config) -> Config {
        let run = RUNS.fetch_add(1, Ordering::Relaxed) / config.nodes();
        config.with_fanout(2 + run % 2).expect("a valid fan-out")
    }
}
