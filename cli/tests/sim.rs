//! `herald sim` end to end: the JSON report, determinism, the baseline, the trace
//! and the plot.

use std::process::Command;

fn herald_sim(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("sim")
        .args(args)
        .output()
        .expect("herald runs");
    (
        output.status.success(),
        String::from_utf8(output.stdout).expect("UTF-8"),
    )
}

fn json(args: &[&str]) -> serde_json::Value {
    let (ok, stdout) = herald_sim(args);
    assert!(ok, "herald sim {args:?} failed:\n{stdout}");
    serde_json::from_str(&stdout).expect("one JSON object")
}

#[test]
fn json_report_has_every_field_and_the_expected_counts() {
    let report = json(&[
        "--nodes",
        "300",
        "--requesters",
        "300",
        "--fanout",
        "4",
        "--json",
    ]);
    for field in [
        "nodes",
        "requesters",
        "fanout",
        "seed",
        "messages",
        "messages_by_kind",
        "completed",
        "max_invocations_per_key",
        "critical_path_hops",
        "unreachable",
        "trace_sha256",
    ] {
        assert!(report.get(field).is_some(), "missing {field}: {report}");
    }
    assert_eq!(report["nodes"], 300);
    assert_eq!(report["completed"], true);
    assert_eq!(report["max_invocations_per_key"], 1);
    let messages = report["messages"].as_u64().expect("a count");
    assert!(messages <= 2 * 299 + 2 * 300, "{messages}");
    assert_eq!(report["messages_by_kind"]["disseminate"], 299);
}

#[test]
fn the_same_seed_prints_the_same_trace_hash() {
    let args = ["--nodes", "64", "--crash", "0.1", "--seed", "9", "--json"];
    let (first, second) = (json(&args), json(&args));
    assert_eq!(first["trace_sha256"], second["trace_sha256"]);
    let other = json(&["--nodes", "64", "--crash", "0.1", "--seed", "10", "--json"]);
    assert_ne!(first["trace_sha256"], other["trace_sha256"]);
}

#[test]
fn the_naive_baseline_runs_side_by_side() {
    let report = json(&[
        "--nodes",
        "50",
        "--requesters",
        "5",
        "--baseline",
        "naive",
        "--json",
    ]);
    assert_eq!(report["baseline"]["protocol"], "naive");
    assert_eq!(report["baseline"]["messages"], 5 * 2 * 49);
    let (ok, summary) = herald_sim(&["--nodes", "50", "--requesters", "5", "--baseline", "naive"]);
    assert!(
        ok && summary.contains("herald") && summary.contains("naive"),
        "{summary}"
    );
}

#[test]
fn trace_and_plot_files_are_written() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let trace = dir.path().join("run.json");
    let plot = dir.path().join("messages.svg");
    let report = json(&[
        "--nodes",
        "40",
        "--json",
        "--trace",
        trace.to_str().expect("UTF-8 path"),
        "--plot",
        plot.to_str().expect("UTF-8 path"),
    ]);
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&trace).expect("trace written")).expect("JSON");
    assert!(
        trace["traceEvents"]
            .as_array()
            .is_some_and(|events| events.len() > 40)
    );
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(
        svg.starts_with("<svg") && svg.contains("herald"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    assert_eq!(report["completed"], true);
}

#[test]
fn bad_arguments_are_refused() {
    assert!(!herald_sim(&["--nodes", "4", "--requesters", "5"]).0);
    assert!(!herald_sim(&["--nodes", "4", "--crash", "1.5"]).0);
    assert!(!herald_sim(&["--nodes", "0"]).0);
}

#[test]
fn link_faults_fence_the_nodes_declared_down_and_the_rest_finish() {
    let report = json(&[
        "--nodes",
        "64",
        "--link-faults",
        "0.1",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    assert_eq!(report["completed"], true, "{report}");
    assert_eq!(report["crashed"], serde_json::json!([]), "{report}");
    let fenced = report["fenced"].as_array().expect("a list");
    assert!(!fenced.is_empty(), "6 broken links fence someone: {report}");
    assert!(
        report["messages_by_kind"]["down"].as_u64() > Some(0),
        "{report}"
    );
}

#[test]
fn a_frame_limit_too_small_for_the_job_is_refused_with_the_minimum() {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["sim", "--nodes", "64", "--frame-limit", "1000"])
        .output()
        .expect("herald runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("use at least 4096"), "{stderr}");
    let report = json(&["--nodes", "64", "--frame-limit", "4096", "--json"]);
    assert_eq!(report["completed"], true, "{report}");
}
