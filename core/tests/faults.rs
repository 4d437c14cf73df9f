//! Crash-stop nodes and lost connections: adoption, re-routing, naming.

mod common;

use common::{Cluster, registration_homed_at};
use herald_core::{Message, NodeId};

/// Tree for 7 nodes, fanout 2, rooted at 0: 0 -> {1, 2}, 1 -> {3, 4}, 2 -> {5, 6}.
fn seven_rooted_at_zero() -> (Cluster, herald_core::Registration) {
    (Cluster::new(7, 2), registration_homed_at(0, 7, "fault"))
}

fn unreachable(c: &Cluster, node: u32, request: herald_core::RequestId) -> Vec<u32> {
    let result = c.answer(node, request).expect("answered");
    result.unreachable.iter().map(|n| n.0).collect()
}

#[test]
fn parent_adopts_the_subtree_of_a_child_that_died_before_forwarding() {
    let (mut c, reg) = seven_rooted_at_zero();
    let request = c.register(0, &reg);
    c.peer_down_everywhere(1);
    c.settle();
    assert_eq!(unreachable(&c, 0, request), [1]);
    for node in [0, 2, 3, 4, 5, 6] {
        let count = c
            .invoked
            .iter()
            .filter(|(n, k)| n.0 == node && *k == reg.key())
            .count();
        assert_eq!(count, 1, "node {node}");
    }
    assert!(
        c.nodes
            .iter()
            .enumerate()
            .all(|(i, n)| i == 1 || n.is_quiescent())
    );
}

#[test]
fn adopted_children_that_already_acknowledged_the_dead_parent_acknowledge_again() {
    let (mut c, reg) = seven_rooted_at_zero();
    let request = c.register(0, &reg);
    c.deliver_all();
    // Nodes 3 and 4 finish and acknowledge to node 1, which dies holding their acks.
    for node in [3, 4] {
        c.finish(node, reg.key(), Ok(()));
    }
    c.deliver_all();
    c.peer_down_everywhere(1);
    c.settle();
    assert_eq!(unreachable(&c, 0, request), [1]);
    assert_eq!(c.invocations_of(reg.key()), 7, "no node ran it twice");
}

#[test]
fn a_late_copy_from_the_dead_parent_does_not_steal_the_adopted_child() {
    let (mut c, reg) = seven_rooted_at_zero();
    let request = c.register(0, &reg);
    // Node 1 receives and forwards; its copy to node 3 is still in flight.
    let to_one = c
        .in_flight
        .iter()
        .position(|(_, to, _)| to.0 == 1)
        .expect("sent to 1");
    let frame = c.in_flight.remove(to_one).expect("frame");
    c.in_flight.push_front(frame);
    c.deliver_one();
    let late = c
        .in_flight
        .iter()
        .position(|(from, to, _)| from.0 == 1 && to.0 == 3)
        .expect("1 -> 3");
    let late = c.in_flight.remove(late).expect("frame");
    // Only node 0 has noticed the crash; it adopts node 3 first.
    c.node(0).peer_down(NodeId(1), "connection lost");
    c.in_flight.retain(|(from, to, _)| from.0 != 1 && to.0 != 1);
    c.pump();
    let adopt = c
        .in_flight
        .iter()
        .position(|(_, to, _)| to.0 == 3)
        .expect("0 -> 3");
    let adopt = c.in_flight.remove(adopt).expect("frame");
    c.in_flight.push_front(late);
    c.in_flight.push_front(adopt);
    c.deliver_one();
    c.deliver_one();
    c.settle();
    // Node 3 acknowledged to node 0, not to the dead node 1.
    assert_eq!(unreachable(&c, 0, request), [1]);
}

#[test]
fn a_node_already_down_is_skipped_and_named() {
    let (mut c, reg) = seven_rooted_at_zero();
    c.peer_down_everywhere(2);
    let request = c.register(0, &reg);
    c.settle();
    assert_eq!(unreachable(&c, 0, request), [2]);
    assert_eq!(c.invocations_of(reg.key()), 6);
}

#[test]
fn requests_move_to_the_next_live_node_when_the_coordinator_dies() {
    let mut c = Cluster::new(4, 2);
    let reg = registration_homed_at(2, 4, "moved");
    let request = c.register(0, &reg);
    assert_eq!(c.in_flight[0].1, NodeId(2));
    c.peer_down_everywhere(2);
    let requests = c.in_flight_of_kind("request");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1, NodeId(3), "re-sent to the next live node");
    c.settle();
    assert_eq!(unreachable(&c, 0, request), [2]);
    assert_eq!(c.invocations_of(reg.key()), 3);
}

#[test]
fn coordinator_dying_mid_round_is_replaced_without_reinvoking() {
    let mut c = Cluster::new(5, 2);
    let reg = registration_homed_at(1, 5, "midround");
    let requests: Vec<_> = [0, 3].iter().map(|&n| (n, c.register(n, &reg))).collect();
    c.deliver_all();
    for node in [0, 2, 3] {
        c.finish(node, reg.key(), Ok(()));
    }
    c.deliver_all();
    c.peer_down_everywhere(1);
    c.settle();
    for (node, request) in requests {
        assert_eq!(unreachable(&c, node, request), [1], "requester {node}");
    }
    assert_eq!(
        c.invocations_of(reg.key()),
        5,
        "node 1 ran it before dying; nobody twice"
    );
}

#[test]
fn coordinator_sends_no_answer_to_a_dead_requester() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "deadreq");
    c.register(2, &reg);
    c.deliver_one();
    c.peer_down_everywhere(2);
    c.settle();
    assert!(!c.sent_by_kind.contains_key("complete"));
    assert!(c.nodes.iter().take(2).all(|n| n.is_quiescent()));
}

#[test]
fn messages_from_a_node_reported_down_are_ignored() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(0, 3, "ignored");
    c.node(0).peer_down(NodeId(2), "connection lost");
    c.node(0)
        .handle_message(
            NodeId(2),
            Message::Request {
                key: reg.key(),
                registration: reg.clone(),
                offer: None,
            },
        )
        .expect("ignored without error");
    c.pump();
    assert!(c.invoked.is_empty());
    assert_eq!(
        c.in_flight.len(),
        c.in_flight_of_kind("down").len(),
        "only the news that 2 is down goes out"
    );
}

#[test]
fn peer_down_is_idempotent_and_ignores_self_and_strangers() {
    let mut c = Cluster::new(3, 2);
    c.node(0).peer_down(NodeId(0), "connection lost");
    c.node(0)
        .peer_down(NodeId(herald_core::MAX_NODES), "connection lost");
    c.node(0).peer_down(NodeId(1), "connection lost");
    c.node(0).peer_down(NodeId(1), "connection lost");
    let dead: Vec<u32> = c.node(0).dead_nodes().iter().map(|n| n.0).collect();
    assert_eq!(dead, [1]);
    // A peer beyond the view joined since: the view grows to include it.
    c.node(0).peer_down(NodeId(4), "connection lost");
    let dead: Vec<u32> = c.node(0).dead_nodes().iter().map(|n| n.0).collect();
    assert_eq!(dead, [1, 4]);
    assert_eq!(c.node(0).view().size, 5);
}
