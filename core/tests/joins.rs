//! Late joiners: a node admitted into a new view replays every registration global
//! on its admitter, in order, before it runs any task; registrations in flight at
//! the join reach it exactly once; a failed replay refuses the join.

mod common;

use common::{Cluster, registration_homed_at};
use herald_core::{
    Config, JoinFailure, Message, Node, NodeId, ProtocolError, Registration, TaskErrorKind,
    UsageError,
};

/// Registers `label` on `node` and runs the job until it is complete everywhere.
fn complete(c: &mut Cluster, node: u32, reg: &Registration) {
    let request = c.register(node, reg);
    c.settle();
    assert!(c.answer(node, request).expect("answered").is_ok());
}

fn invoke_position(c: &Cluster, node: u32, reg: &Registration) -> usize {
    let entry = format!("invoke {:?}", reg.key());
    c.history
        .iter()
        .position(|(n, e)| n.0 == node && *e == entry)
        .unwrap_or_else(|| panic!("node {node} never invoked {:?}", reg.key()))
}

#[test]
fn a_joiner_replays_the_log_in_order_one_at_a_time_before_any_task() {
    let mut c = Cluster::new(3, 2);
    let regs: Vec<Registration> = (0..3)
        .map(|i| registration_homed_at(i % 3, 3, &format!("log-{i}")))
        .collect();
    for (i, reg) in regs.iter().enumerate() {
        complete(&mut c, i as u32 % 3, reg);
    }
    let joiner = c.join(0);
    assert_eq!(joiner, 3);
    let launch = c
        .node(0)
        .launch(NodeId(3), "t", vec![], None)
        .expect("launch");
    c.pump();
    c.deliver_all();
    // The replay runs one registration at a time, in the admitter's order.
    for (i, reg) in regs.iter().enumerate() {
        let running: Vec<_> = c.running.iter().filter(|(n, _)| n.0 == 3).collect();
        assert_eq!(running.len(), 1, "one replayed registration at a time");
        assert_eq!(running[0].1.key, reg.key(), "replay {i} in log order");
        assert!(c.tasks.is_empty(), "no task before the replay ends");
        c.finish(3, reg.key(), Ok(()));
        c.deliver_all();
    }
    assert_eq!(c.admitted, [NodeId(3)]);
    assert_eq!(c.tasks.len(), 1, "the held task runs once admitted");
    let task_at = c
        .history
        .iter()
        .position(|(n, e)| n.0 == 3 && e == "task t");
    assert!(task_at > Some(invoke_position(&c, 3, &regs[2])));
    let run = c.tasks[0].1.run;
    c.node(3)
        .task_finished(run, Ok(b"ok".to_vec()))
        .expect("finish");
    c.pump();
    c.settle();
    assert!(c.answered_ok(0, launch));
    for reg in &regs {
        assert_eq!(c.invocations_of(reg.key()), 4, "once on each of 4 nodes");
    }
}

#[test]
fn a_join_costs_one_welcome_and_no_work_elsewhere() {
    let mut c = Cluster::new(16, 4);
    for i in 0..5 {
        complete(
            &mut c,
            i,
            &registration_homed_at(i, 16, &format!("cost-{i}")),
        );
    }
    let before = c.messages();
    let frames_before = c.frames;
    c.join(0);
    c.settle();
    assert_eq!(c.messages() - before, 1, "{:?}", c.sent_by_kind);
    assert_eq!(c.sent_by_kind.get("welcome"), Some(&1));
    assert_eq!(c.frames - frames_before, 1);
    // Only the admitter and the joiner saw anything of it.
    for (node, _) in &c.views {
        assert!(node.0 == 0 || node.0 == 16, "{node} did work for the join");
    }
}

#[test]
fn the_welcome_is_split_at_the_frame_limit_and_replayed_whole() {
    let limit = Config::min_frame_bytes(3).max(8192);
    let mut c = Cluster::with_frame_limit(3, 2, limit);
    let big: Vec<Registration> = (0..6)
        .map(|i| Registration::new(format!("big-{i}").into_bytes(), vec![i as u8; 3000]))
        .collect();
    for reg in &big {
        complete(&mut c, 1, reg);
    }
    c.join(0);
    c.settle();
    assert!(c.sent_by_kind.get("welcome").copied().unwrap_or(0) > 1);
    assert_eq!(c.admitted, [NodeId(3)]);
    for reg in &big {
        assert!(c.ran(3, reg.key()));
    }
}

#[test]
fn a_registration_in_flight_at_the_join_reaches_the_joiner_once_through_its_admitter() {
    let mut c = Cluster::new(3, 2);
    // Coordinated by node 1; its round has not reached node 0 when 3 joins.
    let reg = registration_homed_at(1, 3, "in-flight");
    let request = c.register(1, &reg);
    assert!(!c.ran(0, reg.key()));
    c.join(0);
    c.settle();
    let grafted = c.sent_by_kind.get("disseminate").copied();
    assert_eq!(grafted, Some(3), "1 to its children, and 0 to the joiner");
    assert_eq!(c.invocations_of(reg.key()), 4);
    assert!(c.ran(3, reg.key()));
    // The round's root did not know 3; node 0 grafted it, so the result speaks for it.
    assert!(c.answer(1, request).expect("answered").is_ok());
    assert_eq!(c.admitted, [NodeId(3)]);
}

#[test]
fn a_registration_running_on_the_admitter_at_the_join_is_replayed_and_run_once() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "running");
    let request = c.register(0, &reg);
    c.deliver_all();
    // Still running on node 0 (and elsewhere) when 3 joins: it is in the welcome.
    c.join(0);
    c.deliver_all();
    c.settle();
    assert_eq!(
        c.invocations_of(reg.key()),
        4,
        "once per node, the joiner too"
    );
    assert!(c.answer(0, request).is_some());
}

#[test]
fn a_coordinator_that_learned_of_the_joiner_includes_it_in_its_tree() {
    let mut c = Cluster::new(4, 2);
    c.join(0);
    c.settle();
    // The joiner asks every node something, which teaches them the view.
    for home in 0..4 {
        let reg = registration_homed_at(home, 5, &format!("teach-{home}"));
        complete(&mut c, 4, &reg);
    }
    for node in 0..5 {
        assert_eq!(
            c.node(node).view().size,
            5,
            "node {node} learned the joiner"
        );
    }
    // Now a round rooted anywhere reaches 5 nodes in 2(5-1) messages.
    let reg = registration_homed_at(2, 5, "after");
    let before = c.messages();
    complete(&mut c, 2, &reg);
    assert_eq!(c.messages() - before, 8);
    assert_eq!(c.invocations_of(reg.key()), 5);
}

#[test]
fn a_launch_that_reaches_the_joiner_before_its_welcome_is_held() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(1, 3, "early");
    complete(&mut c, 1, &reg);
    c.join(0);
    let welcome = c.in_flight.pop_front().expect("the welcome");
    let launch = c
        .node(0)
        .launch(NodeId(3), "t", vec![], None)
        .expect("launch");
    c.pump();
    c.deliver_all();
    assert!(c.tasks.is_empty(), "held: not welcomed yet");
    c.in_flight.push_back(welcome);
    c.settle();
    assert_eq!(c.tasks.len(), 1);
    assert!(invoke_position(&c, 3, &reg) < c.history.len());
    let run = c.tasks[0].1.run;
    c.node(3).task_finished(run, Ok(vec![])).expect("finish");
    c.pump();
    c.settle();
    assert!(c.answered_ok(0, launch));
}

#[test]
fn keys_received_before_the_welcome_run_after_the_log_unless_nested() {
    let mut c = Cluster::new(3, 2);
    let old = registration_homed_at(0, 3, "old");
    complete(&mut c, 0, &old);
    c.join(0);
    let welcome = c.in_flight.pop_front().expect("the welcome");
    // A dissemination whose root knows the joiner arrives first.
    let fresh = Registration::new(b"fresh".to_vec(), vec![]);
    c.node(3)
        .handle_message(
            NodeId(1),
            Message::Disseminate {
                key: fresh.key(),
                root: NodeId(1),
                view: 4,
                registration: fresh.clone(),
            },
        )
        .expect("valid");
    c.pump();
    assert!(!c.ran(3, fresh.key()), "deferred until the log is replayed");
    c.in_flight.push_back(welcome);
    c.deliver_all();
    assert_eq!(c.running.iter().filter(|(n, _)| n.0 == 3).count(), 1);
    // The old registration nests the fresh one: it runs now, not after.
    let (_, inv) = c
        .running
        .iter()
        .find(|(n, _)| n.0 == 3)
        .cloned()
        .expect("running");
    assert_eq!(inv.key, old.key());
    c.node(3)
        .register(fresh.clone(), Some(inv.id))
        .expect("nested");
    c.pump();
    assert!(
        c.ran(3, fresh.key()),
        "a nested request starts a deferred key"
    );
    c.finish(3, fresh.key(), Ok(()));
    c.finish(3, old.key(), Ok(()));
    c.settle();
    assert_eq!(c.admitted, [NodeId(3)]);
    assert_eq!(c.invocations_of(fresh.key()), 1, "only once, on the joiner");
}

#[test]
fn a_replayed_registration_that_fails_refuses_the_join_and_names_it() {
    let mut c = Cluster::new(3, 2);
    let reg = Registration::new(b"/opt/libplugin.so:register".to_vec(), vec![]);
    complete(&mut c, 1, &reg);
    c.join(0);
    c.deliver_all();
    c.finish(3, reg.key(), Err("cannot open /opt/libplugin.so".into()));
    assert!(c.admitted.is_empty(), "not admitted");
    let (node, failure) = &c.join_failed[0];
    let JoinFailure::Replay { key, error, .. } = failure else {
        panic!("{failure:?}")
    };
    assert_eq!((node.0, *key), (3, reg.key()));
    assert!(error.contains("/opt/libplugin.so"));
    assert!(failure.to_string().contains("/opt/libplugin.so"));
    // It told every member it is down, and takes no further part.
    c.deliver_all();
    for node in 0..3 {
        assert!(
            c.node(node).dead_nodes().contains(&NodeId(3)),
            "node {node}"
        );
    }
    assert!(matches!(
        c.node(3)
            .register(Registration::new(b"x".to_vec(), vec![]), None),
        Err(herald_core::RegisterError::Fenced { by: NodeId(3), .. })
    ));
    let launch = c
        .node(0)
        .launch(NodeId(3), "t", vec![], None)
        .expect("launch");
    c.pump();
    assert!(c.task_results.iter().any(|(n, l, o)| n.0 == 0
        && *l == launch
        && matches!(o, Err(e) if e.kind == TaskErrorKind::Unreachable)));
}

#[test]
fn a_registration_that_failed_on_the_admitter_may_fail_on_the_joiner() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "broken");
    let request = c.register(0, &reg);
    c.deliver_all();
    for node in 0..3 {
        c.finish(node, reg.key(), Err("broken everywhere".into()));
    }
    c.settle();
    assert!(!c.answer(0, request).expect("answered").is_ok());
    c.join(0);
    c.deliver_all();
    c.finish(3, reg.key(), Err("broken here too".into()));
    c.settle();
    assert_eq!(c.admitted, [NodeId(3)], "the job already lives without it");
    assert!(c.join_failed.is_empty());
}

#[test]
fn a_joiner_that_crashes_while_grafted_is_named_unreachable() {
    let mut c = Cluster::new(3, 2);
    c.join(0);
    c.settle();
    let reg = registration_homed_at(1, 3, "graft");
    let request = c.register(1, &reg);
    c.deliver_all(); // reaches 0, which passes it to 3
    c.peer_down_everywhere(3);
    c.settle();
    let result = c.answer(1, request).expect("answered");
    assert_eq!(result.unreachable, [NodeId(3)]);
}

#[test]
fn a_down_declared_by_a_node_that_never_heard_of_the_joiner_reaches_it_through_its_admitter() {
    let mut c = Cluster::new(4, 2);
    c.join(0);
    c.settle();
    assert_eq!(c.node(2).view().size, 4, "node 2 never heard of 4");
    c.crashed.push(1);
    c.node(2).peer_down(NodeId(1), "connection reset");
    c.pump();
    c.settle();
    assert!(c.node(4).dead_nodes().contains(&NodeId(1)));
}

#[test]
fn admission_errors_and_skipped_ids() {
    let mut c = Cluster::new(3, 2);
    assert_eq!(
        c.node(0).admit(NodeId(2)),
        Err(UsageError::AlreadyMember(NodeId(2)))
    );
    let mut joiner = Node::joining(Config::new(NodeId(3), 4).expect("config"), NodeId(0));
    assert_eq!(joiner.admit(NodeId(4)), Err(UsageError::NotAdmitted));
    assert!(!joiner.is_admitted());
    // Ids 3 and 4 were given out but never joined: declared down for everyone.
    c.node(0).admit(NodeId(5)).expect("admit");
    c.pump();
    assert!(
        c.in_flight.iter().all(|(_, to, _)| to.0 != 3 && to.0 != 4),
        "the admitter sends nothing to ids that never joined"
    );
    c.deliver_all(); // no process took id 5 in this test: its welcome is lost
    for node in 0..3 {
        let dead: Vec<u32> = c.node(node).dead_nodes().iter().map(|n| n.0).collect();
        assert_eq!(dead, [3, 4], "node {node}");
        // Node 0 admitted 5; the others learn of it when it says something.
        assert_eq!(c.node(node).view().size, if node == 0 { 6 } else { 5 });
    }
}

#[test]
fn a_welcome_to_a_member_is_invalid() {
    let mut c = Cluster::new(3, 2);
    let err = c
        .node(1)
        .handle_message(
            NodeId(0),
            Message::Welcome {
                view: 3,
                down: Default::default(),
                log: vec![],
                more: false,
            },
        )
        .expect_err("invalid");
    assert!(matches!(
        err,
        ProtocolError::UnexpectedWelcome { from: NodeId(0) }
    ));
}

#[test]
fn views_only_grow_and_are_announced() {
    let mut c = Cluster::new(3, 2);
    assert_eq!(c.node(1).view().epoch, 3);
    c.join(0);
    c.settle();
    let at_0: Vec<(u64, u32)> = c
        .views
        .iter()
        .filter(|(n, _)| n.0 == 0)
        .map(|(_, v)| (v.epoch, v.size))
        .collect();
    assert_eq!(at_0, [(4, 4)]);
    // A message from the joiner teaches node 1 the new view.
    let reg = registration_homed_at(1, 4, "teach");
    complete(&mut c, 3, &reg);
    assert_eq!(c.node(1).view().size, 4);
    c.peer_down_everywhere(2);
    c.settle();
    let view = c.node(1).view();
    assert_eq!((view.epoch, view.size, view.members()), (5, 4, 3));
    let epochs: Vec<u64> = c
        .views
        .iter()
        .filter(|(n, _)| n.0 == 1)
        .map(|(_, v)| v.epoch)
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
}

#[test]
fn a_second_join_after_the_first_replays_what_the_first_did() {
    let mut c = Cluster::new(2, 2);
    let a = registration_homed_at(0, 2, "a");
    complete(&mut c, 0, &a);
    c.join(0);
    c.settle();
    let b = registration_homed_at(0, 3, "b");
    complete(&mut c, 2, &b);
    c.join(0);
    c.settle();
    assert_eq!(c.admitted, [NodeId(2), NodeId(3)]);
    for reg in [&a, &b] {
        assert_eq!(c.invocations_of(reg.key()), 4);
    }
    assert!(invoke_position(&c, 3, &a) < invoke_position(&c, 3, &b));
}

#[test]
fn two_joins_at_once_each_replay_and_hear_of_each_other() {
    let mut c = Cluster::new(3, 2);
    let a = registration_homed_at(2, 3, "a");
    complete(&mut c, 1, &a);
    c.join(0);
    c.join(0);
    let b = registration_homed_at(1, 3, "b");
    let request = c.register(1, &b);
    c.settle();
    assert_eq!(c.admitted.len(), 2);
    for node in 0..5 {
        assert_eq!(c.invocations_of(a.key()), 5);
        assert!(c.ran(node, b.key()), "node {node}");
    }
    assert!(c.answer(1, request).expect("answered").is_ok());
}

#[test]
fn a_joiner_whose_admitter_goes_down_before_the_welcome_gives_up() {
    let mut c = Cluster::new(3, 2);
    c.join(0);
    c.in_flight.clear(); // the welcome is lost with node 0
    c.crashed.push(0);
    c.node(3).peer_down(NodeId(0), "connection reset");
    c.pump();
    assert!(matches!(
        &c.join_failed[..],
        [(NodeId(3), JoinFailure::AdmitterDown { admitter: NodeId(0), reason })] if reason == "connection reset"
    ));
    c.deliver_all();
    for node in 1..3 {
        assert!(
            c.node(node).dead_nodes().contains(&NodeId(3)),
            "node {node}"
        );
    }
}

#[test]
fn a_launch_to_a_joiner_requires_what_completed_before_it_joined() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "before");
    complete(&mut c, 0, &reg);
    c.join(0);
    c.node(0)
        .launch(NodeId(3), "t", vec![], None)
        .expect("launch");
    c.pump();
    let required: Vec<_> = c
        .in_flight
        .iter()
        .flat_map(|(_, to, messages)| messages.iter().map(move |m| (to, m)))
        .filter_map(|(to, m)| match m {
            Message::Launch { requires, .. } if to.0 == 3 => Some(requires.clone()),
            _ => None,
        })
        .collect();
    // The result (which does not name 3) spoke for the view before 3 joined.
    assert_eq!(required, [vec![reg.key()]]);
}

#[test]
fn a_second_copy_of_the_welcome_is_ignored_and_a_stranger_s_refused() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(0, 2, "dup");
    complete(&mut c, 0, &reg);
    c.join(0);
    let welcome = c.in_flight.front().cloned().expect("the welcome");
    c.settle();
    c.in_flight.push_back(welcome.clone());
    c.settle();
    assert_eq!(c.invocations_of(reg.key()), 3);
    let (_, _, messages) = welcome;
    let err = c
        .node(2)
        .handle_message(NodeId(1), messages[0].clone())
        .expect_err("not from the admitter");
    assert!(matches!(
        err,
        ProtocolError::UnexpectedWelcome { from: NodeId(1) }
    ));
}
