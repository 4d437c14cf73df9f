//! Real multi-process jobs on loopback: `herald node` ranks over authenticated TCP,
//! loading C plugins built with plain `cc -shared -fPIC` at test time.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Job, RankSetup, args, build_c};

/// `herald run` starts the ranks; the example plugin's constructor registers its
/// tasks on every node (the callback nests three task registrations); every task
/// runs on every node. Then a plugin whose callback registers another callback
/// from inside its invocation: each runs exactly once per node.
#[test]
fn constructor_nesting_reaches_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = common::example_plugin(dir.path());
    let main = format!("{}:example_main", example.display());
    let output = Command::new(common::herald())
        .args(["run", "-n", "4", "--"])
        .arg(common::herald())
        .args(["node", "--load"])
        .arg(&example)
        .args(["--main", &main, "--library-path"])
        .arg(dir.path())
        .output()
        .expect("herald run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for node in 0..4 {
        let line = format!("[{node}] node {node}: example tasks registered");
        assert_eq!(stdout.matches(&line).count(), 1, "{stdout}");
        assert!(
            stdout.contains(&format!("[0] node {node}: example.reverse -> ")),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("all tasks succeeded on every node"),
        "{stdout}"
    );

    let nest = build_c(dir.path(), "nest", "nest", "");
    let mut job = Job::start(4, |_| RankSetup {
        args: args([&"--load", &nest, &"--library-path", &dir.path()]),
        env: vec![],
    });
    let statuses = job.wait();
    assert!(statuses.iter().all(|s| s.success()), "{}", job.transcript());
    assert_eq!(
        job.count("outer ran, nested handle ok"),
        4,
        "{}",
        job.transcript()
    );
    assert_eq!(job.count("inner ran"), 4, "{}", job.transcript());
}

/// `--coordinator HOST:PORT` takes a host name, as `HERALD_COORDINATOR` does
/// (README's srun line: `$(hostname):7700`): two ranks given `localhost:PORT`
/// on the command line form a job and run the example plugin.
#[test]
fn coordinator_flag_takes_a_host_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = common::example_plugin(dir.path());
    let coordinator = format!("localhost:{}", common::free_port().port());
    let secret = herald_tcp::Secret::random().to_hex();
    let main = format!("{}:example_main", example.display());
    let rank = |rank: u32| {
        let mut command = Command::new(common::herald());
        common::as_joiner(&mut command, &secret)
            .args(["node", "--rank", &rank.to_string(), "--size", "2"])
            .args(["--coordinator", &coordinator, "--establish-timeout", "20"])
            .arg("--library-path")
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if rank == 0 {
            command.arg("--load").arg(&example).args(["--main", &main]);
        }
        command.spawn().expect("start herald node")
    };
    let ranks = [rank(0), rank(1)];
    let outputs: Vec<_> = ranks
        .into_iter()
        .map(|child| child.wait_with_output().expect("wait"))
        .collect();
    let transcript: String = outputs
        .iter()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .collect();
    assert!(outputs.iter().all(|o| o.status.success()), "{transcript}");
    assert!(
        transcript.contains("all tasks succeeded on every node"),
        "{transcript}"
    );
}

/// `--heartbeat-ms 0` alone ("0 = none") turns silence detection off, on
/// `herald run` (passed on as HERALD_HEARTBEAT_MS) and on `herald node`,
/// instead of failing every rank for a peer timeout it never asked for.
#[test]
fn heartbeat_zero_alone_turns_silence_detection_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = common::example_plugin(dir.path());
    let main = format!("{}:example_main", example.display());
    for flags in [
        &["run", "-n", "2", "--heartbeat-ms", "0", "--"][..],
        &["run", "-n", "2", "--"][..],
    ] {
        let mut command = Command::new(common::herald());
        command.args(flags).arg(common::herald()).arg("node");
        if !flags.contains(&"--heartbeat-ms") {
            command.args(["--heartbeat-ms", "0"]);
        }
        let output = command
            .arg("--load")
            .arg(&example)
            .args(["--main", &main, "--library-path"])
            .arg(dir.path())
            .env_remove("HERALD_PEER_TIMEOUT_MS")
            .env_remove("HERALD_HEARTBEAT_MS")
            .output()
            .expect("herald run");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{flags:?}\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("all tasks succeeded on every node"),
            "{stdout}"
        );
    }
}

/// `--main`'s return value is rank 0's exit code: 7 gives 7, and -1 (C's usual
/// failure) is a failure too, 255 as `exit(-1)` gives, not the success it was.
#[test]
fn main_return_value_is_the_exit_code_and_negative_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = build_c(
        dir.path(),
        "plain",
        "mains",
        "int main_seven(void) { return 7; }\nint main_minus_one(void) { return -1; }\n\
         int main_zero(void) { return 0; }",
    );
    let secret = herald_tcp::Secret::random().to_hex();
    for (symbol, expected) in [("main_seven", 7), ("main_minus_one", 255), ("main_zero", 0)] {
        let mut command = Command::new(common::herald());
        let output = common::as_joiner(&mut command, &secret)
            .args(["node", "--rank", "0", "--size", "1", "--coordinator"])
            .arg(common::free_port().to_string())
            .arg("--library-path")
            .arg(dir.path())
            .arg("--main")
            .arg(format!("{}:{symbol}", library.display()))
            .output()
            .expect("herald node");
        assert_eq!(
            output.status.code(),
            Some(expected),
            "{symbol}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Node 0 loads library A while node 1 (in a task) loads library B; both
/// constructors register globally. Everything completes on every node.
#[test]
fn two_nodes_load_two_libraries_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = build_c(dir.path(), "driver", "driver", "");
    let a = build_c(dir.path(), "ctor_a", "ctor_a", "");
    let b = build_c(dir.path(), "ctor_b", "ctor_b", "");
    let mut job = start_main(
        3,
        dir.path(),
        &driver,
        "main_concurrent_loads",
        &[("DRIVER_LIB_A", &a), ("DRIVER_LIB_B", &b)],
    );
    let statuses = job.wait();
    assert!(statuses.iter().all(|s| s.success()), "{}", job.transcript());
    assert_eq!(
        job.count("concurrent loads: done"),
        1,
        "{}",
        job.transcript()
    );
    for node in 0..3 {
        assert_eq!(
            job.count(&format!("node {node}: A callback ran")),
            1,
            "{}",
            job.transcript()
        );
        assert_eq!(
            job.count(&format!("node {node}: B callback ran")),
            1,
            "{}",
            job.transcript()
        );
    }
}

/// Two callbacks run at once on every node, each registering the other nested
/// and waiting for it: on each node exactly one wait is refused with
/// HERALD_ERR_WOULD_DEADLOCK (instead of both waiting for ever), the other
/// ends, and both registrations complete. The same with two callbacks that each
/// launch a task to their own node, held there until the other is done.
#[test]
fn two_invocations_waiting_on_each_other_refuse_one_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cycle = build_c(dir.path(), "cycle", "cycle", "");
    for (main, waited, first, second) in [
        ("cycle_main", "nested", "A", "B"),
        ("cycle_task_main", "task", "TA", "TB"),
    ] {
        let mut job = start_main(3, dir.path(), &cycle, main, &[]);
        let statuses = job.wait();
        let transcript = job.transcript();
        assert!(statuses.iter().all(|s| s.success()), "{transcript}");
        assert_eq!(job.count("cycle registrations: done"), 1, "{transcript}");
        for node in 0..3 {
            let count = |me: &str, what: &str| {
                job.count(&format!("node {node}: {me}: {waited} wait {what}"))
            };
            let refused = count(first, "refused") + count(second, "refused");
            let ended = count(first, "ok") + count(second, "ok");
            assert_eq!((refused, ended), (1, 1), "node {node}\n{transcript}");
        }
        assert_eq!(
            job.count("waiting here would deadlock"),
            3,
            "the refusal says why\n{transcript}"
        );
    }
}

/// A library's constructor calls herald_load_library: refused with
/// HERALD_ERR_WOULD_DEADLOCK on every node the library is loaded on, and the
/// library it names is loaded nowhere (its constructor's callback never runs).
#[test]
fn load_library_from_a_constructor_loads_nothing_anywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outer = build_c(dir.path(), "ctor_load", "ctor_load", "");
    let inner = build_c(dir.path(), "ctor_a", "ctor_a", "");
    let mut job = start_main(
        3,
        dir.path(),
        &outer,
        "ctor_load_main",
        &[("CTOR_LOAD_INNER", &inner)],
    );
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    for node in 0..3 {
        let refused =
            format!("node {node}: load from constructor rc=2: waiting here would deadlock");
        assert_eq!(job.count(&refused), 1, "{refused}\n{transcript}");
        let probe = format!("probe on node {node}: inner not loaded");
        assert_eq!(job.count(&probe), 1, "{probe}\n{transcript}");
    }
    assert_eq!(job.count("nothing was loaded"), 3, "{transcript}");
    assert_eq!(job.count("A callback ran"), 0, "{transcript}");
}

/// Node 2 is killed while it runs a registration: the others complete, and the
/// result names node 2 as unreachable.
#[test]
fn killed_node_is_named_and_the_rest_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = build_c(dir.path(), "driver", "driver", "");
    let mut job = start_main(4, dir.path(), &driver, "main_killed_node", &[]);
    job.expect_line(|l| l.rank == 2 && l.text.contains("node 2: stalling"));
    job.kill(2);
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(transcript.contains("unreachable nodes: 2"), "{transcript}");
    for rank in [0, 1, 3] {
        assert!(statuses[rank].success(), "rank {rank}\n{transcript}");
    }
    assert!(!statuses[2].success());
}

/// A rank holding another secret cannot join: it fails the handshake, and the
/// job does not form.
#[test]
fn wrong_secret_is_refused() {
    let mut job = Job::start(2, |rank| RankSetup {
        args: args([&"--establish-timeout", &"5"]),
        env: if rank == 1 {
            vec![(
                "HERALD_SECRET".into(),
                herald_tcp::Secret::random().to_hex(),
            )]
        } else {
            vec![]
        },
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(!statuses[1].success(), "{transcript}");
    assert!(!statuses[0].success(), "{transcript}");
    assert!(
        transcript.contains("[1 err] herald: rank 1 of 2: the job did not form"),
        "{transcript}"
    );
    assert!(transcript.contains("cluster secret"), "{transcript}");
}

/// Node 0 loaded a library; the file at that path then changes. The other nodes
/// find a different digest and refuse to load it; the result names them and the path.
#[test]
fn digest_mismatch_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = build_c(dir.path(), "driver", "driver", "");
    let plain = build_c(dir.path(), "plain", "plain", "");
    let replacement = build_c(
        dir.path(),
        "plain",
        "plain_other",
        "int different_build = 1;",
    );
    let mut job = start_main(
        3,
        dir.path(),
        &driver,
        "main_digest_mismatch",
        &[
            ("DRIVER_LIB_A", &plain),
            ("DRIVER_REPLACEMENT", &replacement),
        ],
    );
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    for node in [1, 2] {
        let wanted = format!("node {node}: library {} differs", plain.display());
        assert!(transcript.contains(&wanted), "{wanted}\n{transcript}");
    }
    assert!(
        transcript.contains("node 0: plain callback ran"),
        "{transcript}"
    );
    assert!(
        !transcript.contains("node 1: plain callback ran"),
        "{transcript}"
    );
}

/// Only node 0 allows the plugin's directory: the others refuse to load it and
/// the load fails, naming them.
#[test]
fn library_outside_allowed_directories_is_refused() {
    let allowed = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let nest = build_c(elsewhere.path(), "nest", "nest", "");
    let mut job = Job::start(3, |rank| RankSetup {
        args: if rank == 0 {
            args([&"--load", &nest, &"--library-path", &elsewhere.path()])
        } else {
            args([&"--library-path", &allowed.path()])
        },
        env: vec![],
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(!statuses[0].success(), "{transcript}");
    for node in [1, 2] {
        let wanted = format!(
            "node {node}: library {}",
            nest.canonicalize().expect("path").display()
        );
        assert!(transcript.contains(&wanted), "{wanted}\n{transcript}");
    }
    assert!(
        transcript.contains("is outside the allowed directories"),
        "{transcript}"
    );
    assert_eq!(
        job.count("inner ran"),
        1,
        "only node 0 ran it\n{transcript}"
    );
}

/// Garbage thrown at node 0's port (no handshake, a huge length, random bytes)
/// is dropped; the job keeps serving.
#[test]
fn garbage_on_the_port_does_not_stop_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = build_c(dir.path(), "driver", "driver", "");
    let mut job = start_main(2, dir.path(), &driver, "main_after_garbage", &[]);
    job.expect_line(|l| l.rank == 0 && l.text.contains("ready for garbage"));
    let garbage: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: herald\r\n\r\n",
        &[0xff; 4096],
        &[0x00, 0x00, 0x00, 0x7f, 1, 2, 3],
    ];
    for bytes in garbage {
        // The node may close the connection as soon as it sees bad bytes.
        if let Ok(mut stream) = TcpStream::connect(job.coordinator) {
            let _ = stream.write_all(bytes);
        }
    }
    job.write_stdin(0, "go\n");
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert!(
        transcript.contains("echo -> node 1: still serving"),
        "{transcript}"
    );
    assert!(transcript.contains("after garbage: served"), "{transcript}");
}

/// The Rust example plugin (a cdylib declaring the C ABI itself, compiled here
/// with plain `rustc`, linking nothing) works like a C one.
#[test]
fn rust_plugin_links_nothing_and_runs_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("librust_plugin.so");
    let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--edition", "2024", "--crate-type", "cdylib", "-o"])
        .arg(&plugin)
        .arg(common::repo_root().join("examples/rust-plugin/src/lib.rs"))
        .status()
        .expect("rustc");
    assert!(status.success());
    let mut job = start_main(3, dir.path(), &plugin, "rust_plugin_main", &[]);
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    for node in 0..3 {
        let wanted = format!("node {node}: rust.fibonacci(50) = 12586269025");
        assert!(transcript.contains(&wanted), "{transcript}");
    }
}

/// `herald run` passes the bootstrap variables and prefixes each line with its rank.
#[test]
fn herald_run_prefixes_output_with_the_rank() {
    let script = r#"echo "hello from $HERALD_RANK of $HERALD_SIZE secret=${#HERALD_SECRET}""#;
    let output = Command::new(common::herald())
        .args(["run", "-n", "3", "--", "sh", "-c", script])
        .output()
        .expect("herald run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for rank in 0..3 {
        let line = format!("[{rank}] hello from {rank} of 3 secret=64");
        assert!(stdout.contains(&line), "{stdout}");
    }
}

/// When one rank fails, `herald run` stops the others (here: sleeping for ten
/// minutes) and fails itself, naming the rank.
#[test]
fn herald_run_stops_the_job_when_a_rank_fails() {
    let script = r#"if [ "$HERALD_RANK" = 1 ]; then echo "rank 1 gives up"; exit 3; fi
        exec sleep 600"#;
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let output = Command::new(common::herald())
            .args(["run", "-n", "3", "--", "sh", "-c", script])
            .output();
        let _ = done_tx.send(output);
    });
    let output = done
        .recv_timeout(common::GUARD)
        .expect("herald run stopped the sleeping ranks")
        .expect("herald run ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stdout.contains("[1] rank 1 gives up"), "{stdout}");
    assert!(stderr.contains("rank 1 failed"), "{stderr}");
}

/// Stopping the other ranks after a failure stops what they started too: rank
/// 0 is a shell that runs a ten-minute `sleep` as its child (as a wrapper script
/// runs its program). Killing only the shell would leave the sleep running,
/// holding rank 0's output pipe, and `herald run` would wait for it.
#[test]
fn herald_run_stops_what_the_other_ranks_started_when_a_rank_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleep.pid");
    // Rank 1 fails only once rank 0's child is running (its pid is written).
    let script = r#"if [ "$HERALD_RANK" = 1 ]; then
            while [ ! -s "$PID_FILE" ]; do sleep 0.05; done
            exit 3
        fi
        sleep 600 &
        echo $! > "$PID_FILE.tmp" && mv "$PID_FILE.tmp" "$PID_FILE"
        wait"#;
    assert_failing_job_leaves_no_child(script, &pid_file, "rank 0");
}

/// What the failing rank itself left running is stopped too: rank 1 starts a
/// ten-minute `sleep` in the background and fails. Left running, the sleep
/// would hold rank 1's output pipe and keep `herald run` waiting for it.
#[test]
fn herald_run_stops_what_the_failing_rank_left_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleep.pid");
    let script = r#"if [ "$HERALD_RANK" = 1 ]; then
            sleep 600 &
            echo $! > "$PID_FILE.tmp" && mv "$PID_FILE.tmp" "$PID_FILE"
            exit 3
        fi
        exec sleep 600"#;
    assert_failing_job_leaves_no_child(script, &pid_file, "rank 1");
}

/// Runs `herald run -n 2 -- sh -c SCRIPT`, in which rank 1 fails and `whose` rank
/// starts a background child and writes its pid to `$PID_FILE` (`pid_file`), and
/// checks that `herald run` fails naming rank 1 and that the child is gone.
fn assert_failing_job_leaves_no_child(script: &str, pid_file: &Path, whose: &str) {
    let (done_tx, done) = crossbeam_channel::bounded(1);
    let pid_path = pid_file.to_path_buf();
    let script = script.to_owned();
    std::thread::spawn(move || {
        let output = Command::new(common::herald())
            .args(["run", "-n", "2", "--", "sh", "-c", &script])
            .env("PID_FILE", &pid_path)
            .output();
        let _ = done_tx.send(output);
    });
    let output = done.recv_timeout(common::GUARD);
    let sleep_pid: Option<i32> = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse().ok());
    let alive = sleep_pid.is_some_and(|pid| {
        // A zombie (exited, not yet reaped by its new parent) is gone too.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim()
                .starts_with('Z')
        })
    });
    if alive {
        if let Some(pid) = sleep_pid {
            // SAFETY: kill(2) on the test's own leftover `sleep`.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let output = output
        .unwrap_or_else(|_| panic!("herald run ended once it stopped {whose}'s child"))
        .expect("herald run ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("rank 1 failed"), "{stderr}");
    assert!(sleep_pid.is_some(), "{whose} started its child: {stderr}");
    assert!(!alive, "{whose}'s child outlived the job");
}

/// Starts `nodes` ranks of `herald node` that may load libraries from `dir`: rank 0
/// loads `library` and runs its function `main`. Every rank also gets the variables
/// `env`, each naming a library for the test's driver to load.
fn start_main(nodes: u32, dir: &Path, library: &Path, main: &str, env: &[(&str, &PathBuf)]) -> Job {
    let main = format!("{}:{main}", library.display());
    Job::start(nodes, |_| RankSetup {
        args: args([
            &"--load",
            &library,
            &"--main",
            &main,
            &"--library-path",
            &dir,
        ]),
        env: env
            .iter()
            .map(|(name, path)| (name.to_string(), path.display().to_string()))
            .collect(),
    })
}

/// A rank that exits with status 88 (what `herald node` does when the job
/// declared it down) does not stop the others: they go on and finish, and
/// `herald run` still fails at the end, saying why.
#[test]
fn herald_run_lets_the_job_go_on_without_a_fenced_rank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("rank1.pid");
    // Ranks 0 and 2 wait until rank 1 has exited and been reaped, then finish.
    let script = format!(
        r#"if [ "$HERALD_RANK" = 1 ]; then echo $$ > {m}.tmp; mv {m}.tmp {m}; exit 88; fi
        while [ ! -e {m} ]; do sleep 0.01; done
        while kill -0 "$(cat {m})" 2>/dev/null; do sleep 0.01; done
        echo "rank $HERALD_RANK went on""#,
        m = marker.display()
    );
    let output = Command::new(common::herald())
        .args(["run", "-n", "3", "--", "sh", "-c", &script])
        .output()
        .expect("herald run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("[0] rank 0 went on"), "{stdout}\n{stderr}");
    assert!(stdout.contains("[2] rank 2 went on"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("rank 1 was declared down by the job"),
        "{stderr}"
    );
}

/// Exact causality on real processes (issue scenario): node 1 only *received*
/// the registration, yet a task it launches to node 2 runs there only once the
/// registration is done there (node 2's callback is slow).
#[test]
fn a_node_that_only_received_a_registration_launches_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let causal = build_c(dir.path(), "causal", "causal", "");
    let mut job = start_main(3, dir.path(), &causal, "main_causal_relay", &[]);
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert!(
        transcript.contains("node 2 saw the registration done"),
        "{transcript}"
    );
}
