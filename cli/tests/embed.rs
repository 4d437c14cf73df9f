//! Programs that start herald themselves through libherald.so (`herald_init`,
//! `herald_finalize`), as real processes: the SPMD example under `herald run`, a
//! collective finalize that keeps serving, replicated registrations, misuse.
//!
//! The library under test is the `cdylib` cargo builds for this test (a
//! dev-dependency), next to the test executable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Job, RankSetup, example_plugin, herald, repo_root};

/// Compiles the C program `source` into `dir/name`, linked against the
/// libherald.so built for this test (with an rpath to it).
/// Starts `nodes` ranks of `program`, each given `plugin` as its argument and
/// `dir` (where the plugin is) as `HERALD_LIBRARY_PATH`.
fn start_with_plugin(nodes: u32, program: &Path, plugin: &Path, dir: &Path) -> Job {
    Job::start_program(nodes, program, |_| RankSetup {
        args: vec![plugin.into()],
        env: vec![("HERALD_LIBRARY_PATH".into(), dir.display().to_string())],
    })
}

fn build_program(dir: &Path, source: &Path, name: &str) -> PathBuf {
    let library = libherald();
    assert!(library.exists(), "{} was not built", library.display());
    let lib_dir = library.parent().expect("its directory");
    let program = dir.join(name);
    let status = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&program)
        .arg(source)
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg(format!("-L{}", lib_dir.display()))
        // DT_RPATH, not DT_RUNPATH: it comes before LD_LIBRARY_PATH, which cargo
        // sets to directories that may hold an older libherald.so of another
        // build (the target directory's own copy).
        .arg(format!(
            "-Wl,--disable-new-dtags,-rpath,{}",
            lib_dir.display()
        ))
        .args(["-lherald", "-ldl"])
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {}", source.display());
    program
}

/// The libherald.so built for this test.
fn libherald() -> PathBuf {
    std::env::current_exe()
        .expect("test executable")
        .with_file_name("libherald.so")
}

/// The functions a header declares: top-level lines with a `herald_` name
/// before the first parenthesis.
fn declared_functions(header: &str) -> Vec<String> {
    header
        .lines()
        .filter(|line| !line.starts_with([' ', '/', '*', '#', '}', '\t']))
        .filter(|line| !line.starts_with("typedef"))
        .filter_map(|line| line.split('(').next().filter(|_| line.contains('(')))
        .filter_map(|head| head.split([' ', '*']).next_back())
        .filter(|name| name.starts_with("herald_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn libherald_exports_every_function_of_both_headers() {
    let root = repo_root();
    let path = std::ffi::CString::new(libherald().into_os_string().into_encoded_bytes())
        .expect("no NUL in the path");
    // SAFETY: loading libherald.so runs no constructor of its own; symbols are
    // only looked up, never called; the handle is never closed.
    let library = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!library.is_null(), "cannot load libherald.so");
    for header in ["include/herald.h", "include/herald_core.h"] {
        let text = std::fs::read_to_string(root.join(header)).expect("read header");
        let functions = declared_functions(&text);
        assert!(functions.len() >= 10, "{header}: found only {functions:?}");
        for name in functions {
            let symbol = std::ffi::CString::new(name.as_str()).expect("no NUL");
            // SAFETY: only the symbol's presence is checked.
            let found = unsafe { libc::dlsym(library, symbol.as_ptr()) };
            assert!(
                !found.is_null(),
                "{header} declares {name}, which libherald.so does not export"
            );
        }
    }
}

/// herald_core.h's structs have the layout herald-core-c gives them.
#[test]
fn core_output_layout_matches_the_header() {
    use herald::core_api::{
        Completed, Fenced, Invoke, PeerDown, RunTask, TaskCompleted, Transmit, herald_core_failure,
        herald_core_output,
    };
    use std::mem::{align_of, offset_of, size_of};
    let dir = tempfile::tempdir().expect("tempdir");
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/core_layout.c"),
        "core-layout",
    );
    let output = Command::new(&program).output().expect("run");
    assert!(output.status.success());
    let c_layout = String::from_utf8_lossy(&output.stdout).into_owned();
    let rust_layout = [
        ("output.size", size_of::<herald_core_output>()),
        ("output.align", align_of::<herald_core_output>()),
        ("output.body", offset_of!(herald_core_output, body)),
        ("transmit.frame_len", offset_of!(Transmit, frame_len)),
        ("invoke.tag", offset_of!(Invoke, tag)),
        ("invoke.args_len", offset_of!(Invoke, args_len)),
        ("completed.summary", offset_of!(Completed, summary)),
        ("completed.unreachable", offset_of!(Completed, unreachable)),
        ("run_task.args_len", offset_of!(RunTask, args_len)),
        ("task_completed.error", offset_of!(TaskCompleted, error)),
        ("peer_down.reason", offset_of!(PeerDown, reason)),
        ("fenced.reason", offset_of!(Fenced, reason)),
        ("failure.size", size_of::<herald_core_failure>()),
        ("failure.error", offset_of!(herald_core_failure, error)),
    ]
    .iter()
    .map(|(name, value)| format!("{name} {value}\n"))
    .collect::<String>();
    assert_eq!(c_layout, rust_layout);
}

#[test]
fn embed_c_example_runs_under_herald_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = example_plugin(dir.path());
    let program = build_program(
        dir.path(),
        &repo_root().join("examples/embed-c/embed.c"),
        "embed-c",
    );
    let output = Command::new(herald())
        .args(["run", "-n", "4", "--"])
        .arg(&program)
        .arg(&plugin)
        .current_dir(dir.path())
        .env_remove("HERALD_LIBRARY_PATH")
        .output()
        .expect("run herald run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let transcript = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the job failed:\n{transcript}");
    for node in 0..4 {
        let registered = format!("[{node}] node {node}: example tasks registered");
        assert_eq!(
            stdout.matches(&registered).count(),
            1,
            "node {node} registered the plugin's tasks exactly once:\n{transcript}"
        );
        for task in ["checksum", "reverse", "wordcount"] {
            assert!(
                stdout.contains(&format!("[0] node {node}: example.{task} -> ")),
                "example.{task} ran on node {node}:\n{transcript}"
            );
        }
        assert!(
            stdout.contains(&format!("[{node}] rank {node} finalized")),
            "rank {node} finalized:\n{transcript}"
        );
    }
    assert!(
        stdout.contains("embed-c: every task right on every rank"),
        "{transcript}"
    );
    assert!(!stdout.contains("WRONG"), "{transcript}");
}

#[test]
fn finalize_serves_until_every_rank_called_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = example_plugin(dir.path());
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/embed_spmd.c"),
        "embed-spmd",
    );
    let nodes = 4;
    let mut job = start_with_plugin(nodes, &program, &plugin, dir.path());
    // Every rank but 0 is inside herald_finalize; rank 0 has not called it yet.
    for rank in 1..nodes {
        job.expect_line(|l| l.rank == rank && l.text == format!("rank {rank}: finalizing"));
    }
    assert_eq!(
        job.count(": finalized"),
        0,
        "a rank left herald_finalize before rank 0 called it:\n{}",
        job.transcript()
    );
    job.write_stdin(0, "go\n");
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(
        statuses.iter().all(|s| s.success()),
        "every rank succeeds:\n{transcript}"
    );
    for node in 0..nodes {
        // Four ranks asked for the same registration: each node ran it once.
        assert_eq!(
            job.count(&format!("node {node}: example tasks registered")),
            1,
            "{transcript}"
        );
        assert_eq!(
            job.count(&format!("rank {node}: registration done")),
            1,
            "{transcript}"
        );
        // Served after this rank had entered herald_finalize.
        assert_eq!(
            job.count(&format!(
                "rank 0: example.reverse on node {node} -> ezilanif"
            )),
            1,
            "{transcript}"
        );
        assert_eq!(
            job.count(&format!("rank {node}: finalized (0)")),
            1,
            "{transcript}"
        );
    }
}

/// A rank that forks: the child's herald calls fail naming the fork (its
/// copy of the runtime has none of its threads and shares the parent's
/// links), and the parent's links survive it: the job registers and ends.
#[test]
fn a_forked_child_cannot_use_or_break_its_parents_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = example_plugin(dir.path());
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/embed_fork.c"),
        "embed-fork",
    );
    let mut job = start_with_plugin(2, &program, &plugin, dir.path());
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert_eq!(job.count("child: 0 failed"), 2, "{transcript}");
    for rank in 0..2 {
        assert_eq!(
            job.count(&format!("rank {rank}: finalized (0)")),
            1,
            "{transcript}"
        );
    }
    assert!(!transcript.contains("in the job's view"), "{transcript}");
}

#[test]
fn calls_without_a_runtime_fail_with_a_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/embed_misuse.c"),
        "embed-misuse",
    );
    let mut command = Command::new(&program);
    // A job of one: no launcher in the environment.
    for var in [
        "HERALD_RANK",
        "HERALD_SIZE",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "PMI_RANK",
        "PMI_SIZE",
        "PMIX_RANK",
        "SLURM_PROCID",
        "SLURM_NTASKS",
    ] {
        command.env_remove(var);
    }
    let output = command.output().expect("run the misuse program");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let transcript = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "a check failed:\n{transcript}");
    assert!(stdout.contains("misuse: 0 failed"), "{transcript}");
    assert_eq!(stdout.matches("ok: ").count(), 16, "{transcript}");
}

/// Careless pointers from a plugin. A task that keeps its `herald_output` and
/// writes through it after returning (from the main thread) is refused with
/// HERALD_ERR_INVALID; before, the write appended to a buffer already handed out
/// as the result (heap corruption). A helper thread writing while the task waits
/// for it still works. A data symbol cast to a callback or task function is
/// refused at registration; before, every node crashed calling it.
#[test]
fn careless_pointers_from_a_plugin_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = common::build_c(dir.path(), "stale_output", "stale_output", "");
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/stale_output_main.c"),
        "stale-output",
    );
    let output = Command::new(&program)
        .arg(&plugin)
        .env_remove("HERALD_RANK")
        .env_remove("HERALD_SIZE")
        .env("HERALD_LIBRARY_PATH", dir.path())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let transcript = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{transcript}");
    assert_eq!(stdout.matches("ok: ").count(), 8, "{transcript}");
    assert!(
        stdout.contains("stale output: 0 failed, finalize 0"),
        "{transcript}"
    );
}

/// A plugin loaded with plain `dlopen` registers from its constructor with
/// nobody waiting; if that registration fails, herald_finalize says so.
#[test]
fn finalize_reports_a_failed_registration_nobody_waited_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin_source = dir.path().join("failing.c");
    std::fs::write(
        &plugin_source,
        r#"
#include "herald.h"
int refuse(const void *a, size_t n) { (void)a; (void)n; herald_set_error("refused on purpose"); return 7; }
HERALD_REGISTER_ON_LOAD(refuse, 0, 0, "failing-plugin")
"#,
    )
    .expect("write plugin");
    let plugin = dir.path().join("libfailing.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&plugin)
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg(&plugin_source)
        .status()
        .expect("run cc");
    assert!(status.success());
    let main_source = dir.path().join("main.c");
    std::fs::write(
        &main_source,
        r#"
#include <dlfcn.h>
#include <stdio.h>
#include "herald.h"
int main(int argc, char **argv) {
    if (argc < 2 || herald_init(&argc, &argv) != HERALD_OK) return 2;
    if (!dlopen(argv[1], RTLD_NOW)) return 3;
    int code = herald_finalize();
    char error[512] = "";
    herald_wait(0, error, sizeof error);
    printf("finalize %d: %s\n", code, error);
    return 0;
}
"#,
    )
    .expect("write main");
    let program = build_program(dir.path(), &main_source, "settle");
    let output = Command::new(&program)
        .arg(&plugin)
        .current_dir(dir.path())
        .env_remove("HERALD_RANK")
        .env_remove("HERALD_SIZE")
        .env_remove("HERALD_LIBRARY_PATH")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with(&format!("finalize {}: ", 1)) && stdout.contains("refused on purpose"),
        "herald_finalize reports the failure: {stdout}"
    );
}

/// A rank that called herald_finalize and is then declared down by the job
/// (stopped past the peer timeout while rank 0 ends the job) learns it once it
/// runs again: its herald_finalize fails, saying who declared it down, at once,
/// instead of waiting out the wait for rank 0 to close its links (which its
/// stopped runtime would never see) and returning success.
#[test]
fn finalize_on_a_rank_declared_down_after_calling_it_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/finalize_fenced.c"),
        "finalize-fenced",
    );
    let nodes = 4;
    let mut job = Job::start_program(nodes, &program, |_| RankSetup {
        args: Vec::new(),
        env: vec![
            ("HERALD_HEARTBEAT_MS".into(), "200".into()),
            ("HERALD_PEER_TIMEOUT_MS".into(), "2000".into()),
        ],
    });
    for rank in 1..nodes {
        job.expect_line(|l| l.rank == rank && l.text == format!("rank {rank}: finalizing"));
    }
    job.signal(1, libc::SIGSTOP);
    job.write_stdin(0, "go\n");
    job.expect_line(|l| l.rank == 0 && l.text.starts_with("rank 0: finalized"));
    job.signal(1, libc::SIGCONT);
    let statuses = job.wait();
    let transcript = job.transcript();
    let line = job
        .expect_line(|l| l.rank == 1 && l.text.starts_with("rank 1: finalized"))
        .text;
    let declared =
        job.count_lines(|l| l.rank == 0 && l.stderr && l.text.contains("link to node 1 lost")) > 0;
    if !declared {
        // Rank 1 answered the end of the job before the stop took hold (seen
        // once in a loaded full run): the job ended normally, nobody was
        // declared down, and there is nothing more to check.
        println!("rank 1 was not declared down; the job ended normally:\n{transcript}");
        assert!(statuses.iter().all(|s| s.success()), "{transcript}");
        return;
    }
    assert!(
        line.starts_with("rank 1: finalized (1): ") && line.contains("declared down by node 0"),
        "rank 1 was declared down: {line}\n{transcript}"
    );
    assert_eq!(statuses[1].code(), Some(1), "{transcript}");
}

/// herald_finalize and herald_init called from a callback or a task are refused
/// at once (HERALD_ERR_WOULD_DEADLOCK, HERALD_ERR_INVALID) on every rank, also
/// where the program's main thread is already inside herald_finalize; before,
/// they waited for ever (for the end of the job, which waits for them, or for
/// the lock that main thread's herald_finalize held).
#[test]
fn init_and_finalize_inside_callbacks_and_tasks_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = common::build_c(dir.path(), "inside", "inside", "");
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/inside_main.c"),
        "inside-main",
    );
    let nodes = 3;
    let mut job = start_with_plugin(nodes, &program, &plugin, dir.path());
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    for node in 0..nodes {
        for place in ["callback", "task"] {
            assert_eq!(
                job.count(&format!("node {node}: {place}: finalize 2, init 3")),
                1,
                "{transcript}"
            );
        }
        assert_eq!(
            job.count(&format!("rank {node}: finalized (0), 0 failures")),
            1,
            "{transcript}"
        );
    }
}

/// A view hook that calls herald_finalize or herald_init (it runs on the thread
/// that runs herald's event loop) is refused at once, on ranks whose main
/// thread is inside herald_finalize too; before, the hook waited for ever and
/// so did the whole rank (its loop stopped, and with it its heartbeats).
#[test]
fn init_and_finalize_inside_a_view_hook_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/hook_finalize.c"),
        "hook-finalize",
    );
    let mut job = Job::start_program(3, &program, |_| RankSetup {
        args: Vec::new(),
        env: Vec::new(),
    });
    for rank in 0..3 {
        job.expect_line(|l| l.rank == rank && l.text == format!("rank {rank}: ready"));
    }
    job.kill(2);
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(
        statuses[0].success() && statuses[1].success(),
        "{transcript}"
    );
    for rank in 0..2 {
        assert!(
            job.count(&format!("rank {rank}: hook: finalize 2, init 3")) >= 1,
            "{transcript}"
        );
        // Rank 2 went down without calling herald_finalize.
        assert_eq!(
            job.count(&format!("rank {rank}: finalized (1)")),
            1,
            "{transcript}"
        );
    }
}

/// A process that joins (HERALD_JOIN) while rank 0 is already inside
/// herald_finalize is a rank like the others: rank 0 ends the job only once it
/// called herald_finalize too, and every rank, the joiner included, finalizes.
#[test]
fn rank_0_in_finalize_waits_for_a_rank_that_joined_meanwhile() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let (_dir, program, secret, mut job) = join_finalize_job(3);
    let mut joiner = common::as_joiner(&mut Command::new(&program), &secret)
        .env("HERALD_JOIN", job.coordinator.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the joiner");
    let mut lines = BufReader::new(joiner.stdout.take().expect("stdout")).lines();
    let started = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(started, "rank 3: started");
    // Ranks 1 and 2 call herald_finalize; the joiner has not yet.
    for rank in 1..3 {
        job.write_stdin(rank, "go\n");
        job.expect_line(|l| l.rank == rank && l.text == format!("rank {rank}: finalizing"));
    }
    // Rank 0 must still wait for the joiner (wrongly, it would end the job, and
    // leave once the joiner acknowledged the end, at once).
    let ended = job.line_within(
        |l| l.rank == 0 && l.text.starts_with("rank 0: finalized"),
        std::time::Duration::from_secs(3),
    );
    assert!(
        !ended,
        "rank 0 ended the job before the joiner called herald_finalize:\n{}",
        job.transcript()
    );
    let mut stdin = joiner.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("write to the joiner");
    drop(stdin);
    let statuses = job.wait();
    assert!(
        statuses.iter().all(|s| s.success()),
        "every rank succeeds:\n{}",
        job.transcript()
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = joiner.wait().expect("wait for the joiner");
    assert!(status.success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l == "rank 3: finalized (0)"),
        "{rest:?}"
    );
}

/// `herald node --join` into a job whose ranks call `herald_init`: the joiner
/// runs no program, so it tells rank 0 it has nothing to finalize; rank 0's
/// `herald_finalize` then ends the job once the job's own ranks have called it,
/// instead of waiting for the joiner until it is killed.
#[test]
fn a_herald_node_joiner_does_not_hold_back_the_end_of_a_herald_init_job() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let (_dir, _program, secret, mut job) = join_finalize_job(2);
    let mut joiner = common::as_joiner(&mut Command::new(herald()), &secret)
        .args(["node", "-v", "--join"])
        .arg(job.coordinator.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the joiner");
    let mut errors = BufReader::new(joiner.stderr.take().expect("stderr")).lines();
    // Admitted (it says so once it has replayed the job's log and serves).
    let admitted = errors
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("herald node: rank 2 of 3"));
    assert!(admitted.is_some(), "the joiner was not admitted");
    job.write_stdin(1, "go\n");
    let statuses = job.wait();
    assert!(
        statuses.iter().all(|s| s.success()),
        "every rank succeeds:\n{}",
        job.transcript()
    );
    let rest: Vec<String> = errors.map_while(Result::ok).collect();
    let status = joiner.wait().expect("wait for the joiner");
    assert!(status.success(), "the joiner: {status}\n{rest:?}");
}

/// A job of `nodes` ranks of `cli/tests/c/embed_join_finalize.c` (built into a
/// directory kept alive by the first value), with its secret, once rank 0 is
/// inside herald_finalize.
fn join_finalize_job(nodes: u32) -> (tempfile::TempDir, PathBuf, String, Job) {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = build_program(
        dir.path(),
        &repo_root().join("cli/tests/c/embed_join_finalize.c"),
        "embed-join-finalize",
    );
    let secret = herald_tcp::Secret::random().to_hex();
    let mut job = Job::start_program_with_secret(nodes, &program, &secret, |_| RankSetup {
        args: Vec::new(),
        env: Vec::new(),
    });
    job.expect_line(|l| l.rank == 0 && l.text == "rank 0: finalizing");
    (dir, program, secret, job)
}
