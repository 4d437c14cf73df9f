//! Late joiners in the simulator: exhaustive explorations of a join during a
//! registration, a join racing a crash and two joins at once, and random runs
//! with joins and crashes. Beyond every other invariant, the simulator checks
//! that a joiner runs every registration completed before it joined, exactly
//! once, before any task runs there, that it is admitted unless it or its
//! admitter went down, and that a registration first requested after a join
//! covers the joiner. Run with `-- --nocapture` to see the state counts.

use herald_core::{Message, Node, NodeId, Output};
use herald_sim::{Exploration, ExploreLimits, Faults, NodeSet, Scenario, Script, explore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sim_tests::{Spec, Tamper, Tampered, replay_command, run_once, run_twice, seed_from_env};

/// Random runs with joins (each run twice).
const RANDOM_RUNS: u64 = 400;

fn explore_all(name: &str, scenario: &Scenario, min_states: u64) -> Exploration {
    let limits = ExploreLimits {
        max_states: 1_000_000,
    };
    let exploration = explore::<Node>(scenario, limits).unwrap_or_else(|e| panic!("{name}: {e}"));
    println!(
        "{name:<44} N={}+{} states={:>8} transitions={:>9} terminal={:>6} depth={}",
        scenario.nodes,
        scenario.joins.len(),
        exploration.states,
        exploration.transitions,
        exploration.terminal_states,
        exploration.max_depth
    );
    assert!(exploration.terminal_states > 0, "{name}: no run ever ended");
    assert!(
        exploration.states >= min_states,
        "{name}: explored {} states, fewer than the {min_states} it used to: the exploration shrank",
        exploration.states
    );
    exploration
}

fn library() -> Script {
    Script::new("libtasks.so").with_tasks(["saxpy"])
}

/// A join at any point of a registration (before it is requested, while it is
/// disseminated, after it completed), and a launch to the joiner of a task the
/// registration provides: the joiner replays or receives it exactly once and
/// runs the task only after it. With a second, earlier registration completed
/// before anything else, the replay holds two registrations in order.
#[test]
fn a_join_during_a_registration() {
    for (nodes, min) in [(2, 517), (3, 2_539)] {
        let scenario = Scenario::new(nodes)
            .with_fanout(2)
            .with_request(NodeId(nodes - 1), 0, library())
            .with_join(0)
            .with_launch(NodeId(0), NodeId(nodes), 0, "saxpy");
        explore_all("a join during a registration", &scenario, min);
    }
    let nested = library().with_nested(NodeSet::All, Script::new("libinner.so"));
    let scenario = Scenario::new(2)
        .with_request(NodeId(1), 0, nested)
        .with_join(0)
        .with_launch(NodeId(0), NodeId(2), 0, "saxpy");
    explore_all("a join while nested loads register", &scenario, 1_864);
}

/// A join racing a crash of any node (the admitter, the joiner, the requester,
/// the coordinator), frames in flight lost with it.
#[test]
fn a_join_racing_a_crash() {
    for (nodes, candidates, min) in [(2, vec![0, 1, 2], 5_300), (3, vec![3], 111_421)] {
        let faults = Faults {
            crashes: 1,
            lose_in_flight: true,
            crash_candidates: candidates.into_iter().map(NodeId).collect(),
            ..Faults::default()
        };
        let scenario = Scenario::new(nodes)
            .with_fanout(2)
            .with_request(NodeId(nodes - 1), 0, library())
            .with_join(0)
            .with_faults(faults);
        explore_all("a join racing a crash", &scenario, min);
    }
}

/// Two processes join at once while a registration is under way; the first may
/// be grafted into rounds, the second learns of the first from the log and the
/// messages it gets.
#[test]
fn two_joins_at_once() {
    let scenario = Scenario::new(2)
        .with_fanout(2)
        .with_request(NodeId(1), 0, library())
        .with_join(0)
        .with_join(0)
        .with_launch(NodeId(0), NodeId(3), 0, "saxpy");
    explore_all("two joins at once", &scenario, 5_632);
}

/// A replay that fails on the joiner (a load that fails there only) refuses the
/// join: the joiner is gone, and the registration's later results name it.
#[test]
fn a_replay_that_fails_on_the_joiner() {
    let failing = library().failing_on([NodeId(2)]);
    let scenario = Scenario::new(2)
        .with_request(NodeId(0), 0, failing)
        .with_join(0);
    explore_all("a replay that fails on the joiner", &scenario, 601);
}

/// Random scenarios (the swarm's: every fault kind, nesting, failing loads,
/// launches) with 1 to 3 joins at random times, launches from node 0 to the
/// joiners, loads that fail on a joiner, and crashes that may hit joiners and
/// node 0. `HERALD_SEED=<seed>` runs that seed only.
#[test]
fn random_joins_and_crashes() {
    let seeds: Vec<u64> = match seed_from_env() {
        Some(seed) => vec![seed],
        None => (0..RANDOM_RUNS).collect(),
    };
    let (mut joined, mut crashed, mut refused) = (0, 0, 0);
    for &seed in &seeds {
        let mut spec = Spec::random(seed);
        spec.nodes = spec.nodes.min(16);
        let scenario = with_random_joins(spec.scenario(), seed);
        let replay = replay_command("joins", "random_joins_and_crashes", seed);
        let report = run_twice::<Node>(&scenario, &replay);
        assert!(
            report.is_ok(),
            "seed {seed} ({spec}, {} joins) broke invariants:\n  {}\nreplay: {replay}",
            scenario.joins.len(),
            report.violations.join("\n  ")
        );
        joined += scenario.joins.len();
        crashed += usize::from(!report.crashed.is_empty());
        refused += usize::from(report.fenced.iter().any(|n| *n >= scenario.nodes));
    }
    println!(
        "random joins: {} runs, {joined} joins, {crashed} runs with crashes, {refused} with a joiner gone",
        seeds.len()
    );
    if seeds.len() > 1 {
        assert!(
            joined > 0 && crashed > 0 && refused > 0,
            "the runs cover joins, crashes and refusals"
        );
    }
}

fn with_random_joins(mut scenario: Scenario, seed: u64) -> Scenario {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6a6f_696e);
    let joins = rng.random_range(1..=3u32);
    let mut times: Vec<u64> = (0..joins).map(|_| rng.random_range(0..=300_000)).collect();
    times.sort();
    for at_ns in times {
        scenario = scenario.with_join(at_ns);
    }
    let n = scenario.nodes;
    for j in 0..joins {
        if let Some(request) = scenario.requests.first().cloned() {
            let task = request.script.tasks.first().cloned().unwrap_or_default();
            scenario = scenario.with_launch(
                NodeId(0),
                NodeId(n + j),
                rng.random_range(0..=400_000),
                &task,
            );
        }
    }
    if rng.random_bool(0.2) {
        let joiner = NodeId(n + rng.random_range(0..joins));
        let failing = Script::new("libjoinerfails.so")
            .with_tag("joinerfails")
            .failing_on([joiner]);
        scenario = scenario.with_request(
            NodeId(rng.random_range(0..n)),
            rng.random_range(0..=50_000),
            failing,
        );
    }
    if scenario.faults.crashes > 0 {
        scenario.faults.crash_candidates = (0..scenario.slots()).map(NodeId).collect();
    }
    scenario
}

/// The admitter sends every joiner an empty log: a joiner then runs a task (or
/// is admitted) without having run what completed before it joined, and the
/// checks say so.
#[derive(Clone, Default, Hash)]
struct EmptyWelcome;

impl Tamper for EmptyWelcome {
    const NAME: &'static str = "empty-welcome";

    fn output(&mut self, _node: &herald_core::Node, output: Output) -> Vec<Output> {
        match output {
            Output::Transmit { to, messages } => {
                let messages = messages
                    .into_iter()
                    .map(|m| match m {
                        Message::Welcome {
                            view, down, more, ..
                        } => Message::Welcome {
                            view,
                            down,
                            log: Vec::new(),
                            more,
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

/// (No launch to the joiner here: a launch that requires the key would make the
/// joiner fetch it from the launcher, which heals the skipped replay.)
#[test]
fn a_joiner_that_skips_the_replay_is_caught() {
    let scenario = Scenario::new(3)
        .with_request(NodeId(1), 0, library())
        .with_join(500_000);
    let honest = run_once::<Node>(&scenario);
    assert!(honest.is_ok(), "{:?}", honest.violations);
    let report = run_once::<Tampered<EmptyWelcome>>(&scenario);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("before replaying") || v.contains("admitted without running")),
        "{:?}",
        report.violations
    );
}
