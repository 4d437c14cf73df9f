//! View hooks that misuse herald on real processes. A C view hook runs on
//! whichever thread runs the event loop (most often the TCP I/O thread): a
//! `herald_wait` there can never end, and herald_wait promises to refuse such
//! waits (`HERALD_ERR_WOULD_DEADLOCK`) instead of hanging.

mod common;

use std::time::Duration;

use common::{args, build_c};

/// A view hook on ranks 0 and 1 registers globally and waits on it when rank 2
/// leaves: the wait must be refused (code 2), not hang the job (the hook blocks
/// the thread that holds the event loop, so nothing on that rank would ever be
/// handled again, heartbeats included on the I/O thread).
#[test]
fn a_wait_inside_a_view_hook_is_refused_not_hung() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = build_c(dir.path(), "hook_wait", "hook_wait", "");
    let main = format!("{}:hook_wait_main", plugin.display());
    let node_args = args([
        &"--load",
        &plugin,
        &"--main",
        &main,
        &"--library-path",
        &dir.path(),
        &"--heartbeat-ms",
        &"200",
        &"--peer-timeout-ms",
        &"2000",
    ]);
    let run = common::herald_run(3, &node_args, &[], Duration::from_secs(30));
    let all = format!("{}\n{}", run.stdout, run.stderr);
    for rank in [0, 1] {
        assert!(
            run.stdout.contains(&format!(
                "[{rank}] node {rank}: wait in view hook returned 2"
            )),
            "{all}"
        );
    }
}
