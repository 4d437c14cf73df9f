//! A requester that is a childless child of its coordinator in the tree over its
//! view offers to report its own run (`Request { offer }`), and then sends `Ran`
//! instead of taking part in the round: the coordinator leaves it out of the
//! dissemination, and the round completes one round trip sooner. Every transition
//! of the offer, on both sides, driven directly.

mod common;

use common::{Cluster, registration_homed_at};
use herald_core::{Config, Key, Message, Node, NodeId, Output, Registration};

#[test]
fn a_childless_child_of_the_home_reports_its_run_instead_of_taking_part() {
    for (nodes, fanout) in [(2, 4), (3, 2), (5, 4)] {
        let mut c = Cluster::new(nodes, fanout);
        let home = nodes - 1;
        let reg = registration_homed_at(home, nodes, "ran");
        let request = c.register(0, &reg);
        assert!(
            matches!(&c.in_flight[0].2[0], Message::Request { offer: Some(v), .. } if *v == nodes),
            "N={nodes}: the request offers the requester's run under its view"
        );
        c.deliver_one();
        assert!(
            c.in_flight.iter().all(|(_, to, messages)| *to != NodeId(0)
                || messages.iter().all(|m| m.kind() != "disseminate")),
            "N={nodes}: the coordinator does not disseminate to the requester"
        );
        c.settle();
        let result = c.answer(0, request).expect("answered");
        assert!(result.is_ok(), "N={nodes}: {result:?}");
        assert_eq!(c.invocations_of(reg.key()), nodes as usize);
        assert_eq!(c.sent_by_kind["ran"], 1, "N={nodes}");
        assert_eq!(
            c.messages(),
            2 * (nodes as usize - 1) + 1,
            "N={nodes}: request, ran and complete replace the requester's disseminate and ack"
        );
        assert!(c.nodes.iter().all(Node::is_quiescent), "N={nodes}");
    }
}

#[test]
fn the_round_waits_for_the_requesters_ran_and_carries_its_failure() {
    let mut c = Cluster::new(2, 4);
    let reg = registration_homed_at(1, 2, "wait for ran");
    let request = c.register(0, &reg);
    c.deliver_all();
    c.finish(1, reg.key(), Ok(()));
    c.deliver_all();
    assert!(
        c.answer(0, request).is_none(),
        "the coordinator finished, but the requester has not"
    );
    assert!(!c.node(1).is_quiescent(), "the round waits for the ran");
    c.finish(0, reg.key(), Err("boom".into()));
    c.deliver_all();
    let result = c
        .answer(0, request)
        .expect("answered once the requester ran");
    assert_eq!(result.failures.len(), 1);
    assert_eq!(result.failures[0].node, NodeId(0));
    assert_eq!(result.failures[0].error, "boom");
    assert!(c.nodes.iter().all(Node::is_quiescent));
}

#[test]
fn a_huge_error_text_in_a_ran_is_cut_to_what_an_ack_carries() {
    let limit = 8192;
    let mut c = Cluster::with_frame_limit(2, 4, limit);
    let reg = registration_homed_at(1, 2, "huge");
    let request = c.register(0, &reg);
    c.deliver_all();
    c.finish(1, reg.key(), Ok(()));
    // Cluster::pump asserts every frame fits the limit.
    c.finish(0, reg.key(), Err("x".repeat(10 * limit)));
    c.deliver_all();
    let result = c.answer(0, request).expect("answered");
    let text = &result.failures[0].error;
    assert!(text.len() < limit / 4, "{} bytes carried", text.len());
    assert!(text.contains("bytes cut"), "{text}");
}

#[test]
fn a_requester_reached_by_the_round_first_acknowledges_and_sends_no_ran() {
    let mut c = Cluster::new(2, 4);
    let reg = registration_homed_at(1, 2, "round first");
    c.register(1, &reg); // the home's own round: a disseminate to node 0 in flight
    let request = c.register(0, &reg);
    c.deliver_all(); // the disseminate reaches node 0 before it finished
    c.settle();
    assert!(c.answer(0, request).expect("answered").is_ok());
    assert!(!c.sent_by_kind.contains_key("ran"), "the ack said it");
    assert_eq!(c.sent_by_kind["ack"], 1);
    assert_eq!(c.messages(), 4, "2(N-1)+2, as for any requester");
    assert!(c.nodes.iter().all(Node::is_quiescent));
}

#[test]
fn a_ran_sent_before_the_round_reached_the_requester_stands_for_its_ack() {
    let mut c = Cluster::new(2, 4);
    let reg = registration_homed_at(1, 2, "ran first");
    c.register(1, &reg); // disseminate 1 -> 0 in flight
    let request = c.register(0, &reg); // request 0 -> 1 in flight
    c.finish(0, reg.key(), Ok(())); // ran 0 -> 1 in flight, before the disseminate arrived
    let disseminate = c.in_flight.pop_front().expect("the disseminate");
    assert_eq!(disseminate.1, NodeId(0));
    c.deliver_all(); // request and ran reach the home first, and it takes the ran
    c.finish(1, reg.key(), Ok(()));
    // The complete to node 0 is in flight; links are FIFO, so the disseminate,
    // sent first on the same link, arrives before it.
    assert_eq!(c.in_flight_of_kind("complete").len(), 1);
    assert!(c.answer(0, request).is_none());
    c.in_flight.push_front(disseminate);
    c.deliver_all();
    assert!(c.answer(0, request).expect("answered").is_ok());
    assert!(!c.sent_by_kind.contains_key("ack"), "the ran stood for it");
    assert_eq!(c.sent_by_kind["ran"], 1);
    assert!(c.nodes.iter().all(Node::is_quiescent));
}

#[test]
fn a_requester_with_children_in_the_coordinators_tree_makes_no_offer() {
    // N = 7, fan-out 2, home 6: node 0 sits at position 1 and has children.
    let mut c = Cluster::new(7, 2);
    let reg = registration_homed_at(6, 7, "inner");
    let request = c.register(0, &reg);
    assert!(matches!(
        &c.in_flight[0].2[0],
        Message::Request { offer: None, .. }
    ));
    c.settle();
    assert!(c.answer(0, request).expect("answered").is_ok());
    assert!(!c.sent_by_kind.contains_key("ran"));
    assert_eq!(c.messages(), 2 * 6 + 2);
}

#[test]
fn a_skipped_requester_that_goes_down_is_named_unreachable() {
    let mut c = Cluster::new(3, 2);
    let reg = registration_homed_at(2, 3, "requester dies");
    c.register(0, &reg);
    c.deliver_all();
    c.finish(2, reg.key(), Ok(()));
    c.finish(1, reg.key(), Ok(()));
    c.deliver_all();
    assert!(c.node(2).global_result(&reg.key()).is_none(), "waits for 0");
    c.peer_down_everywhere(0);
    c.deliver_all();
    let result = c.node(2).global_result(&reg.key()).expect("completed");
    assert_eq!(result.unreachable, vec![NodeId(0)]);
    assert!(result.failures.is_empty());
}

#[test]
fn a_requester_whose_coordinator_goes_down_offers_again_to_the_next() {
    // N = 3, fan-out 4, home 1: node 0 is a childless child of 1, then of 2.
    let mut c = Cluster::new(3, 4);
    let reg = registration_homed_at(1, 3, "coordinator dies");
    let request = c.register(0, &reg);
    c.deliver_all();
    c.finish(0, reg.key(), Ok(())); // its ran to node 1 is lost with node 1
    c.peer_down_everywhere(1);
    let offers: Vec<_> = c
        .in_flight
        .iter()
        .filter(|(from, to, _)| from.0 == 0 && to.0 == 2)
        .flat_map(|(_, _, messages)| messages.iter().map(Message::kind))
        .filter(|kind| *kind != "down")
        .collect();
    assert_eq!(offers, ["request", "ran"], "done already: both at once");
    c.settle();
    let result = c.answer(0, request).expect("answered by node 2");
    assert_eq!(result.unreachable, vec![NodeId(1)]);
    assert!(c.ran(2, reg.key()));
    assert_eq!(c.invocations_of(reg.key()), 3);
}

/// A coordinator fed messages directly: node 2 of a job of 3 (fan-out 4).
fn coordinator() -> Node {
    let config = Config::new(NodeId(2), 3)
        .and_then(|c| c.with_fanout(4))
        .expect("config");
    Node::new(config)
}

/// Node 0's request for `reg` reaches the coordinator, with `offer`; it runs
/// there at once. The outputs.
fn request_from_0(node: &mut Node, reg: &Registration, offer: Option<u32>) -> Vec<Output> {
    let message = Message::Request {
        key: reg.key(),
        registration: reg.clone(),
        offer,
    };
    node.handle_message(NodeId(0), message).expect("valid");
    let out = outputs(node);
    for output in &out {
        if let Output::Invoke(invocation) = output {
            node.invocation_finished(invocation.id, Ok(()))
                .expect("finish");
        }
    }
    [out, outputs(node)].concat()
}

/// `from` acknowledges the coordinator's round of `key`; the outputs.
fn ack(node: &mut Node, from: u32, key: Key) -> Vec<Output> {
    let root = node.config().node();
    let report = Default::default();
    let message = Message::Ack { key, root, report };
    node.handle_message(NodeId(from), message).expect("valid");
    outputs(node)
}

/// `from` reports its own run of `key`, offered over `view`; the outputs.
fn ran(node: &mut Node, from: u32, key: Key, view: u32, error: Option<&str>) -> Vec<Output> {
    let error = error.map(str::to_owned);
    let message = Message::Ran { key, view, error };
    node.handle_message(NodeId(from), message).expect("valid");
    outputs(node)
}

fn outputs(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

fn disseminated_to(outputs: &[Output]) -> Vec<NodeId> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit { to, messages }
                if messages.iter().any(|m| m.kind() == "disseminate") =>
            {
                Some(*to)
            }
            _ => None,
        })
        .collect()
}

fn completes(outputs: &[Output]) -> bool {
    outputs.iter().any(|o| {
        matches!(o, Output::Transmit { messages, .. } if messages.iter().any(|m| m.kind() == "complete"))
    })
}

#[test]
fn an_offer_over_a_view_larger_than_the_coordinators_is_declined() {
    let mut node = coordinator();
    let reg = Registration::new(b"larger view".to_vec(), vec![]);
    // Node 0 claims a view of 5: it may have admitted joiners node 2 never heard
    // of, which would hang below it, so it must take part as usual.
    let out = request_from_0(&mut node, &reg, Some(5));
    assert_eq!(disseminated_to(&out), [NodeId(0), NodeId(1)]);
    assert!(!completes(&ack(&mut node, 1, reg.key())));
    assert!(completes(&ack(&mut node, 0, reg.key())));
}

#[test]
fn a_ran_that_cannot_stand_for_a_part_is_ignored() {
    let mut node = coordinator();
    let reg = Registration::new(b"stray ran".to_vec(), vec![]);
    let key = reg.key();
    let mut out = request_from_0(&mut node, &reg, Some(5));
    out.extend(ack(&mut node, 1, key));
    // A ran under the declined offer, and one from a node that made none.
    out.extend(ran(&mut node, 0, key, 5, None));
    out.extend(ran(&mut node, 1, key, 3, None));
    assert!(!completes(&out), "node 0's own part is still outstanding");
    assert!(completes(&ack(&mut node, 0, key)));
    assert!(node.is_quiescent());
}

#[test]
fn an_accepted_offer_leaves_the_requester_out_and_its_ran_completes_the_round() {
    let mut node = coordinator();
    let reg = Registration::new(b"accepted".to_vec(), vec![]);
    let key = reg.key();
    let mut out = request_from_0(&mut node, &reg, Some(3));
    assert_eq!(disseminated_to(&out), [NodeId(1)]);
    out.extend(ack(&mut node, 1, key));
    assert!(!completes(&out), "waits for node 0's ran");
    assert!(completes(&ran(&mut node, 0, key, 3, Some("failed at 0"))));
    let result = node.global_result(&key).expect("completed");
    assert_eq!(result.failures[0].node, NodeId(0));
    assert!(node.is_quiescent());
}
