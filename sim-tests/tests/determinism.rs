//! Same seed, same run: traces are byte-identical, recorded choices replay a run
//! exactly, and the trace is valid Chrome Trace Event JSON.

use std::collections::BTreeSet;

use herald_core::{Node, NodeId};
use herald_sim::{Faults, NodeSet, RunReport, Scenario, Script, SimOptions, Simulation, TraceMode};
use sha2::{Digest, Sha256};
use sim_tests::Spec;

/// 32 nodes, two requesters, nesting, a failing load, a launch and a crash.
fn busy_scenario(seed: u64) -> Scenario {
    let inner = Script::new("libinner.so").with_tasks(["inner"]);
    let library = Script::new("libtasks.so")
        .with_tasks(["saxpy"])
        .failing_on([NodeId(9)])
        .with_nested(NodeSet::All, inner);
    let faults = Faults {
        crashes: 1,
        lose_in_flight: true,
        window_ns: 60_000,
        ..Faults::default()
    };
    Scenario::new(32)
        .with_seed(seed)
        .with_request(NodeId(3), 0, library.clone())
        .with_request(NodeId(20), 5_000, library)
        .with_launch(NodeId(3), NodeId(17), 1_000, "saxpy")
        .with_faults(faults)
}

fn run(scenario: &Scenario, trace: TraceMode) -> RunReport {
    let options = SimOptions {
        trace,
        record_choices: true,
    };
    Simulation::<Node>::new(scenario.clone(), options)
        .expect("valid")
        .run()
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let first = run(&busy_scenario(11), TraceMode::Hash);
    let again = run(&busy_scenario(11), TraceMode::Hash);
    let other = run(&busy_scenario(12), TraceMode::Hash);
    assert!(first.is_ok(), "{:?}", first.violations);
    assert_eq!(first.trace_sha256, again.trace_sha256);
    assert_ne!(
        first.trace_sha256, other.trace_sha256,
        "the seed reaches the run"
    );
}

#[test]
fn recorded_choices_replay_the_run_exactly() {
    for seed in 0..20 {
        let scenario = Spec::random(seed).scenario();
        let recorded = run(&scenario, TraceMode::Hash);
        assert!(
            !recorded.choices.is_empty() || scenario.nodes == 1,
            "seed {seed}: choices are recorded"
        );
        let options = SimOptions {
            trace: TraceMode::Hash,
            record_choices: false,
        };
        let replayed = Simulation::<Node>::replay(scenario, recorded.choices.clone(), options)
            .expect("valid")
            .run();
        assert_eq!(recorded.trace_sha256, replayed.trace_sha256, "seed {seed}");
        assert_eq!(recorded.messages, replayed.messages, "seed {seed}");
    }
}

#[test]
fn the_trace_is_chrome_trace_event_json_and_its_hash_is_its_sha256() {
    let report = run(&busy_scenario(5), TraceMode::Keep);
    let bytes = report.trace.as_ref().expect("kept");
    let digest: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, report.trace_sha256);

    let document: serde_json::Value = serde_json::from_slice(bytes).expect("valid JSON");
    let events = document["traceEvents"]
        .as_array()
        .expect("a traceEvents array");
    let phase = |e: &serde_json::Value| e["ph"].as_str().unwrap_or_default().to_string();
    let threads: BTreeSet<u64> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["tid"].as_u64())
        .collect();
    assert_eq!(threads.len(), 32, "every node is a named thread");
    let starts: BTreeSet<u64> = events
        .iter()
        .filter(|e| phase(e) == "s")
        .filter_map(|e| e["id"].as_u64())
        .collect();
    let finishes: Vec<u64> = events
        .iter()
        .filter(|e| phase(e) == "f")
        .filter_map(|e| e["id"].as_u64())
        .collect();
    assert!(!finishes.is_empty());
    assert!(
        finishes.iter().all(|id| starts.contains(id)),
        "every arrival has its sending"
    );
    let spans = events
        .iter()
        .filter(|e| phase(e) == "X" && e["cat"] == "invocation")
        .count();
    assert!(
        spans >= 31 * 2 - 2,
        "an invocation span per node and library (a crashed node may miss some): {spans}"
    );
    assert!(events.iter().any(|e| {
        e["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("completed"))
    }));
    assert!(
        events.iter().all(|e| e["ts"].as_f64().is_some()),
        "every event has a timestamp"
    );
}

/// Links are FIFO whatever the latencies drawn: on every link, frames arrive in
/// the order they were sent (frame numbers grow with sending order), and every
/// frame sent arrives unless a failure lost it.
#[test]
fn every_link_delivers_in_sending_order() {
    for seed in 0..10 {
        let scenario = (0..6).fold(busy_scenario(seed), |scenario, i| {
            scenario.with_request(
                NodeId(i * 5),
                i as u64 * 3_000,
                Script::new(format!("lib{}.so", i % 2)),
            )
        });
        let report = run(&scenario, TraceMode::Keep);
        let document: serde_json::Value =
            serde_json::from_slice(report.trace.as_ref().expect("kept")).expect("JSON");
        let mut last_on_link = std::collections::BTreeMap::new();
        let (mut sent, mut arrived) = (0, 0);
        for event in document["traceEvents"].as_array().expect("events") {
            let name = event["name"].as_str().unwrap_or_default();
            sent += u64::from(name.starts_with("send "));
            if !name.starts_with("recv ") {
                continue;
            }
            let link = (event["args"]["from"].as_u64(), event["tid"].as_u64());
            let frame = event["args"]["frame"].as_u64().expect("a frame number");
            let last = last_on_link.insert(link, frame);
            assert!(
                last.is_none_or(|last| last < frame),
                "seed {seed}: link {link:?} reordered {last:?} and {frame}"
            );
            arrived += 1;
        }
        assert_eq!(sent, report.frames, "seed {seed}");
        assert_eq!(
            arrived + report.lost_frames,
            sent,
            "seed {seed}: a frame neither arrived nor was lost"
        );
    }
}
