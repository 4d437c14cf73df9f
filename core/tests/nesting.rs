//! Registrations requested from inside a running invocation.

mod common;

use common::{Cluster, registration_homed_at};
use herald_core::{LocalState, RegisterError, Registration, Scope};

/// The constructor case: the enclosing load on every node makes the same nested
/// request; it runs locally, is never broadcast, and holds the enclosing ack.
#[test]
fn nested_request_runs_locally_and_holds_the_enclosing_ack() {
    let mut c = Cluster::new(3, 2);
    let outer = registration_homed_at(0, 3, "outer");
    let inner = Registration::new(b"inner".to_vec(), vec![]);
    let request = c.register(0, &outer);
    c.deliver_all();
    let sent_before = c.messages();
    let mut nested_requests = Vec::new();
    for node in 0..3 {
        let parent = c
            .running
            .iter()
            .find(|(n, inv)| n.0 == node && inv.key == outer.key())
            .map(|(_, inv)| inv.id)
            .expect("outer runs");
        let r = c
            .node(node)
            .register(inner.clone(), Some(parent))
            .expect("nested register");
        nested_requests.push(r);
        c.pump();
        let invoked = c
            .running
            .iter()
            .find(|(n, inv)| n.0 == node && inv.key == inner.key());
        assert_eq!(invoked.map(|(_, inv)| inv.parent), Some(Some(parent)));
    }
    assert_eq!(c.messages(), sent_before, "nested requests send nothing");
    for node in 0..3 {
        c.finish(node, outer.key(), Ok(()));
    }
    c.deliver_all();
    assert!(
        c.answer(0, request).is_none(),
        "acks wait for the nested ones"
    );
    assert_eq!(
        c.node(1).local_state(&outer.key()),
        Some(LocalState::Running)
    );
    for node in 0..3 {
        c.finish(node, inner.key(), Ok(()));
    }
    c.deliver_all();
    assert!(c.answer(0, request).expect("answered").is_ok());
    for (node, r) in nested_requests.iter().enumerate() {
        let result = c.answer(node as u32, *r).expect("nested answered");
        assert_eq!(result.scope, Scope::Local);
    }
    assert_eq!(c.invocations_of(inner.key()), 3);
    assert_eq!(c.messages(), 4, "2(N-1): the nested key added nothing");
}

/// A library loaded on a remote node re-runs its constructor, which requests the
/// very registration being executed: recognised, not run twice, not waited on.
#[test]
fn nested_request_for_the_enclosing_key_is_recognised() {
    let mut c = Cluster::new(2, 2);
    let reg = registration_homed_at(0, 2, "self");
    let request = c.register(0, &reg);
    c.deliver_all();
    let parent = c
        .running
        .iter()
        .find(|(n, _)| n.0 == 1)
        .map(|(_, inv)| inv.id)
        .expect("running on node 1");
    let nested = c
        .node(1)
        .register(reg.clone(), Some(parent))
        .expect("nested");
    c.pump();
    assert_eq!(c.invocations_of(reg.key()), 2, "no second invocation");
    assert!(c.answer(1, nested).is_none());
    c.settle();
    assert!(
        c.answer(1, nested)
            .expect("answered with the enclosing one")
            .is_ok()
    );
    assert!(c.answer(0, request).expect("answered").is_ok());
}

/// Two registrations that nest each other (the cross-load case on one node) do
/// not wait on each other forever.
#[test]
fn mutual_nesting_does_not_deadlock() {
    let mut c = Cluster::new(1, 2);
    let a = Registration::new(b"a".to_vec(), vec![]);
    let b = Registration::new(b"b".to_vec(), vec![]);
    let ra = c.register(0, &a);
    let rb = c.register(0, &b);
    let inv_a = c.running[0].1.id;
    let inv_b = c.running[1].1.id;
    c.node(0)
        .register(b.clone(), Some(inv_a))
        .expect("a nests b");
    c.node(0)
        .register(a.clone(), Some(inv_b))
        .expect("b nests a");
    c.pump();
    assert_eq!(c.invoked.len(), 2);
    c.settle();
    assert!(c.answer(0, ra).is_some() && c.answer(0, rb).is_some());
}

#[test]
fn nested_failure_fails_the_enclosing_registration_on_that_node() {
    let mut c = Cluster::new(2, 2);
    let outer = registration_homed_at(0, 2, "outer-fail");
    let inner = Registration::new(b"inner-fail".to_vec(), vec![]);
    let request = c.register(0, &outer);
    c.deliver_all();
    let parent = c
        .running
        .iter()
        .find(|(n, _)| n.0 == 1)
        .map(|(_, i)| i.id)
        .expect("runs");
    c.node(1)
        .register(inner.clone(), Some(parent))
        .expect("nested");
    c.pump();
    c.finish(1, inner.key(), Err("symbol not found".into()));
    c.settle();
    let result = c.answer(0, request).expect("answered");
    assert_eq!(result.failures.len(), 1);
    assert_eq!(result.failures[0].node.0, 1);
    assert!(result.failures[0].error.contains("symbol not found"));
    assert!(result.failures[0].error.contains(&inner.key().short()));
}

#[test]
fn nesting_an_already_finished_key_answers_at_once() {
    let mut c = Cluster::new(1, 2);
    let done = Registration::new(b"done".to_vec(), vec![]);
    c.register(0, &done);
    c.settle();
    let outer = Registration::new(b"outer".to_vec(), vec![]);
    c.register(0, &outer);
    let parent = c.running[0].1.id;
    let nested = c
        .node(0)
        .register(done.clone(), Some(parent))
        .expect("nested");
    c.pump();
    assert_eq!(c.answer(0, nested).map(|r| r.scope), Some(Scope::Local));
    assert_eq!(c.invocations_of(done.key()), 1);
}

#[test]
fn nesting_under_an_unknown_invocation_is_an_error() {
    let mut c = Cluster::new(1, 2);
    let reg = Registration::new(b"x".to_vec(), vec![]);
    c.register(0, &reg);
    let id = c.running[0].1.id;
    c.settle();
    let err = c
        .node(0)
        .register(reg, Some(id))
        .expect_err("finished parent");
    assert_eq!(err, RegisterError::UnknownInvocation(id));
    assert!(
        err.to_string()
            .contains("nest only inside a running invocation")
    );
}

/// A key first run as a nested registration, later requested top-level elsewhere,
/// is acknowledged without running again.
#[test]
fn top_level_request_of_a_nested_key_does_not_rerun_it() {
    let mut c = Cluster::new(3, 2);
    let outer = registration_homed_at(0, 3, "o");
    let inner = registration_homed_at(1, 3, "i");
    c.register(0, &outer);
    c.deliver_all();
    for node in 0..3 {
        let parent = c
            .running
            .iter()
            .find(|(n, _)| n.0 == node)
            .map(|(_, i)| i.id)
            .expect("runs");
        c.node(node)
            .register(inner.clone(), Some(parent))
            .expect("nested");
    }
    c.pump();
    c.settle();
    let late = c.register(2, &inner);
    c.settle();
    assert!(c.answer(2, late).expect("answered").is_ok());
    assert_eq!(c.invocations_of(inner.key()), 3);
}
