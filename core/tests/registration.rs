//! Global registration in fault-free runs: counts, at-most-once, answers.

mod common;

use common::{Cluster, registration_homed_at};
use herald_core::{LocalState, NodeId, Registration, Scope};

#[test]
fn requester_at_home_costs_two_messages_per_other_node() {
    for nodes in [1, 2, 3, 5, 16, 33] {
        let mut c = Cluster::new(nodes, 2);
        let reg = registration_homed_at(0, nodes, "home");
        let request = c.register(0, &reg);
        c.settle();
        let result = c.answer(0, request).expect("answered");
        assert!(result.is_ok());
        assert_eq!(result.scope, Scope::Global);
        assert_eq!(c.messages(), 2 * (nodes as usize - 1), "nodes={nodes}");
        assert_eq!(c.invocations_of(reg.key()), nodes as usize);
        assert!(c.nodes.iter().all(|n| n.is_quiescent()));
    }
}

#[test]
fn requester_away_from_home_adds_request_and_complete() {
    let nodes = 7;
    let mut c = Cluster::new(nodes, 3);
    let reg = registration_homed_at(4, nodes, "away");
    let request = c.register(1, &reg);
    assert_eq!(
        c.invocations_of(reg.key()),
        1,
        "the requester runs it at once"
    );
    assert_eq!(c.in_flight.len(), 1);
    assert_eq!(c.in_flight[0].1, NodeId(4), "one request, to the home");
    c.settle();
    assert!(c.answer(1, request).expect("answered").is_ok());
    assert_eq!(c.messages(), 2 * 6 + 2);
    assert!(
        !c.sent_by_kind.contains_key("ran"),
        "node 1 is no child of 4"
    );
    assert_eq!(c.sent_by_kind["request"], 1);
    assert_eq!(c.sent_by_kind["complete"], 1);
    assert_eq!(c.invocations_of(reg.key()), 7);
}

#[test]
fn completion_waits_for_every_node_to_finish() {
    let mut c = Cluster::new(4, 2);
    let reg = registration_homed_at(0, 4, "wait");
    let request = c.register(0, &reg);
    c.deliver_all();
    assert_eq!(c.running.len(), 4, "every node is invoking");
    for node in [0, 1, 2] {
        c.finish(node, reg.key(), Ok(()));
        c.deliver_all();
        assert!(c.answer(0, request).is_none(), "not complete before node 3");
    }
    c.finish(3, reg.key(), Ok(()));
    c.deliver_all();
    assert!(c.answer(0, request).expect("answered").is_ok());
}

#[test]
fn second_local_request_joins_the_first() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(2, 3, "join");
    let first = c.register(0, &reg);
    let second = c.register(0, &reg);
    assert_eq!(c.invocations_of(reg.key()), 1);
    assert_eq!(c.in_flight.len(), 1, "one request to the home for both");
    c.settle();
    assert!(c.answer(0, first).is_some() && c.answer(0, second).is_some());
    assert_eq!(c.invocations_of(reg.key()), 3);
    // Node 0 is a childless child of the home: its ran replaces its disseminate
    // and ack (see ran.rs).
    assert_eq!(c.messages(), 2 * 2 + 1);
    assert_eq!(c.sent_by_kind["ran"], 1, "one ran for both requests");
}

#[test]
fn request_after_completion_is_answered_locally() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(1, 3, "again");
    c.register(0, &reg);
    c.settle();
    let before = c.messages();
    let again = c.register(0, &reg);
    assert!(c.answer(0, again).expect("answered at once").is_ok());
    assert_eq!(c.messages(), before, "no message for a known result");
}

#[test]
fn coordinator_answers_late_requester_from_its_cache() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(1, 3, "cache");
    c.register(1, &reg);
    c.settle();
    let before = c.messages();
    let late = c.register(2, &reg);
    c.settle();
    assert!(c.answer(2, late).expect("answered").is_ok());
    assert_eq!(c.messages(), before + 2, "request and complete only");
    assert_eq!(c.invocations_of(reg.key()), 3, "nobody runs it twice");
}

#[test]
fn replicated_requesters_cost_linear_messages() {
    let nodes = 16;
    let mut c = Cluster::new(nodes, 4);
    let reg = registration_homed_at(5, nodes, "shards");
    let requests: Vec<_> = (0..nodes).map(|i| c.register(i, &reg)).collect();
    c.settle();
    for (i, r) in requests.iter().enumerate() {
        assert!(
            c.answer(i as u32, *r)
                .expect("every shard answered")
                .is_ok()
        );
    }
    assert_eq!(c.invocations_of(reg.key()), nodes as usize);
    assert!(c.messages() <= 2 * (nodes as usize - 1) + 2 * nodes as usize);
}

#[test]
fn failures_name_each_failing_node_with_its_error() {
    let mut c = Cluster::new(5, 2);
    let reg = registration_homed_at(0, 5, "fail");
    let request = c.register(0, &reg);
    c.deliver_all();
    for node in 0..5 {
        let outcome = if node == 2 || node == 4 {
            Err(format!("cannot load on {node}"))
        } else {
            Ok(())
        };
        c.finish(node, reg.key(), outcome);
        c.deliver_all();
    }
    let result = c.answer(0, request).expect("answered");
    let named: Vec<(u32, &str)> = result
        .failures
        .iter()
        .map(|f| (f.node.0, f.error.as_str()))
        .collect();
    assert_eq!(named, [(2, "cannot load on 2"), (4, "cannot load on 4")]);
    assert!(result.unreachable.is_empty());
    assert!(!result.is_ok());
    assert!(result.to_string().contains("node 4: cannot load on 4"));
}

#[test]
fn arguments_are_part_of_the_key() {
    let mut c = Cluster::new(2, 2);
    let a = Registration::new(b"lib:cb".to_vec(), b"one".to_vec());
    let b = Registration::new(b"lib:cb".to_vec(), b"two".to_vec());
    c.register(0, &a);
    c.register(0, &b);
    c.settle();
    assert_eq!(c.invocations_of(a.key()), 2);
    assert_eq!(c.invocations_of(b.key()), 2, "not dropped as a duplicate");
}

#[test]
fn messages_for_one_link_share_a_frame() {
    let mut c = Cluster::new(2, 2);
    let regs: Vec<Registration> = (0..10)
        .map(|i| registration_homed_at(1, 2, &format!("batch{i}")))
        .collect();
    for reg in &regs {
        c.node(0).register(reg.clone(), None).expect("register");
    }
    c.pump();
    assert_eq!(c.frames, 1, "ten requests to node 1, one frame");
    assert_eq!(c.in_flight[0].2.len(), 10);
    c.settle();
    assert!(
        c.frames < 10 * 3,
        "answers are batched too: {} frames",
        c.frames
    );
}

#[test]
fn local_state_and_log_follow_completion_order() {
    let mut c = Cluster::new(1, 2);
    let a = Registration::new(b"a".to_vec(), vec![]);
    let b = Registration::new(b"b".to_vec(), vec![]);
    c.register(0, &a);
    c.register(0, &b);
    assert_eq!(c.node(0).local_state(&a.key()), Some(LocalState::Running));
    c.finish(0, b.key(), Ok(()));
    c.finish(0, a.key(), Err("boom".into()));
    assert_eq!(
        c.node(0).local_state(&a.key()),
        Some(LocalState::Done(Err("boom".into())))
    );
    let log: Vec<_> = c.node(0).completed_log().map(|(k, _)| *k).collect();
    assert_eq!(log, [b.key(), a.key()]);
    assert!(c.node(0).global_result(&b.key()).expect("known").is_ok());
}

#[test]
fn config_rejects_impossible_jobs_with_advice() {
    use herald_core::{Config, ConfigError};
    assert_eq!(Config::new(NodeId(0), 0), Err(ConfigError::NoNodes));
    let err = Config::new(NodeId(4), 4).expect_err("out of range");
    assert!(err.to_string().contains("ids run from 0 to 3"));
    let config = Config::new(NodeId(0), 4).expect("valid");
    assert_eq!(config.with_fanout(0), Err(ConfigError::ZeroFanout));
    assert!(config.with_max_frame_bytes(10).is_err());
    let small = config.with_max_frame_bytes(4096).expect("valid");
    let mut node = herald_core::Node::new(small);
    let big = Registration::new(vec![0; 4096], vec![]);
    assert!(matches!(
        node.register(big, None),
        Err(herald_core::RegisterError::TooLarge { .. })
    ));
    // A frame limit must hold a report naming every node of the job.
    let huge = Config::new(NodeId(0), 100_000).expect("fits the default limit");
    let err = huge
        .with_max_frame_bytes(64 << 10)
        .expect_err("too small for the job");
    assert!(
        err.to_string()
            .contains("too small for a job of 100000 nodes; use at least"),
        "{err}"
    );
}
