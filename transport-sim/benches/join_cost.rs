//! What one join costs in simulated jobs of 16 to 10,000 nodes: the job
//! completes `LOG` registrations, then a process joins (node 0 admits it), one
//! more registration is requested by a node that has not heard of the joiner,
//! and node 0 launches a task on the joiner. Each job is simulated twice, with
//! and without the join (and its launch); the difference is what the join
//! costs. Run: `cargo bench -p herald-sim --bench join_cost`.

use herald_core::{Node, NodeId};
use herald_sim::{RunReport, Scenario, Script, SimOptions, Simulation, TraceMode};

/// Registrations completed before the join: the log the joiner replays.
const LOG: u32 = 8;
/// When the join happens (virtual ns): every registration of the log is done.
const JOIN_NS: u64 = 50_000_000;

fn main() {
    println!(
        "one join into a job that completed {LOG} registrations (simulated; messages counted by the simulator):"
    );
    println!(
        "{:>7} {:>14} {:>12} {:>22} {:>26}",
        "nodes",
        "join messages",
        "bytes added",
        "later round, messages+",
        "messages per member, round"
    );
    for nodes in [16u32, 64, 256, 1_024, 4_096, 10_000] {
        let without = run(&scenario(nodes, false));
        let with = run(&scenario(nodes, true));
        let kind = |report: &RunReport, kind: &str| {
            report.messages_by_kind.get(kind).copied().unwrap_or(0)
        };
        // The launch and its answer are the same two messages in both runs'
        // terms: take them out so that what is left is the join's own cost.
        let launch = kind(&with, "launch") + kind(&with, "task_result");
        let welcome = kind(&with, "welcome");
        let extra = with.messages - without.messages - launch;
        let rounds = kind(&with, "disseminate") + kind(&with, "ack")
            - kind(&without, "disseminate")
            - kind(&without, "ack");
        // The joiner is grafted into the one registration after the join: one
        // dissemination and one acknowledgement more; nothing else may differ.
        assert_eq!(extra, welcome + rounds, "{nodes}: {with:?}");
        assert_eq!(
            rounds, 2,
            "{nodes}: the later round reaches the joiner once"
        );
        let per_member = (kind(&without, "disseminate") + kind(&without, "ack")) as f64
            / f64::from(LOG + 1)
            / f64::from(nodes - 1);
        println!(
            "{nodes:>7} {welcome:>14} {:>12} {rounds:>22} {per_member:>26.2}",
            with.bytes.saturating_sub(without.bytes),
        );
    }
    println!(
        "join messages: protocol messages the join itself sent (the admitter's welcome; no other node sends anything for it)."
    );
    println!(
        "bytes added: every byte the join added (the log of {LOG} registrations, and the later round's two messages to the joiner)."
    );
}

fn scenario(nodes: u32, join: bool) -> Scenario {
    let mut scenario = Scenario::new(nodes).with_seed(u64::from(nodes));
    for i in 0..LOG {
        let node = NodeId(i * 7 % nodes);
        let script = Script::new(format!("lib{i}.so")).with_tasks([format!("task{i}")]);
        scenario = scenario.with_request(node, 0, script);
    }
    // Requested after the join by the last node, which never heard of the joiner.
    let later = Script::new("liblater.so");
    scenario = scenario.with_request(NodeId(nodes - 1), 2 * JOIN_NS, later);
    if join {
        scenario =
            scenario
                .with_join(JOIN_NS)
                .with_launch(NodeId(0), NodeId(nodes), 3 * JOIN_NS, "task0");
    }
    scenario
}

fn run(scenario: &Scenario) -> RunReport {
    let options = SimOptions {
        trace: TraceMode::Off,
        record_choices: false,
    };
    let report = Simulation::<Node>::new(scenario.clone(), options)
        .expect("valid scenario")
        .run();
    assert!(
        report.is_ok() && report.completed,
        "{:?}",
        report.violations
    );
    report
}
