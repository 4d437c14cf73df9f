//! Causal task launches.

mod common;

use common::{Cluster, registration_homed_at};
use herald_core::{NodeId, TaskErrorKind, UsageError};

#[test]
fn task_waits_on_its_target_for_registrations_requested_before_the_launch() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "tasks");
    c.register(0, &reg);
    let launch = c
        .node(0)
        .launch(NodeId(2), "matmul", b"args".to_vec(), None)
        .expect("launch");
    c.pump();
    // Deliver the launch before the registration reaches node 2.
    let at = c
        .in_flight
        .iter()
        .position(|(_, to, m)| to.0 == 2 && m[0].kind() == "launch");
    let frame = c
        .in_flight
        .remove(at.expect("launch in flight"))
        .expect("frame");
    c.in_flight.push_front(frame);
    c.deliver_one();
    assert!(
        c.tasks.is_empty(),
        "held until the registration is done there"
    );
    c.deliver_all();
    assert!(c.tasks.is_empty(), "still running on node 2");
    c.finish(2, reg.key(), Ok(()));
    assert_eq!(c.tasks.len(), 1);
    let (node, task) = c.tasks[0].clone();
    assert_eq!(
        (node.0, task.task.as_str(), task.args.as_slice()),
        (2, "matmul", &b"args"[..])
    );
    c.node(2)
        .task_finished(task.run, Ok(b"done".to_vec()))
        .expect("finish");
    c.pump();
    c.settle();
    assert_eq!(c.task_results.len(), 1);
    assert_eq!(c.task_results[0].1, launch);
    assert_eq!(c.task_results[0].2, Ok(b"done".to_vec()));
}

#[test]
fn launches_after_completion_carry_nothing_and_run_at_once() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(1, 2, "done-before");
    c.register(0, &reg);
    c.settle();
    c.node(0)
        .launch(NodeId(1), "t", vec![], None)
        .expect("launch");
    c.pump();
    assert!(
        matches!(&c.in_flight[0].2[0], herald_core::Message::Launch { requires, .. } if requires.is_empty())
    );
    c.deliver_all();
    assert_eq!(c.tasks.len(), 1);
}

#[test]
fn task_whose_requirement_failed_there_fails_with_that_error() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(0, 2, "req-fail");
    c.register(0, &reg);
    c.node(0)
        .launch(NodeId(1), "t", vec![], None)
        .expect("launch");
    c.pump();
    c.deliver_all();
    c.finish(1, reg.key(), Err("digest mismatch".into()));
    c.settle();
    assert!(c.tasks.is_empty(), "not run");
    let outcome = &c.task_results[0].2;
    let err = outcome.as_ref().expect_err("failed");
    assert_eq!(err.node, NodeId(1));
    assert!(
        matches!(&err.kind, TaskErrorKind::RequirementFailed { key, error } if *key == reg.key() && error == "digest mismatch")
    );
}

#[test]
fn host_errors_such_as_unknown_tasks_reach_the_launcher() {
    let mut c = Cluster::new(2, 2);
    c.node(0)
        .launch(NodeId(1), "nosuch", vec![], None)
        .expect("launch");
    c.pump();
    c.deliver_all();
    let run = c.tasks[0].1.run;
    c.node(1)
        .task_finished(run, Err("task 'nosuch' is not registered on node 1".into()))
        .expect("finish");
    c.pump();
    c.deliver_all();
    let err = c.task_results[0].2.as_ref().expect_err("error result");
    assert!(
        err.to_string()
            .contains("task 'nosuch' is not registered on node 1")
    );
    assert_eq!(
        c.node(1).task_finished(run, Ok(vec![])),
        Err(UsageError::UnknownTask(run))
    );
}

#[test]
fn local_launch_waits_for_local_registration() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(1, 2, "local");
    c.register(0, &reg);
    let launch = c
        .node(0)
        .launch(NodeId(0), "t", vec![], None)
        .expect("launch");
    c.pump();
    assert!(c.tasks.is_empty());
    c.finish(0, reg.key(), Ok(()));
    assert_eq!(c.tasks.len(), 1);
    let run = c.tasks[0].1.run;
    c.node(0).task_finished(run, Ok(vec![7])).expect("finish");
    c.pump();
    assert_eq!(c.task_results[0].1, launch);
    assert_eq!(c.task_results[0].2, Ok(vec![7]));
}

#[test]
fn launches_to_dead_or_dying_nodes_fail_as_unreachable() {
    let mut c = Cluster::new(3, 2);
    c.node(0)
        .launch(NodeId(1), "t", vec![], None)
        .expect("launch");
    c.pump();
    c.peer_down_everywhere(1);
    c.node(0)
        .launch(NodeId(1), "t", vec![], None)
        .expect("launch");
    c.pump();
    assert_eq!(c.task_results.len(), 2);
    for (_, _, outcome) in &c.task_results {
        let err = outcome.as_ref().expect_err("unreachable");
        assert_eq!(
            (err.node, &err.kind),
            (NodeId(1), &TaskErrorKind::Unreachable)
        );
    }
    assert!(matches!(
        c.node(0).launch(NodeId(3), "t", vec![], None),
        Err(UsageError::NoSuchNode { .. })
    ));
}

#[test]
fn held_tasks_of_a_dead_launcher_are_dropped() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "dropped");
    c.register(1, &reg);
    c.node(1)
        .launch(NodeId(2), "t", vec![], None)
        .expect("launch");
    c.pump();
    let at = c
        .in_flight
        .iter()
        .position(|(_, to, _)| to.0 == 2)
        .expect("launch");
    let frame = c.in_flight.remove(at).expect("frame");
    c.in_flight.push_front(frame);
    c.deliver_one();
    assert!(!c.node(2).is_quiescent(), "holding the task");
    c.peer_down_everywhere(1);
    c.settle();
    assert!(c.tasks.is_empty());
    assert!(c.node(2).is_quiescent());
}

#[test]
fn oversized_launches_and_results_are_refused_not_dropped() {
    use herald_core::{Config, Node, Output};
    let config = Config::new(NodeId(0), 2)
        .and_then(|c| c.with_max_frame_bytes(4096))
        .expect("config");
    let mut node = Node::new(config);
    assert!(matches!(
        node.launch(NodeId(1), "t", vec![0; 8192], None),
        Err(UsageError::TooLarge { .. })
    ));
    node.launch(NodeId(0), "t", vec![], None)
        .expect("local launch");
    let Some(Output::RunTask(task)) = node.poll_output() else {
        panic!("expected the task to run")
    };
    node.task_finished(task.run, Ok(vec![0; 8192]))
        .expect("finish");
    let Some(Output::TaskCompleted { outcome, .. }) = node.poll_output() else {
        panic!("expected an answer")
    };
    let error = outcome.expect_err("too large to send back");
    assert!(error.to_string().contains("exceeds the frame limit"));
}

/// The launched frame to `to` holding a Launch, and its `requires`.
fn launch_requires(c: &Cluster, to: u32) -> Vec<herald_core::Key> {
    c.in_flight
        .iter()
        .filter(|(_, t, _)| t.0 == to)
        .flat_map(|(_, _, m)| m.iter())
        .find_map(|m| match m {
            herald_core::Message::Launch { requires, .. } => Some(requires.clone()),
            _ => None,
        })
        .expect("a launch in flight")
}

#[test]
fn a_node_that_only_received_a_key_makes_its_launches_wait_for_it() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "received");
    c.register(0, &reg);
    // Node 1 receives the registration; node 2's copy stays in flight.
    let to_one = c
        .in_flight
        .iter()
        .position(|(_, to, _)| to.0 == 1)
        .expect("disseminate to 1");
    let frame = c.in_flight.remove(to_one).expect("frame");
    c.in_flight.push_front(frame);
    c.deliver_one();
    c.node(1)
        .launch(NodeId(2), "t", vec![], None)
        .expect("launch");
    c.pump();
    assert_eq!(launch_requires(&c, 2), [reg.key()]);
    // Deliver the launch first: the task waits for the registration on node 2.
    let launch_at = c
        .in_flight
        .iter()
        .position(|(from, _, m)| from.0 == 1 && m[0].kind() == "launch")
        .expect("launch");
    let frame = c.in_flight.remove(launch_at).expect("frame");
    c.in_flight.push_front(frame);
    c.deliver_one();
    assert!(c.tasks.is_empty());
    c.settle();
    assert_eq!(c.tasks.len(), 1);
    assert!(c.ran(2, reg.key()));
}

#[test]
fn a_launch_from_inside_an_invocation_skips_its_own_key_and_requires_the_rest() {
    let mut c = Cluster::new(2, 2);
    let earlier = registration_homed_at(0, 2, "earlier");
    let outer = registration_homed_at(0, 2, "outer");
    c.register(0, &earlier);
    c.register(0, &outer);
    let invocation = c
        .running
        .iter()
        .find(|(n, inv)| n.0 == 0 && inv.key == outer.key())
        .map(|(_, inv)| inv.id)
        .expect("outer runs on 0");
    c.node(0)
        .launch(NodeId(1), "t", vec![], Some(invocation))
        .expect("launch");
    c.pump();
    assert_eq!(launch_requires(&c, 1), [earlier.key()]);
    // Launched to itself from inside `outer`, the task must not wait for `outer`.
    c.node(0)
        .launch(NodeId(0), "local", vec![], Some(invocation))
        .expect("launch");
    c.pump();
    c.finish(0, earlier.key(), Ok(()));
    assert!(
        c.tasks.iter().any(|(n, t)| n.0 == 0 && t.task == "local"),
        "runs while outer still runs: no self-deadlock"
    );
}

#[test]
fn a_launch_after_a_result_naming_the_target_failed_fails_there() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(0, 2, "named-failed");
    let request = c.register(0, &reg);
    c.deliver_all();
    c.finish(1, reg.key(), Err("missing symbol".into()));
    c.settle();
    assert_eq!(
        c.answer(0, request).expect("answered").failures[0].node,
        NodeId(1)
    );
    let launch = c
        .node(0)
        .launch(NodeId(1), "t", vec![], None)
        .expect("launch");
    c.pump();
    assert_eq!(launch_requires(&c, 1), [reg.key()]);
    c.settle();
    assert!(c.tasks.is_empty(), "the task never ran");
    let (_, _, outcome) = c
        .task_results
        .iter()
        .find(|(_, l, _)| *l == launch)
        .expect("answered");
    let error = outcome.as_ref().expect_err("failed");
    assert!(
        matches!(&error.kind, TaskErrorKind::RequirementFailed { key, error } if *key == reg.key() && error == "missing symbol"),
        "{error:?}"
    );
}

#[test]
fn control_launches_run_even_where_a_requirement_failed() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(0, 2, "control");
    c.register(0, &reg);
    c.deliver_all();
    c.finish(1, reg.key(), Err("boom".into()));
    c.node(0)
        .launch_control(NodeId(1), "end", vec![])
        .expect("launch");
    c.settle();
    assert!(c.tasks.iter().any(|(n, t)| n.0 == 1 && t.task == "end"));
}

#[test]
fn answered_launches_let_later_ones_to_the_same_target_carry_less() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(1, 3, "watermark");
    c.register(1, &reg);
    c.deliver_all();
    // Node 2 got the key by dissemination and never learns the job-wide result.
    c.node(2)
        .launch(NodeId(0), "first", vec![], None)
        .expect("launch");
    c.pump();
    assert_eq!(launch_requires(&c, 0), [reg.key()]);
    c.settle();
    let (_, task) = c.tasks.pop().expect("ran");
    c.node(0).task_finished(task.run, Ok(vec![])).expect("done");
    c.pump();
    c.deliver_all();
    c.node(2)
        .launch(NodeId(0), "second", vec![], None)
        .expect("launch");
    c.pump();
    assert!(launch_requires(&c, 0).is_empty());
}

#[test]
fn keys_nested_only_here_are_covered_by_their_enclosing_key() {
    let mut c = Cluster::new(2, 2);
    let outer = registration_homed_at(0, 2, "outer-nest");
    let inner = registration_homed_at(0, 2, "inner-nest");
    c.register(0, &outer);
    let parent = c.running[0].1.id;
    c.node(0)
        .register(inner.clone(), Some(parent))
        .expect("nested");
    c.pump();
    c.node(0)
        .launch(NodeId(1), "t", vec![], None)
        .expect("launch");
    c.pump();
    assert_eq!(launch_requires(&c, 1), [outer.key()]);
}

#[test]
fn a_redelivered_launch_runs_once() {
    let mut c = Cluster::new(2, 2);
    c.node(0)
        .launch(NodeId(1), "once", vec![], None)
        .expect("launch");
    c.pump();
    let frame = c.in_flight.front().cloned().expect("launch in flight");
    c.in_flight.push_back(frame.clone());
    c.deliver_all();
    let (_, task) = c.tasks.pop().expect("ran");
    c.node(1).task_finished(task.run, Ok(vec![])).expect("done");
    c.pump();
    c.in_flight.push_back(frame);
    c.deliver_all();
    assert!(c.tasks.is_empty(), "neither copy ran it again");
}

#[test]
fn a_key_that_failed_on_the_launcher_too_is_not_required() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(0, 2, "failed-everywhere");
    c.register(0, &reg);
    c.deliver_all();
    c.finish(0, reg.key(), Err("no such module".into()));
    c.finish(1, reg.key(), Err("no such module".into()));
    c.settle();
    c.node(0)
        .launch(NodeId(1), "t", vec![], None)
        .expect("launch");
    c.pump();
    assert!(launch_requires(&c, 1).is_empty());
    c.settle();
    assert!(c.tasks.iter().any(|(n, _)| n.0 == 1), "it runs");
}

/// A launch refused with `RequirementFailed` proves nothing about its target: the
/// next launch there must still require the key that failed there.
#[test]
fn a_refused_launch_does_not_excuse_the_next_one() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(0, 2, "fails-on-1");
    c.register(0, &reg);
    c.deliver_all();
    c.finish(0, reg.key(), Ok(()));
    c.finish(1, reg.key(), Err("broken on 1".into()));
    c.settle();
    for _ in 0..2 {
        c.node(0)
            .launch(NodeId(1), "t", vec![], None)
            .expect("launch");
        c.pump();
        c.settle();
    }
    assert!(c.tasks.is_empty(), "never run where its requirement failed");
    assert_eq!(c.task_results.len(), 2);
    for (_, _, outcome) in &c.task_results {
        let kind = &outcome.as_ref().expect_err("refused").kind;
        assert!(
            matches!(kind, TaskErrorKind::RequirementFailed { .. }),
            "{kind:?}"
        );
    }
}

/// A target that has never heard of a key a launch requires (its round may never
/// reach it: it ended naming the target unreachable) asks the launcher for it
/// (`Fetch`, once per key and launcher), runs what comes back (`Supply`) without
/// taking part in any round, and then the task; a registration that a round
/// brings first makes the supply a no-op.
#[test]
fn a_target_fetches_a_required_registration_it_never_received() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "never-reaches-2");
    let key = reg.key();
    c.register(0, &reg);
    // The round's dissemination to node 2 is lost: node 2 never hears of it.
    let lost = c
        .in_flight
        .iter()
        .position(|(_, to, m)| to.0 == 2 && m.iter().any(|m| m.kind() == "disseminate"))
        .expect("a dissemination to node 2");
    c.in_flight.remove(lost);
    c.deliver_all();
    c.finish(1, key, Ok(()));
    // Node 1 received the key: its launches to node 2 require it.
    for _ in 0..2 {
        c.node(1)
            .launch(NodeId(2), "t", vec![], None)
            .expect("launch");
    }
    c.pump();
    while !c.in_flight_of_kind("launch").is_empty() {
        c.deliver_one();
    }
    assert!(c.tasks.is_empty(), "held: node 2 lacks the key");
    let fetches = c.in_flight_of_kind("fetch");
    assert_eq!(fetches.len(), 1, "one fetch for both launches: {fetches:?}");
    assert_eq!((fetches[0].0, fetches[0].1), (NodeId(2), NodeId(1)));
    c.deliver_all();
    assert_eq!(c.invocations_of(key), 3, "node 2 runs what node 1 supplied");
    assert!(c.tasks.is_empty(), "still running on node 2");
    c.finish(2, key, Ok(()));
    assert_eq!(
        c.tasks.len(),
        2,
        "both tasks run once the key is done there"
    );
    assert!(c.tasks.iter().all(|(node, _)| node.0 == 2));
    // A supply of a key the node has (a round brought it meanwhile) changes nothing.
    c.node(2)
        .handle_message(
            NodeId(1),
            herald_core::Message::Supply {
                key,
                registration: reg.clone(),
            },
        )
        .expect("a valid supply");
    c.pump();
    assert_eq!(c.invocations_of(key), 3, "at most once per node");
}

/// The coordinator dies mid-round with no requester left to ask again: node 2,
/// which the round had not reached, never runs the registration by a round, but
/// a task that node 0 (which ran it) launches there fetches it first and runs.
#[test]
fn a_node_a_dead_coordinators_round_missed_fetches_the_key_for_a_launch() {
    let mut c = Cluster::new(4, 4);
    let reg = registration_homed_at(1, 4, "coordinator dies");
    let key = reg.key();
    c.register(1, &reg);
    c.cut_link(1, 2); // its disseminate to node 2 is lost
    c.deliver_all();
    c.finish(0, key, Ok(()));
    c.peer_down_everywhere(1);
    c.settle();
    assert!(!c.ran(2, key), "no round reached node 2");
    let launch = c
        .node(0)
        .launch(NodeId(2), "needs it", vec![], None)
        .expect("launch");
    c.pump();
    c.settle();
    assert!(c.ran(2, key), "node 2 fetched it from node 0");
    assert_eq!(c.tasks.len(), 1, "and ran the task after it");
    let tasks = std::mem::take(&mut c.tasks);
    for (node, task) in tasks {
        c.node(node.0)
            .task_finished(task.run, Ok(b"ok".to_vec()))
            .expect("finish");
    }
    c.pump();
    c.settle();
    assert!(c.answered_ok(0, launch), "{:?}", c.task_results);
}
