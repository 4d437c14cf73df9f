//! A harness for multi-process tests: starts `herald node` ranks itself (so each
//! rank can get its own flags and environment), collects their output lines, and
//! synchronises only on lines and exit statuses. Timeouts are failure guards.
#![allow(dead_code)]

pub mod netns;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

#[path = "../../src/local_ranks.rs"]
mod local_ranks;

use local_ranks::{Stream, forward_output, free_loopback_port, notify_exit, set_bootstrap_env};

/// Longest any test waits for anything before declaring failure.
pub const GUARD: Duration = Duration::from_secs(60);

/// A loopback address with a port free right now.
pub fn free_port() -> SocketAddr {
    free_loopback_port().expect("free port")
}

/// The `herald` binary under test.
pub fn herald() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herald"))
}

/// Gives `command` the environment of a process joining a running job: the
/// cluster secret, and none of the rank variables a test's own environment (or
/// an enclosing `herald run`) may carry, which would make it a rank instead.
pub fn as_joiner<'a>(command: &'a mut Command, secret: &str) -> &'a mut Command {
    command
        .env("HERALD_SECRET", secret)
        .env_remove("HERALD_SECRET_FILE")
        .env_remove("HERALD_RANK")
        .env_remove("HERALD_SIZE")
        .env_remove("HERALD_COORDINATOR")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

/// Compiles `cli/tests/c/{name}.c` (or `source` if given) with plain `cc -shared -fPIC`
/// into `dir/lib{output}.so`.
pub fn build_c(dir: &Path, name: &str, output: &str, extra: &str) -> PathBuf {
    let original = repo_root().join(format!("cli/tests/c/{name}.c"));
    let source = std::fs::read_to_string(&original)
        .unwrap_or_else(|e| panic!("read {}: {e}", original.display()));
    let source_path = dir.join(format!("{output}.c"));
    std::fs::write(&source_path, format!("{source}\n{extra}\n")).expect("write source");
    let library = dir.join(format!("lib{output}.so"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg(&source_path)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {name}");
    library
}

/// The README's example plugin (`examples/c-plugin/plugin.c`) built into `dir`
/// as `libexample_plugin.so`, as README's `cc` line builds it.
pub fn example_plugin(dir: &Path) -> PathBuf {
    let plugin = dir.join("libexample_plugin.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&plugin)
        .arg("-I")
        .arg(repo_root().join("include"))
        .arg(repo_root().join("examples/c-plugin/plugin.c"))
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for the example plugin");
    plugin
}

/// What a `herald run` printed, and how it ended.
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `herald run -n nodes -- herald node ARGS...` with extra environment `env`
/// until it ends. Past `guard` it is sent SIGTERM (which `herald run` passes on to
/// every rank), then SIGKILL 10 s later, and the test fails with its output.
pub fn herald_run(
    nodes: u32,
    node_args: &[OsString],
    env: &[(&str, String)],
    guard: Duration,
) -> RunOutput {
    let mut command = Command::new(herald());
    command
        .args(["run", "-n", &nodes.to_string(), "--"])
        .arg(herald())
        .arg("node")
        .args(node_args)
        .env_remove("HERALD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn herald run");
    let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read_all(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read_all(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + guard;
    let mut signalled = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        let now = Instant::now();
        match signalled {
            None if now >= deadline => {
                // SAFETY: kill(2) on our own child, not reaped yet.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                signalled = Some(now);
            }
            Some(at) if now >= at + Duration::from_secs(10) => {
                let _ = child.kill();
            }
            _ => {}
        }
        // Polls for the exit: the guard is a failure bound, not synchronisation.
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = RunOutput {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        signalled.is_none(),
        "herald run -n {nodes} did not end within {guard:?}\n{}\n{}",
        output.stdout,
        output.stderr
    );
    output
}

/// `--flag value` pairs as OsStrings.
pub fn args<const N: usize>(pairs: [&dyn AsRef<std::ffi::OsStr>; N]) -> Vec<OsString> {
    pairs.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// One output line of one rank.
#[derive(Clone, Debug)]
pub struct Line {
    pub rank: u32,
    pub stderr: bool,
    pub text: String,
}

/// A running job of `herald node` processes.
pub struct Job {
    pub coordinator: SocketAddr,
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    lines: Receiver<Line>,
    exits: Receiver<u32>,
    statuses: Vec<Option<ExitStatus>>,
    seen: Vec<Line>,
}

/// What each rank runs: flags after `herald node`, and extra environment.
pub struct RankSetup {
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

impl Job {
    /// Starts `nodes` ranks of `herald node`, configured per rank.
    pub fn start(nodes: u32, setup: impl Fn(u32) -> RankSetup) -> Job {
        let coordinator = free_loopback_port().expect("free port");
        let secret = herald_tcp::Secret::random().to_hex();
        Job::start_with(nodes, coordinator, &secret, |_| Vec::new(), setup)
    }

    /// Starts `nodes` ranks that each run `program` with the arguments and extra
    /// environment `setup` gives, as one job (herald's bootstrap variables set).
    pub fn start_program(nodes: u32, program: &Path, setup: impl Fn(u32) -> RankSetup) -> Job {
        let coordinator = free_loopback_port().expect("free port");
        let secret = herald_tcp::Secret::random().to_hex();
        Job::spawn(nodes, coordinator, &secret, program, |_| Vec::new(), setup)
    }

    /// [`start_program`](Self::start_program) with the cluster secret `secret`
    /// (so that a test can start a process that joins the job).
    pub fn start_program_with_secret(
        nodes: u32,
        program: &Path,
        secret: &str,
        setup: impl Fn(u32) -> RankSetup,
    ) -> Job {
        let coordinator = free_loopback_port().expect("free port");
        Job::spawn(nodes, coordinator, secret, program, |_| Vec::new(), setup)
    }

    /// Starts `nodes` ranks of `herald node` with rank 0 listening on
    /// `coordinator` and the cluster secret `secret`; each rank's command is
    /// prefixed by `wrap(rank)` (e.g. `ip netns exec NAME`) when that is not empty.
    pub fn start_with(
        nodes: u32,
        coordinator: SocketAddr,
        secret: &str,
        wrap: impl Fn(u32) -> Vec<OsString>,
        setup: impl Fn(u32) -> RankSetup,
    ) -> Job {
        Job::spawn(nodes, coordinator, secret, &herald(), wrap, |rank| {
            let RankSetup { mut args, env } = setup(rank);
            if !args.iter().any(|a| a == "--establish-timeout") {
                args.extend(["--establish-timeout".into(), "20".into()]);
            }
            args.insert(0, "node".into());
            RankSetup { args, env }
        })
    }

    /// Starts the ranks: `wrap(rank)`, then `program`, then the rank's arguments.
    fn spawn(
        nodes: u32,
        coordinator: SocketAddr,
        secret: &str,
        program: &Path,
        wrap: impl Fn(u32) -> Vec<OsString>,
        setup: impl Fn(u32) -> RankSetup,
    ) -> Job {
        let (line_tx, lines) = crossbeam_channel::unbounded();
        let on_line = Arc::new(move |rank, stream, text: &str| {
            let _ = line_tx.send(Line {
                rank,
                stderr: stream == Stream::Stderr,
                text: text.to_owned(),
            });
        });
        let (exit_tx, exits) = crossbeam_channel::unbounded();
        let mut children = Vec::new();
        let mut stdins = Vec::new();
        for rank in 0..nodes {
            let RankSetup { args, env } = setup(rank);
            let prefix = wrap(rank);
            let mut command = match prefix.split_first() {
                Some((first, rest)) => {
                    let mut command = Command::new(first);
                    command.args(rest).arg(program);
                    command
                }
                None => Command::new(program),
            };
            command.args(args);
            set_bootstrap_env(&mut command, rank, nodes, coordinator, secret)
                .env_remove("HERALD_LIBRARY_PATH")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (name, value) in env {
                command.env(name, value);
            }
            let mut child = command.spawn().expect("spawn a rank");
            forward_output(rank, &mut child, &on_line);
            stdins.push(child.stdin.take());
            notify_exit(&child, rank, exit_tx.clone(), |_| {});
            children.push(child);
        }
        Job {
            coordinator,
            statuses: vec![None; nodes as usize],
            children,
            stdins,
            lines,
            exits,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `wanted` (from any rank), or panics after the guard.
    pub fn expect_line(&mut self, wanted: impl Fn(&Line) -> bool) -> Line {
        if let Some(line) = self.seen.iter().find(|l| wanted(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    self.kill_all();
                    panic!(
                        "expected line never came; output so far:\n{}",
                        self.transcript()
                    );
                }
            }
        }
    }

    /// Whether a line matching `wanted` (from any rank) arrives within `within`:
    /// for checking that something does not happen (a rank that would wrongly
    /// go ahead does so at once; the window only bounds the test's patience).
    pub fn line_within(&mut self, wanted: impl Fn(&Line) -> bool, within: Duration) -> bool {
        if self.seen.iter().any(&wanted) {
            return true;
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let matched = wanted(&line);
                    self.seen.push(line);
                    if matched {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Writes `text` to a rank's standard input.
    pub fn write_stdin(&mut self, rank: u32, text: &str) {
        let stdin = self.stdins[rank as usize].as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Kills one rank (SIGKILL).
    pub fn kill(&mut self, rank: u32) {
        let _ = self.children[rank as usize].kill();
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to one rank.
    pub fn signal(&mut self, rank: u32, signal: i32) {
        let pid = self.children[rank as usize].id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child, which is not reaped yet (its
        // exit is only noticed with WNOWAIT), so the pid is still its.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits for the given ranks to exit; kills every rank and panics if they do
    /// not within the guard.
    pub fn wait_ranks(&mut self, ranks: &[u32]) {
        let deadline = Instant::now() + GUARD;
        while ranks.iter().any(|&r| self.statuses[r as usize].is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.exits.recv_timeout(left) {
                Ok(rank) => {
                    let status = self.children[rank as usize].wait().expect("reap");
                    self.statuses[rank as usize] = Some(status);
                }
                Err(_) => {
                    self.kill_all();
                    panic!(
                        "ranks {ranks:?} did not exit; output so far:\n{}",
                        self.transcript()
                    );
                }
            }
        }
    }

    /// Waits for every rank to exit and returns their statuses; kills them all and
    /// panics if they do not exit within the guard.
    pub fn wait(&mut self) -> Vec<ExitStatus> {
        let deadline = Instant::now() + GUARD;
        while self.statuses.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.exits.recv_timeout(left) {
                Ok(rank) => {
                    let status = self.children[rank as usize].wait().expect("reap");
                    self.statuses[rank as usize] = Some(status);
                }
                Err(_) => {
                    self.kill_all();
                    panic!("ranks did not exit; output so far:\n{}", self.transcript());
                }
            }
        }
        // Output ends at exit: collect the rest.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.statuses.iter().map(|s| s.expect("reaped")).collect()
    }

    /// Every line so far, prefixed by rank.
    pub fn transcript(&self) -> String {
        self.seen
            .iter()
            .map(|l| {
                format!(
                    "[{}{}] {}\n",
                    l.rank,
                    if l.stderr { " err" } else { "" },
                    l.text
                )
            })
            .collect()
    }

    /// Lines (so far) for which `wanted` holds.
    pub fn count_lines(&self, wanted: impl Fn(&Line) -> bool) -> usize {
        self.seen.iter().filter(|l| wanted(l)).count()
    }

    /// Lines of standard output containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.seen.iter().filter(|l| l.text.contains(needle)).count()
    }

    fn kill_all(&mut self) {
        for (rank, child) in self.children.iter_mut().enumerate() {
            if self.statuses[rank].is_none() {
                // A stopped rank dies of SIGKILL too; continue it anyway so
                // nothing lingers stopped.
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
                let _ = child.kill();
                let _ = child.wait();
                self.statuses[rank] = Some(ExitStatus::default());
            }
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.kill_all();
    }
}
