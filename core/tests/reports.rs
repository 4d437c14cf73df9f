//! Bounded reports: whatever fails, and however long its errors, every message
//! fits the frame limit and the result still names every failed node.

mod common;

use common::{Cluster, registration_homed_at};
use herald_core::{Config, NodeId};

#[test]
fn long_errors_on_every_node_fit_a_small_frame_and_name_everyone() {
    let nodes = 40;
    let limit = Config::min_frame_bytes(nodes);
    let mut c = Cluster::with_frame_limit(nodes, 4, limit);
    let reg = registration_homed_at(0, nodes, "long-errors");
    let request = c.register(0, &reg);
    loop {
        c.deliver_all();
        let Some((node, inv)) = c.running.first().cloned() else {
            break;
        };
        let error = format!("node {} says: {}", node.0, "traceback line\n".repeat(5000));
        c.finish(node.0, inv.key, Err(error));
    }
    let result = c.answer(0, request).expect("answered");
    let failed: Vec<u32> = result.failures.iter().map(|f| f.node.0).collect();
    assert_eq!(failed, (0..nodes).collect::<Vec<_>>());
    let limits = Config::new(NodeId(0), nodes)
        .and_then(|c| c.with_max_frame_bytes(limit))
        .expect("config")
        .limits();
    for failure in &result.failures[..limits.full_failures] {
        assert!(failure.error.len() <= limits.text_bytes);
        assert!(failure.error.ends_with("bytes cut]"), "{}", failure.error);
        assert!(
            failure
                .error
                .starts_with(&format!("node {} says", failure.node.0))
        );
    }
    for failure in &result.failures[limits.full_failures..] {
        assert!(
            failure.error.contains("error text not carried"),
            "{}",
            failure.error
        );
    }
}

#[test]
fn every_other_node_failing_fits_the_smallest_allowed_frame() {
    let nodes = 64;
    let mut c = Cluster::with_frame_limit(nodes, 2, Config::min_frame_bytes(nodes));
    let reg = registration_homed_at(3, nodes, "sparse");
    let request = c.register(5, &reg);
    loop {
        c.deliver_all();
        let Some((node, inv)) = c.running.first().cloned() else {
            break;
        };
        let outcome = if node.0 % 2 == 1 {
            Err("x".repeat(100_000))
        } else {
            Ok(())
        };
        c.finish(node.0, inv.key, outcome);
    }
    let result = c.answer(5, request).expect("answered");
    assert_eq!(result.failures.len(), 32);
}
