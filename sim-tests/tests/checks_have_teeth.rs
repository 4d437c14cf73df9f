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
fn every_disseminate_sent_twice_is_caught_by_the_message_bound() {
    assert_caught(
        &run_once::<Tampered<DisseminatesTwice>>(&one_request()),
        "exceed the bound",
    );
}

#[test]
fn a_double_complete_is_caught_by_the_message_bound() {
    assert_caught(
        &run_once::<Tampered<CompletesTwice>>(&one_request()),
        "exceed the bound",
    );
}

#[test]
fn a_skipped_live_node_is_caught() {
    let report = run_once::<Tampered<SkipsLastNode>>(&one_request());
    assert_caught(&report, "no transport declared node 7 down");
    assert_caught(&report, "alive, unfenced and reachable");
}

/// Node 1 did not request the registration; it runs it because it was
/// disseminated there. A launch it makes to node 2 while node 2's load is still
/// running must wait there: a protocol that sends launches without their
/// requirements is caught by the oracle, which does not read them from the core.
#[test]
fn a_launch_stripped_of_its_requirements_is_caught() {
    let scenario = Scenario::new(3)
        .with_request(NodeId(0), 0, library().with_load_ns(1_000_000))
        .with_launch(NodeId(1), NodeId(2), 500_000, "saxpy");
    assert!(
        run_once::<Node>(&scenario).is_ok(),
        "herald itself is clean"
    );
    assert_caught(
        &run_once::<Tampered<StripsRequires>>(&scenario),
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

/// Every transmission repeats each `Disseminate` it carries.
#[derive(Clone, Default, Hash)]
struct DisseminatesTwice;

impl Tamper for DisseminatesTwice {
    const NAME: &'static str = "disseminates-twice";

    fn output(&mut self, _node: &Node, output: Output) -> Vec<Output> {
        repeat_messages(output, |m| matches!(m, Message::Disseminate { .. }))
    }
}

/// Every transmission repeats each `Complete` it carries.
#[derive(Clone, Default, Hash)]
struct CompletesTwice;

impl Tamper for CompletesTwice {
    const NAME: &'static str = "completes-twice";

    fn output(&mut self, _node: &Node, output: Output) -> Vec<Output> {
        repeat_messages(output, |m| matches!(m, Message::Complete { .. }))
    }
}

fn repeat_messages(output: Output, repeat: impl Fn(&Message) -> bool) -> Vec<Output> {
    match output {
        Output::Transmit { to, messages } => {
            let messages = messages
                .into_iter()
                .flat_map(|m| {
                    let times = if repeat(&m) { 2 } else { 1 };
                    std::iter::repeat_n(m, times)
                })
                .collect();
            vec![Output::Transmit { to, messages }]
        }
        other => vec![other],
    }
}

/// Every node but the last treats the last as down from the start, without any
/// transport saying so and without telling anyone: the live node is skipped.
#[derive(Clone, Default, Hash)]
struct SkipsLastNode;

impl Tamper for SkipsLastNode {
    const NAME: &'static str = "skips-last-node";

    fn start(&mut self, node: &mut Node) {
        let last = NodeId(node.config().nodes() - 1);
        if node.config().node() != last {
            node.peer_down(last, "tampered");
        }
    }

    fn output(&mut self, _node: &Node, output: Output) -> Vec<Output> {
        match output {
            Output::Transmit { to, messages } => {
                let messages: Vec<Message> = messages
                    .into_iter()
                    .filter(|m| !matches!(m, Message::Down { .. }))
                    .collect();
                if messages.is_empty() {
                    vec![]
                } else {
                    vec![Output::Transmit { to, messages }]
                }
            }
            Output::PeerDown { .. } => vec![],
            other => vec![other],
        }
    }
}

/// Sends every launch with an empty list of required registrations.
#[derive(Clone, Default, Hash)]
struct StripsRequires;

impl Tamper for StripsRequires {
    const NAME: &'static str = "strips-requires";

    fn output(&mut self, _node: &Node, output: Output) -> Vec<Output> {
        match output {
            Output::Transmit { to, messages } => {
                let messages = messages
                    .into_iter()
                    .map(|m| match m {
                        Message::Launch {
                            launch,
                            task,
                            args,
                            strict,
                            ..
                        } => Message::Launch {
                            launch,
                            task,
                            args,
                            requires: Vec::new(),
                            strict,
                        },
                        other => other,
                    })
                    .collect();
                vec![Output::Transmit { to, messages }]
            }
            other => vec![other],
        }
    }
}
