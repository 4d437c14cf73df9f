//! Message complexity at scale, herald against the naive baseline, side by side.
//! Run with `-- --nocapture` to see the table.

use herald_core::{NodeId, Tree};
use herald_sim::{NaiveNode, RunReport, Scenario, Script, ceil_log};
use sim_tests::{home_of, not_home_of, replay_command, run_checked, run_twice};

const SIZES: [u32; 5] = [2, 16, 256, 4096, 10_000];

/// Largest job for which the naive baseline's `N` replicated requesters are
/// simulated (`N·2(N-1)` messages); beyond it the table shows the formula.
const NAIVE_REPLICATED_MAX: u32 = 256;

fn library() -> Script {
    Script::new("libtasks.so").with_tasks(["saxpy"])
}

fn single(nodes: u32, fanout: u32, requester: NodeId) -> Scenario {
    Scenario::new(nodes)
        .with_fanout(fanout)
        .with_request(requester, 0, library())
}

fn replicated(nodes: u32, fanout: u32) -> Scenario {
    Scenario::replicated(nodes, nodes, library()).with_fanout(fanout)
}

/// Runs herald twice (determinism), checks it broke nothing and answered everyone
/// within the hop bound, and returns its report.
fn herald(scenario: &Scenario, test: &str) -> RunReport {
    let report = run_checked(scenario, &replay_command("scale", test, scenario.seed));
    let hop_bound = 2 * u64::from(ceil_log(scenario.nodes, scenario.fanout)) + 2;
    assert!(
        report.completed,
        "N={}: not everyone was answered",
        scenario.nodes
    );
    assert_eq!(report.max_invocations_per_key, 1, "N={}", scenario.nodes);
    let invocations: u32 = report.invocations.values().sum();
    assert_eq!(
        invocations, scenario.nodes,
        "every node ran the registration once"
    );
    assert!(
        report.critical_path_hops <= hop_bound,
        "N={} k={}: {} hops > 2*ceil(log_k N)+2 = {hop_bound}",
        scenario.nodes,
        scenario.fanout,
        report.critical_path_hops
    );
    report
}

fn naive(scenario: &Scenario, test: &str) -> RunReport {
    let report = run_twice::<NaiveNode>(scenario, &replay_command("scale", test, scenario.seed));
    assert!(
        report.is_ok() && report.completed,
        "naive N={}: {:?}",
        scenario.nodes,
        report.violations
    );
    report
}

/// Exactly `2(N-1)` messages when the requester is the home, `2(N-1)+1` when it is
/// a childless child of the home (its `Ran` stands for its part), `2(N-1)+2` otherwise;
/// `N` replicated requesters within `2(N-1)+2N`; hops within `2·ceil(log_k N)+2`.
#[test]
fn herald_against_naive_at_scale() {
    let test = "herald_against_naive_at_scale";
    let k = 4;
    println!(
        "{:>6} {:>2} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>19} {:>7} | {:>11} {:>5} {:>5}",
        "N",
        "k",
        "herald",
        "herald",
        "naive",
        "herald",
        "bound",
        "naive",
        "naive /",
        "herald hops",
        "naive",
        "hop"
    );
    println!(
        "{:>6} {:>2} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>19} {:>7} | {:>11} {:>5} {:>5}",
        "",
        "",
        "at home",
        "not home",
        "1 req",
        "N shard",
        "2(N-1)+2N",
        "N shards",
        "herald",
        "1 / N",
        "hops",
        "bound"
    );
    for nodes in SIZES {
        let n1 = u64::from(nodes) - 1;
        let script = library();
        let at_home = herald(&single(nodes, k, home_of(&script, nodes)), test);
        assert_eq!(
            at_home.messages,
            2 * n1,
            "N={nodes}: one requester that is the home"
        );
        let elsewhere = if nodes > 1 {
            let requester = not_home_of(&script, nodes);
            let report = herald(&single(nodes, k, requester), test);
            // A childless child of the home reports its run with `Ran` instead of
            // taking part (request, ran, complete for disseminate and ack).
            let tree = Tree::new(nodes, k, home_of(&script, nodes));
            let ran = tree.is_childless_child_of_root(requester);
            assert_eq!(
                report.messages,
                2 * n1 + if ran { 1 } else { 2 },
                "N={nodes}: one requester that is not the home"
            );
            report
        } else {
            at_home.clone()
        };
        let naive_single = naive(&single(nodes, k, not_home_of(&script, nodes)), test);
        assert_eq!(naive_single.messages, 2 * n1, "naive N={nodes}");

        let shards = herald(&replicated(nodes, k), test);
        let bound = 2 * n1 + 2 * u64::from(nodes);
        assert!(
            shards.messages <= bound,
            "N={nodes}: {} > 2(N-1)+2N = {bound}",
            shards.messages
        );
        let (naive_shards, measured) = if nodes <= NAIVE_REPLICATED_MAX {
            let report = naive(&replicated(nodes, k), test);
            assert_eq!(
                report.messages,
                u64::from(nodes) * 2 * n1,
                "naive N={nodes} shards"
            );
            (report.messages, "")
        } else {
            (u64::from(nodes) * 2 * n1, " (formula)")
        };
        let hop_bound = 2 * u64::from(ceil_log(nodes, k)) + 2;
        println!(
            "{nodes:>6} {k:>2} | {:>8} {:>8} {:>8} | {:>8} {bound:>8} {:>19} {:>6.1}x | {:>11} {:>5} {hop_bound:>5}",
            at_home.messages,
            elsewhere.messages,
            naive_single.messages,
            shards.messages,
            format!("{naive_shards}{measured}"),
            naive_shards as f64 / shards.messages as f64,
            format!(
                "{} / {}",
                elsewhere.critical_path_hops, shards.critical_path_hops
            ),
            naive_single.critical_path_hops,
        );
    }
}

/// The hop bound holds for other fan-outs too, and fan-out trades hops for sends.
#[test]
fn hops_shrink_as_the_fanout_grows() {
    let test = "hops_shrink_as_the_fanout_grows";
    let nodes = 4096;
    let mut previous = u64::MAX;
    for k in [2, 4, 8, 16, 64] {
        let report = herald(&single(nodes, k, not_home_of(&library(), nodes)), test);
        assert_eq!(report.messages, 2 * u64::from(nodes - 1) + 2);
        println!(
            "N={nodes} k={k:>2}: {} hops (bound {})",
            report.critical_path_hops,
            2 * ceil_log(nodes, k) + 2
        );
        assert!(report.critical_path_hops <= previous, "k={k}");
        previous = report.critical_path_hops;
    }
}
