//! Exhaustive exploration: every interleaving of requests, deliveries, invocation
//! and task completions, crashes, in-flight losses and failure detections, with
//! states deduplicated by hash. The invariants are checked after every action and
//! at every terminal state. Run with `-- --nocapture` to see the state counts.

use herald_core::{Node, NodeId};
use herald_sim::{
    Action, Exploration, ExploreError, ExploreLimits, Faults, NodeSet, Scenario, Script, explore,
};
use sim_tests::{EarlyAnswer, Tampered, home_of, not_home_of};

/// Explores `scenario` completely, panicking with the counterexample if an
/// invariant breaks, and prints what was covered.
fn explore_all(name: &str, scenario: &Scenario) -> Exploration {
    let limits = ExploreLimits {
        max_states: 2_000_000,
    };
    let exploration = explore::<Node>(scenario, limits).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "{name:<44} N={} states={:>8} transitions={:>9} terminal={:>6} depth={}",
        scenario.nodes,
        exploration.states,
        exploration.transitions,
        exploration.terminal_states,
        exploration.max_depth
    );
    assert!(exploration.terminal_states > 0, "{name}: no run ever ended");
    exploration
}

fn library() -> Script {
    Script::new("libtasks.so").with_tasks(["saxpy"])
}

#[test]
fn one_registration_from_the_home_and_from_elsewhere() {
    for nodes in 1..=4 {
        let script = library();
        let home = home_of(&script, nodes);
        let scenario = Scenario::new(nodes)
            .with_fanout(2)
            .with_request(home, 0, script.clone());
        explore_all("one registration, requester is the home", &scenario);
        if nodes > 1 {
            let other = not_home_of(&script, nodes);
            let scenario = Scenario::new(nodes)
                .with_fanout(2)
                .with_request(other, 0, script);
            explore_all("one registration, requester is not the home", &scenario);
        }
    }
}

#[test]
fn one_registration_that_fails_on_two_nodes() {
    for nodes in 3..=4 {
        let script = library().failing_on([NodeId(1), NodeId(2)]);
        let scenario = Scenario::new(nodes).with_request(NodeId(0), 0, script);
        explore_all("one registration failing on nodes 1 and 2", &scenario);
    }
}

#[test]
fn two_requesters_of_one_key_at_once() {
    for nodes in 2..=4 {
        let scenario = Scenario::new(nodes)
            .with_fanout(2)
            .with_request(NodeId(0), 0, library())
            .with_request(NodeId(nodes - 1), 0, library());
        explore_all("two requesters of one key", &scenario);
    }
}

#[test]
fn a_load_that_registers_again_on_every_node() {
    for nodes in 2..=4 {
        let inner = Script::new("libinner.so").with_tasks(["inner_task"]);
        let outer = library().with_nested(NodeSet::All, inner);
        let scenario = Scenario::new(nodes).with_request(NodeId(0), 0, outer);
        explore_all("nested registration on every node", &scenario);
    }
}

/// Two nodes load two libraries at once; each library's constructor registers the
/// other globally. On every other node, each load nests the other's key: the
/// classic cross-load deadlock, which herald must resolve without blocking.
#[test]
fn two_libraries_whose_constructors_register_each_other() {
    for nodes in 2..=3 {
        let (a, b) = cross_loading_pair();
        let scenario = Scenario::new(nodes)
            .with_request(NodeId(0), 0, a)
            .with_request(NodeId(1), 0, b);
        explore_all("cross-loading libraries", &scenario);
    }
}

#[test]
fn one_node_crashing_mid_registration() {
    for nodes in 2..=4 {
        for requester in [NodeId(0), NodeId(nodes - 1)] {
            let faults = Faults {
                crashes: 1,
                lose_in_flight: true,
                crash_candidates: (0..nodes).map(NodeId).filter(|n| *n != requester).collect(),
                ..Faults::default()
            };
            let scenario = Scenario::new(nodes)
                .with_fanout(1)
                .with_request(requester, 0, library())
                .with_faults(faults);
            explore_all("one crash during a registration", &scenario);
        }
    }
}

#[test]
fn one_crash_with_two_requesters() {
    let faults = Faults {
        crashes: 1,
        lose_in_flight: true,
        ..Faults::default()
    };
    let scenario = Scenario::new(3)
        .with_request(NodeId(0), 0, library())
        .with_request(NodeId(2), 0, library())
        .with_faults(faults);
    explore_all("one crash (any node), two requesters", &scenario);
}

#[test]
fn two_crashes_during_a_registration() {
    for nodes in 3..=4 {
        let faults = Faults {
            crashes: 2,
            lose_in_flight: true,
            crash_candidates: (1..nodes).map(NodeId).collect(),
            ..Faults::default()
        };
        let scenario = Scenario::new(nodes)
            .with_fanout(1)
            .with_request(NodeId(0), 0, library())
            .with_faults(faults);
        explore_all("two crashes during a registration", &scenario);
    }
}

/// A partition cuts the job in two at any moment: each side finishes, naming the
/// other side's nodes that had not acknowledged.
#[test]
fn a_partition_during_a_registration() {
    // With 3 nodes, cutting off node 1 is the only cut between the requesters'
    // neighbours; with 4, node 1 alone or the two requesters' ends.
    let cuts = |nodes: u32| match nodes {
        3 => vec![vec![NodeId(1)]],
        _ => vec![vec![NodeId(1)], vec![NodeId(0), NodeId(nodes - 1)]],
    };
    for nodes in 3..=4 {
        for side in cuts(nodes) {
            let faults = Faults {
                partitions: 1,
                partition_side: side,
                lose_in_flight: true,
                ..Faults::default()
            };
            let scenario = Scenario::new(nodes)
                .with_fanout(1)
                .with_request(NodeId(0), 0, library())
                .with_request(NodeId(nodes - 1), 0, library())
                .with_faults(faults);
            explore_all("a partition, requesters on both ends", &scenario);
        }
    }
}

/// A crash while loads nest registrations and a task waits for them.
#[test]
fn a_crash_while_loads_nest_and_a_task_waits() {
    let inner = Script::new("libinner.so").with_tasks(["inner_task"]);
    let outer = library().with_nested(NodeSet::All, inner);
    let faults = Faults {
        crashes: 1,
        lose_in_flight: true,
        ..Faults::default()
    };
    let scenario = Scenario::new(3)
        .with_request(NodeId(0), 0, outer)
        .with_launch(NodeId(0), NodeId(2), 1, "inner_task")
        .with_faults(faults);
    explore_all("a crash, nesting and a waiting task", &scenario);
}

/// A task launched right after the registration it needs never runs before that
/// registration is done on its target; an unregistered task fails, never hangs.
#[test]
fn launches_wait_for_their_registrations() {
    for nodes in 2..=3 {
        let scenario = Scenario::new(nodes)
            .with_request(NodeId(0), 0, library())
            .with_launch(NodeId(0), NodeId(nodes - 1), 1, "saxpy")
            .with_launch(NodeId(0), NodeId(1), 1, "never_registered");
        explore_all("launches carrying their requirements", &scenario);
    }
}

/// The checks have teeth: a protocol that answers requests at once, before any
/// other node ran the registration, is caught.
#[test]
fn an_early_answer_is_caught() {
    let scenario = Scenario::new(2).with_request(NodeId(0), 0, library());
    let error = explore::<Tampered<EarlyAnswer>>(&scenario, ExploreLimits::default())
        .expect_err("must be caught");
    match error {
        ExploreError::Violation(counterexample) => {
            let text = counterexample.violations[0].to_string();
            assert!(
                text.contains("complete while node 0 had not finished"),
                "{text}"
            );
            assert_eq!(counterexample.path, [Action::Request(0)]);
        }
        other => panic!("unexpected {other}"),
    }
}

/// The pair of libraries of the cross-load case: `libA` (requested on node 0)
/// nests `libB` on every node but 0, `libB` (requested on node 1) nests `libA`
/// on every node but 1. Tags give each library one key at every nesting depth.
fn cross_loading_pair() -> (Script, Script) {
    let a = || Script::new("libA.so").with_tag("libA");
    let b = || Script::new("libB.so").with_tag("libB");
    let not_0 = || NodeSet::AllExcept(vec![NodeId(0)]);
    let not_1 = || NodeSet::AllExcept(vec![NodeId(1)]);
    let full_a = a().with_nested(not_0(), b().with_nested(not_1(), a()));
    let full_b = b().with_nested(not_1(), a().with_nested(not_0(), b()));
    (full_a, full_b)
}
