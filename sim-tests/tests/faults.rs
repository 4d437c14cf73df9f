//! Timed runs of each fault a real transport produces, with what must follow:
//! the node declared down is fenced (it ends; it is not a crash), everyone else
//! finishes, and reports stay within the frame limit.

use herald_core::{Config, NodeId};
use herald_sim::{Faults, Network, Scenario, Script};
use sim_tests::{replay_command, run_checked};

fn library() -> Script {
    Script::new("libtasks.so").with_tasks(["saxpy"])
}

/// Detection after exactly 50 µs; pauses up to 1 ms.
fn network() -> Network {
    Network {
        detect_min_ns: 50_000,
        detect_max_ns: 50_000,
        ..Network::default()
    }
}

/// Runs seeds 0..20 of `faults` on 8 nodes with requests from nodes 0 and 5 and a
/// launch to node 3; returns how many runs fenced `expected` (and nobody else).
fn fenced_runs(faults: Faults, expected: NodeId) -> usize {
    let mut fenced = 0;
    for seed in 0..20 {
        let scenario = Scenario::new(8)
            .with_seed(seed)
            .with_network(network())
            .with_request(NodeId(0), 0, library())
            .with_request(NodeId(5), 2_000, library())
            .with_launch(NodeId(0), NodeId(3), 1_000, "saxpy")
            .with_faults(faults.clone());
        let replay = replay_command("faults", "(this test)", seed);
        let report = run_checked(&scenario, &replay);
        assert!(
            report.crashed.is_empty(),
            "seed {seed}: fencing is no crash"
        );
        assert!(report.completed, "seed {seed}: {report:?}");
        if report.fenced == [expected.0] {
            fenced += 1;
        }
    }
    fenced
}

#[test]
fn a_paused_node_that_outlasts_the_timeout_is_fenced_when_it_resumes() {
    let faults = Faults {
        pauses: 1,
        pause_candidates: vec![NodeId(3)],
        pause_max_ns: 1_000_000,
        window_ns: 30_000,
        ..Faults::default()
    };
    let fenced = fenced_runs(faults, NodeId(3));
    assert!(fenced >= 10, "only {fenced} of 20 pauses led to fencing");
}

#[test]
fn a_falsely_suspected_node_is_fenced_and_the_job_goes_on() {
    let faults = Faults {
        suspicions: 1,
        suspected: vec![(NodeId(1), NodeId(3))],
        window_ns: 30_000,
        ..Faults::default()
    };
    assert_eq!(fenced_runs(faults, NodeId(3)), 20);
}

#[test]
fn the_far_end_of_a_one_sided_failure_is_fenced() {
    let faults = Faults {
        one_sided_failures: 1,
        failed_links: vec![(NodeId(1), NodeId(3))],
        lose_in_flight: true,
        window_ns: 30_000,
        ..Faults::default()
    };
    assert_eq!(fenced_runs(faults, NodeId(3)), 20);
}

/// Every one of 64 nodes fails with a 3,000-byte error at the smallest frame
/// limit: the answer names all 64, carries 16 texts cut to fit, and every frame
/// stays under the limit.
#[test]
fn long_errors_on_every_node_fit_the_smallest_frame_limit() {
    let nodes = 64;
    let limit = Config::min_frame_bytes(nodes);
    let scenario = Scenario::new(nodes)
        .with_max_frame_bytes(limit)
        .with_error_bytes(3_000)
        .with_request(NodeId(0), 0, library().failing_on((0..nodes).map(NodeId)));
    let report = run_checked(
        &scenario,
        "cargo test -p sim-tests --test faults long_errors",
    );
    assert!(report.completed);
    let answer = report.requests[0].answer.as_ref().expect("answered");
    assert_eq!(answer.result.failures.len(), nodes as usize);
    let text_bytes = Config::new(NodeId(0), nodes)
        .and_then(|c| c.with_max_frame_bytes(limit))
        .expect("valid")
        .limits()
        .text_bytes;
    let carried: Vec<&str> = (answer.result.failures.iter())
        .map(|f| f.error.as_str())
        .filter(|e| e.contains("bytes cut"))
        .collect();
    assert_eq!(carried.len(), 16, "{:?}", answer.result.failures);
    assert!(carried.iter().all(|e| e.len() <= text_bytes));
}
