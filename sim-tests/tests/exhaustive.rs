//! Exhaustive exploration: every interleaving of requests, deliveries, invocation
//! and task completions, crashes, broken links, suspicions, pauses, duplicates,
//! in-flight losses and failure detections, with states deduplicated by hash. The
//! invariants are checked after every action and at every terminal state. Every
//! scenario asserts a lower bound on the distinct states it explores, so a change
//! that shrinks exploration fails. Run with `-- --nocapture` to see the counts.

use herald_core::{Config, Node, NodeId};
use herald_sim::{
    Action, After, Exploration, ExploreError, ExploreLimits, Faults, NodeSet, Scenario, Script,
    explore,
};
use sim_tests::{EarlyAnswer, Tampered, home_of, not_home_of};

/// Explores `scenario` completely, panicking with the counterexample if an
/// invariant breaks or fewer than `min_states` distinct states were reached, and
/// prints what was covered.
fn explore_all(name: &str, scenario: &Scenario, min_states: u64) -> Exploration {
    let limits = ExploreLimits {
        max_states: 1_000_000,
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
    assert!(
        exploration.states >= min_states,
        "{name} (N={}): explored {} states, fewer than the {min_states} it used to: \
         the exploration shrank",
        scenario.nodes,
        exploration.states
    );
    exploration
}

fn library() -> Script {
    Script::new("libtasks.so").with_tasks(["saxpy"])
}

/// Lower bounds on distinct states, indexed like the scenarios of each test.
#[test]
fn one_registration_from_the_home_and_from_elsewhere() {
    let at_home = [3, 9, 33, 81];
    let elsewhere = [0, 10, 28, 92];
    for nodes in 1..=4 {
        let script = library();
        let home = home_of(&script, nodes);
        let scenario = Scenario::new(nodes)
            .with_fanout(2)
            .with_request(home, 0, script.clone());
        let min = at_home[nodes as usize - 1];
        explore_all("one registration, requester is the home", &scenario, min);
        if nodes > 1 {
            let other = not_home_of(&script, nodes);
            let scenario = Scenario::new(nodes)
                .with_fanout(2)
                .with_request(other, 0, script);
            let min = elsewhere[nodes as usize - 1];
            explore_all(
                "one registration, requester is not the home",
                &scenario,
                min,
            );
        }
    }
}

#[test]
fn one_registration_that_fails_on_two_nodes() {
    for (nodes, min) in [(3, 28), (4, 100)] {
        let script = library().failing_on([NodeId(1), NodeId(2)]);
        let scenario = Scenario::new(nodes).with_request(NodeId(0), 0, script);
        explore_all("one registration failing on nodes 1 and 2", &scenario, min);
    }
}

/// The smallest frame limit a job allows, and error texts far longer than the
/// report can carry: the texts are cut (and marked), the failed set stays exact.
#[test]
fn long_failure_texts_under_the_smallest_frame_limit() {
    for (nodes, min) in [(3, 28), (4, 100)] {
        let script = library().failing_on([NodeId(1), NodeId(2)]);
        let scenario = Scenario::new(nodes)
            .with_max_frame_bytes(Config::min_frame_bytes(nodes))
            .with_error_bytes(3_000)
            .with_request(NodeId(0), 0, script);
        explore_all("long failure texts, smallest frame limit", &scenario, min);
    }
}

#[test]
fn two_requesters_of_one_key_at_once() {
    for (nodes, min) in [(2, 64), (3, 238), (4, 606)] {
        let scenario = Scenario::new(nodes)
            .with_fanout(2)
            .with_request(NodeId(0), 0, library())
            .with_request(NodeId(nodes - 1), 0, library());
        explore_all("two requesters of one key", &scenario, min);
    }
}

#[test]
fn a_load_that_registers_again_on_every_node() {
    for (nodes, min) in [(2, 25), (3, 245), (4, 1_227)] {
        let inner = Script::new("libinner.so").with_tasks(["inner_task"]);
        let outer = library().with_nested(NodeSet::All, inner);
        let scenario = Scenario::new(nodes).with_request(NodeId(0), 0, outer);
        explore_all("nested registration on every node", &scenario, min);
    }
}

/// Two nodes load two libraries at once; each library's constructor registers the
/// other globally. On every other node, each load nests the other's key: the
/// classic cross-load deadlock, which herald must resolve without blocking.
#[test]
fn two_libraries_whose_constructors_register_each_other() {
    for (nodes, min) in [(2, 322), (3, 9_505)] {
        let (a, b) = cross_loading_pair();
        let scenario = Scenario::new(nodes)
            .with_request(NodeId(0), 0, a)
            .with_request(NodeId(1), 0, b);
        explore_all("cross-loading libraries", &scenario, min);
    }
}

#[test]
fn one_node_crashing_mid_registration() {
    let mins = [[33, 37], [859, 1_439], [48_779, 77_407]];
    for nodes in 2..=4 {
        for (i, requester) in [NodeId(0), NodeId(nodes - 1)].into_iter().enumerate() {
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
            let min = mins[nodes as usize - 2][i];
            explore_all("one crash during a registration", &scenario, min);
        }
    }
}

/// The home and a childless child of it request at once: the child's `Ran` may
/// reach the home before or after the home's round reaches the child (which then
/// must not acknowledge twice, or leave the round waiting), and any node may crash.
#[test]
fn a_ran_racing_the_homes_own_round_and_a_crash() {
    let script = library();
    let nodes = 3;
    let home = home_of(&script, nodes);
    // Position 1 of 3 under fan-out 2: a child of the home with no children.
    let child = NodeId((home.0 + 1) % nodes);
    let faults = Faults {
        crashes: 1,
        lose_in_flight: true,
        ..Faults::default()
    };
    let scenario = Scenario::new(nodes)
        .with_fanout(2)
        .with_request(home, 0, script.clone())
        .with_request(child, 0, script)
        .with_faults(faults);
    explore_all(
        "a ran racing the home's round, one crash",
        &scenario,
        19_454,
    );
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
    explore_all("one crash (any node), two requesters", &scenario, 15_190);
}

#[test]
fn two_crashes_during_a_registration() {
    let faults = Faults {
        crashes: 2,
        lose_in_flight: true,
        crash_candidates: vec![NodeId(1), NodeId(2)],
        ..Faults::default()
    };
    let scenario = Scenario::new(3)
        .with_fanout(1)
        .with_request(NodeId(0), 0, library())
        .with_faults(faults);
    explore_all("two crashes during a registration", &scenario, 2_293);
}

/// The key's coordinator and the next node (its successor as coordinator) both
/// crash, in a fan-out 2 tree of depth 2, with two requesters.
#[test]
fn the_coordinator_and_its_successor_crash() {
    let nodes = 4;
    let script = library();
    let home = home_of(&script, nodes);
    let successor = NodeId((home.0 + 1) % nodes);
    let requesters: Vec<NodeId> = (0..nodes)
        .map(NodeId)
        .filter(|n| *n != home && *n != successor)
        .collect();
    let faults = Faults {
        crashes: 2,
        crash_candidates: vec![home, successor],
        one_detector: true,
        ..Faults::default()
    };
    let scenario = requesters
        .iter()
        .fold(Scenario::new(nodes).with_fanout(2), |s, r| {
            s.with_request(*r, 0, script.clone())
        })
        .with_faults(faults);
    explore_all(
        "coordinator and successor crash, fan-out 2",
        &scenario,
        422_947,
    );
}

/// A partition cuts the job in two at any moment: each side finishes, naming the
/// other side's nodes that had not acknowledged.
#[test]
fn a_partition_during_a_registration() {
    let faults = Faults {
        partitions: 1,
        partition_side: vec![NodeId(1)],
        lose_in_flight: true,
        ..Faults::default()
    };
    let scenario = Scenario::new(3)
        .with_fanout(1)
        .with_request(NodeId(0), 0, library())
        .with_request(NodeId(2), 0, library())
        .with_faults(faults);
    explore_all("a partition, requesters on both ends", &scenario, 18_264);
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
    explore_all("a crash, nesting and a waiting task", &scenario, 43_026);
}

/// Nesting on every node and one crash, in a chain (fan-out 1) and a binary tree.
#[test]
fn nesting_and_a_crash_on_fan_out_1_and_2() {
    for (fanout, min) in [(1, 7_069), (2, 5_492)] {
        let inner = Script::new("libinner.so");
        let outer = library().with_nested(NodeSet::All, inner);
        let faults = Faults {
            crashes: 1,
            crash_candidates: vec![NodeId(1), NodeId(2)],
            ..Faults::default()
        };
        let scenario = Scenario::new(3)
            .with_fanout(fanout)
            .with_request(NodeId(0), 0, outer)
            .with_faults(faults);
        explore_all("nesting and a crash", &scenario, min);
    }
}

/// A task launched right after the registration it needs never runs before that
/// registration is done on its target; an unregistered task fails, never hangs.
#[test]
fn launches_wait_for_their_registrations() {
    for (nodes, min) in [(2, 167), (3, 611)] {
        let scenario = Scenario::new(nodes)
            .with_request(NodeId(0), 0, library())
            .with_launch(NodeId(0), NodeId(nodes - 1), 1, "saxpy")
            .with_launch(NodeId(0), NodeId(1), 1, "never_registered");
        explore_all("launches carrying their requirements", &scenario, min);
    }
}

/// Node 1 did not request the key; it runs it because it was disseminated there,
/// and a task it launches to node 2 must wait for it there.
#[test]
fn a_launch_from_a_node_that_did_not_request_the_key() {
    let scenario = Scenario::new(3)
        .with_request(NodeId(0), 0, library())
        .with_launch(NodeId(1), NodeId(2), 0, "saxpy");
    explore_all(
        "a launch from a node that only received the key",
        &scenario,
        285,
    );
}

/// Node 1's load of `libouter` launches a task on node 2 while it runs: the task
/// must not wait for `libouter` itself (which may wait for the task), but must
/// wait for every other registration node 1 holds; a later launch from outside
/// must wait for `libouter` too.
#[test]
fn launches_from_inside_an_invocation() {
    let outer = Script::new("libouter.so").with_tasks(["outer_task"]);
    let scenario = Scenario::new(3)
        .with_request(NodeId(0), 0, library())
        .with_request(NodeId(1), 0, outer)
        .with_launch_inside(NodeId(1), NodeId(2), "libouter.so", "saxpy")
        .with_launch_after(NodeId(1), NodeId(2), After::Launch(0), "outer_task");
    explore_all("launches from inside an invocation", &scenario, 92_186);
}

/// The registration fails on node 2 and its result says so; launches made after
/// that result to node 2 fail with the requirement named, the second as well.
#[test]
fn launches_after_a_result_naming_the_target_failed() {
    let script = library().failing_on([NodeId(2)]);
    let scenario = Scenario::new(3)
        .with_request(NodeId(0), 0, script)
        .with_launch_after(NodeId(0), NodeId(2), After::Answer(0), "saxpy")
        .with_launch_after(NodeId(0), NodeId(2), After::Launch(0), "saxpy");
    explore_all(
        "launches after a result naming the target failed",
        &scenario,
        34,
    );
}

/// The link between the coordinator side and node 2 breaks (both ends notice):
/// node 2 is alive and reachable through node 1, so it must be fenced before
/// anyone may name it; a launch before and one after the answer keep causality.
#[test]
fn a_broken_link_with_launches_before_and_after_the_answer() {
    let faults = Faults {
        link_failures: 1,
        failed_links: vec![(NodeId(0), NodeId(2))],
        lose_in_flight: true,
        ..Faults::default()
    };
    let scenario = Scenario::new(3)
        .with_request(NodeId(1), 0, library())
        .with_launch(NodeId(1), NodeId(2), 0, "saxpy")
        .with_launch_after(NodeId(1), NodeId(2), After::Answer(0), "saxpy")
        .with_faults(faults);
    explore_all(
        "a broken link, launches before and after",
        &scenario,
        32_340,
    );
}

/// A broken link that only one end notices: only node 0 calls `peer_down`; node 2
/// learns that it is down through node 1 and is fenced.
#[test]
fn a_one_sided_down() {
    let faults = Faults {
        one_sided_failures: 1,
        failed_links: vec![(NodeId(0), NodeId(2)), (NodeId(2), NodeId(0))],
        lose_in_flight: true,
        ..Faults::default()
    };
    let scenario = Scenario::new(3)
        .with_request(NodeId(1), 0, library())
        .with_faults(faults);
    explore_all("a one-sided down", &scenario, 1_051);
}

/// One node's transport wrongly declares a live peer down, at any moment: the
/// suspect is fenced, everyone else agrees and finishes.
#[test]
fn a_false_suspicion() {
    let faults = Faults {
        suspicions: 1,
        ..Faults::default()
    };
    let scenario = Scenario::new(3)
        .with_request(NodeId(0), 0, library())
        .with_faults(faults);
    explore_all("a false suspicion (any pair)", &scenario, 4_521);
}

/// Node 2 pauses at any moment; any of its peers may time out on it before it
/// resumes. On resuming it handles what queued, learns it is down and is fenced,
/// or, if nobody timed out, carries on.
#[test]
fn a_paused_node_that_resumes() {
    let faults = Faults {
        pauses: 1,
        pause_candidates: vec![NodeId(2)],
        ..Faults::default()
    };
    let scenario = Scenario::new(3)
        .with_request(NodeId(0), 0, library())
        .with_launch(NodeId(0), NodeId(2), 0, "saxpy")
        .with_faults(faults);
    explore_all("a paused node that resumes", &scenario, 13_100);
}

/// Any frame in flight may be delivered a second time, later: nothing runs twice
/// and every answer stays true.
#[test]
fn a_duplicated_frame() {
    for (nodes, min) in [(2, 239), (3, 847)] {
        let faults = Faults {
            duplicates: 1,
            ..Faults::default()
        };
        let scenario = Scenario::new(nodes)
            .with_request(NodeId(nodes - 1), 0, library())
            .with_launch(NodeId(nodes - 1), NodeId(0), 0, "saxpy")
            .with_faults(faults);
        explore_all("a duplicated frame", &scenario, min);
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
