//! Late joiners on real processes over TCP: a 4th `herald node --join` process
//! joins a running 3-rank job whose plugin registered a task globally, replays
//! the registration, and runs the task rank 0 launches on it; a joiner that lacks
//! the library is not admitted, and says which node and which file; two joiners
//! arriving at once, while registrations are in flight, each run every
//! registration exactly once; a joiner stopped mid-replay is fenced and says
//! so; a replayed callback waiting for a task on its own node is refused, not
//! hung.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;

use common::{Job, RankSetup, args, build_c};

/// Starts the 3-rank job: rank 0 loads the plugin and runs `join_main`.
fn start_job(dir: &Path, plugin: &Path, secret: &str, expect: &str) -> Job {
    let env = [("JOIN_EXPECT", expect)];
    start_job_running(dir, plugin, "join_main", secret, &env)
}

/// Starts a 3-rank job whose rank 0 loads `plugin` (from `dir`, an allowed
/// directory) and runs its function `main`, every rank with `env`.
fn start_job_running(
    dir: &Path,
    plugin: &Path,
    main: &str,
    secret: &str,
    env: &[(&str, &str)],
) -> Job {
    let main = format!("{}:{main}", plugin.display());
    let setup = |_| RankSetup {
        args: args([
            &"--load",
            &plugin,
            &"--main",
            &main,
            &"--library-path",
            &dir,
        ]),
        env: env
            .iter()
            .map(|(name, value)| ((*name).into(), (*value).into()))
            .collect(),
    };
    Job::start_with(3, common::free_port(), secret, |_| Vec::new(), setup)
}

/// Waits for a joiner started by [`start_joiner`]; fails, with its output, unless
/// it succeeded.
fn assert_joiner_succeeded(joiner: JoinHandle<Output>) {
    let output = joiner.join().expect("joiner thread");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `herald node --join` against the job, collecting its output.
fn start_joiner(job: &Job, dir: &Path, secret: &str) -> JoinHandle<Output> {
    let mut command = joiner_command(job, dir, secret);
    std::thread::spawn(move || command.output().expect("run the joiner"))
}

/// `herald node --join` against the job, allowing libraries from `dir`.
fn joiner_command(job: &Job, dir: &Path, secret: &str) -> Command {
    let mut command = Command::new(common::herald());
    common::as_joiner(&mut command, secret)
        .args(["node", "--join"])
        .arg(job.coordinator.to_string())
        .arg("--library-path")
        .arg(dir)
        .env_remove("HERALD_LIBRARY_PATH");
    command
}

#[test]
fn a_fourth_process_joins_replays_the_plugin_and_runs_its_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = build_c(dir.path(), "join", "join", "");
    let secret = herald_tcp::Secret::random().to_hex();
    let mut job = start_job(dir.path(), &plugin, &secret, "run");
    job.expect_line(|l| l.rank == 0 && l.text.contains("waiting for a joiner"));
    let joiner = start_joiner(&job, dir.path(), &secret);
    job.expect_line(|l| l.rank == 0 && l.text.contains("7 squared on node 3 is 49"));
    let statuses = job.wait();
    assert!(statuses.iter().all(|s| s.success()), "{}", job.transcript());
    assert_joiner_succeeded(joiner);
}

#[test]
fn a_joiner_that_lacks_the_library_is_not_admitted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = build_c(dir.path(), "join", "join", "");
    let secret = herald_tcp::Secret::random().to_hex();
    let mut job = start_job(dir.path(), &plugin, &secret, "refused");
    job.expect_line(|l| l.rank == 0 && l.text.contains("waiting for a joiner"));
    // The ranks have it loaded; the process that joins now cannot find it.
    std::fs::remove_file(&plugin).expect("remove the plugin");
    let joiner = start_joiner(&job, dir.path(), &secret);
    let output = joiner.join().expect("joiner thread");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("node 3 was not admitted"), "{stderr}");
    assert!(stderr.contains(&plugin.display().to_string()), "{stderr}");
    job.expect_line(|l| l.rank == 0 && l.text.contains("launch to node 3 failed"));
    let statuses = job.wait();
    assert!(statuses.iter().all(|s| s.success()), "{}", job.transcript());
}

#[test]
fn two_joiners_arriving_while_registrations_are_in_flight_run_each_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = build_c(dir.path(), "join_flight", "join_flight", "");
    let secret = herald_tcp::Secret::random().to_hex();
    let env = [
        ("FLIGHT_FIRST", "12"),
        ("FLIGHT_SECOND", "4"),
        ("FLIGHT_NODES", "5"),
    ];
    let mut job = start_job_running(dir.path(), &plugin, "flight_main", &secret, &env);
    job.expect_line(|l| l.rank == 0 && l.text.contains("waiting for joiners"));
    let joiners = [
        start_joiner(&job, dir.path(), &secret),
        start_joiner(&job, dir.path(), &secret),
    ];
    let statuses = job.wait();
    assert!(statuses.iter().all(|s| s.success()), "{}", job.transcript());
    let once = format!("ran: {}{}", "1".repeat(16), "0".repeat(16));
    for node in 0..5 {
        let wanted = format!("node {node} {once}");
        assert_eq!(job.count(&wanted), 1, "{wanted}\n{}", job.transcript());
    }
    joiners.into_iter().for_each(assert_joiner_succeeded);
}

/// Joining an address where no job listens says so after the first attempt,
/// not only when the establish timeout has passed, then fails naming it.
#[test]
fn a_joiner_told_a_dead_address_says_so_at_once() {
    let dead = common::free_port();
    let mut joiner = common::as_joiner(
        &mut Command::new(common::herald()),
        &herald_tcp::Secret::random().to_hex(),
    )
    .args(["node", "--join"])
    .arg(dead.to_string())
    .args(["--establish-timeout", "30"])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start the joiner");
    let stderr = joiner.stderr.take().expect("stderr");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut first)
        .expect("read the joiner's stderr");
    // The first line comes long before the 30 s deadline (the test would
    // otherwise wait for the exit below, which only comes at the deadline).
    assert!(
        first.contains(&format!("joining through rank 0 at {dead}")) && first.contains("retrying"),
        "{first}"
    );
    let _ = joiner.kill();
    let _ = joiner.wait();
}

/// A joiner stopped (SIGSTOP) in the middle of replaying the log, for longer than
/// the peer timeout, is declared down by rank 0; once continued it hears so and
/// stops like any rank the job declared down: status 88, saying who declared it
/// down and why (not that it "stopped before it was admitted", which sends the
/// user looking for a library it could not load).
#[test]
fn a_joiner_stopped_while_it_replays_is_fenced_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gate = dir.path().join("gate");
    // The joiner (node 3) stalls inside the replayed load until the gate exists,
    // so the stop lands while it is replaying.
    let stall = r#"
#include <sys/stat.h>
#include <unistd.h>
__attribute__((constructor)) static void join_stall(void) {
    const char *gate = getenv("JOIN_GATE");
    struct stat st;
    if (!gate || herald_node_id() != 3) return;
    printf("node 3: replaying\n");
    fflush(stdout);
    while (stat(gate, &st) != 0) usleep(5000);
}
"#;
    let plugin = build_c(dir.path(), "join", "join_stall", stall);
    let secret = herald_tcp::Secret::random().to_hex();
    let timing = [
        ("HERALD_HEARTBEAT_MS", "200"),
        ("HERALD_PEER_TIMEOUT_MS", "2000"),
    ];
    let mut env = vec![("JOIN_EXPECT", "refused")];
    env.extend(timing);
    let mut job = start_job_running(dir.path(), &plugin, "join_main", &secret, &env);
    job.expect_line(|l| l.rank == 0 && l.text.contains("waiting for a joiner"));
    let mut joiner = joiner_command(&job, dir.path(), &secret);
    joiner
        .envs(timing)
        .env("JOIN_GATE", &gate)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut joiner = joiner.spawn().expect("spawn the joiner");
    let stderr = {
        let mut pipe = joiner.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let mut stdout = BufReader::new(joiner.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("node 3: replaying") {
        line.clear();
        let read = stdout
            .read_line(&mut line)
            .expect("read the joiner's output");
        assert_ne!(read, 0, "the joiner ended before replaying");
    }
    let pid = joiner.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // Rank 0 sees node 3 go down (peer timeout), and a launch to it fail.
    job.expect_line(|l| l.rank == 0 && l.text.contains("launch to node 3 failed"));
    std::fs::write(&gate, "").expect("open the gate");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let status = joiner.wait().expect("wait for the joiner");
    let stderr = stderr.join().expect("stderr reader");
    assert_eq!(status.code(), Some(88), "{stderr}");
    assert!(
        stderr.contains("rank 3 was declared down by node 0"),
        "{stderr}"
    );
    let statuses = job.wait();
    assert!(statuses.iter().all(|s| s.success()), "{}", job.transcript());
}

/// A replayed callback that launches a task to its own node and waits for it:
/// on the job's ranks the task runs; on the joiner, which runs no task before
/// its replay ends (and the replay waits for this callback), the wait is refused
/// instead of hanging the join, the joiner is admitted and runs tasks.
#[test]
fn a_replayed_callback_waiting_for_a_task_on_its_own_node_is_refused_not_hung() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = build_c(dir.path(), "join_selftask", "join_selftask", "");
    let secret = herald_tcp::Secret::random().to_hex();
    let mut job = start_job_running(dir.path(), &plugin, "selftask_main", &secret, &[]);
    job.expect_line(|l| l.rank == 0 && l.text.contains("waiting for a joiner"));
    for rank in 0..3 {
        let ran = format!("node {rank}: self wait rc=0 echo from node {rank}");
        job.expect_line(|l| l.text == ran);
    }
    let joiner = start_joiner(&job, dir.path(), &secret);
    job.expect_line(|l| l.rank == 0 && l.text.contains("node 0: echo from node 3"));
    let statuses = job.wait();
    assert!(statuses.iter().all(|s| s.success()), "{}", job.transcript());
    let output = joiner.join().expect("joiner thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("node 3: self wait rc=2") && stdout.contains("joining"),
        "{stdout}"
    );
}
