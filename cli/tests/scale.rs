//! The transport at scale and under junk (herald issue 9): a real job of 256
//! processes, and 1,000 unauthenticated connections (idle, garbage, or just
//! herald's magic bytes) opened at rank 0's port before and during formation and
//! during the job. Each rank runs `global_main` of cli/tests/c/global.c: one
//! global registration of a no-op callback.

mod common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Job, RankSetup, args, build_c};

/// `herald run -n 256` of a plugin that registers globally: the job forms, the
/// registration runs once on every rank and completes, and every rank exits 0.
/// About 3.5 s here (debug build, 2 cores).
#[test]
fn scale_256() {
    const NODES: u32 = 256;
    let dir = tempfile::tempdir().expect("tempdir");
    let global = build_c(dir.path(), "global", "global", "");
    let main = format!("{}:global_main", global.display());
    let node_args = args([
        &"--load",
        &global,
        &"--main",
        &main,
        &"--library-path",
        &dir.path(),
        &"--establish-timeout",
        &"120",
    ]);
    let started = Instant::now();
    let run = common::herald_run(NODES, &node_args, &[], Duration::from_secs(180));
    let took = started.elapsed();
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert!(run.status.success(), "herald run: {}\n{all}", run.status);
    assert!(
        run.stdout
            .contains(&format!("[0] registration: ok on {NODES} nodes")),
        "{all}"
    );
    for rank in 0..NODES {
        let line = format!("[{rank}] node {rank}: ran\n");
        assert_eq!(run.stdout.matches(&line).count(), 1, "rank {rank}\n{all}");
    }
    println!("herald run -n {NODES}: formed, registered and ended in {took:?}");
}

/// Junk connections at rank 0's port: 400 while rank 0 is the only rank started
/// (before formation), 300 while the others join (during formation) and 300 once
/// the job has formed (during the job), each idle, sending garbage, sending just
/// herald's magic bytes, or the magic bytes and a cut hello; all are held open
/// until the job ends. The job forms and the registration completes on every
/// rank; rank 0 closes the connections opened before formation within a short
/// deadline while it runs, and its log sums them up ("refused N ..."); all
/// ranks' logs together hold at most a few lines, not one per connection.
/// Under a second here.
#[test]
fn junk_connections() {
    const NODES: u32 = 4;
    const BEFORE: usize = 400;
    const DURING_FORMATION: usize = 300;
    const DURING_JOB: usize = 300;
    /// Longest rank 0 may keep an unauthenticated connection open (a bound on its
    /// "short deadline", generous for a loaded machine).
    const STRANGER_DEADLINE_BOUND: Duration = Duration::from_secs(30);
    /// Stderr lines allowed in all ranks' logs together: summaries, not a flood.
    const MOST_LOG_LINES: usize = 20;
    raise_open_files_limit();
    let dir = tempfile::tempdir().expect("tempdir");
    let global = build_c(dir.path(), "global", "global", "");
    let gate = dir.path().join("gate");
    // Ranks 1.. start only once their fifo is written to: until then rank 0 is
    // alone and the job cannot form.
    let fifos: Vec<_> = (1..NODES)
        .map(|rank| make_fifo(&dir.path().join(format!("start-{rank}"))))
        .collect();
    let coordinator = common::free_port();
    let secret = herald_tcp::Secret::random().to_hex();
    let main = format!("{}:global_main", global.display());
    let mut job = Job::start_with(
        NODES,
        coordinator,
        &secret,
        |rank| match rank {
            0 => Vec::new(),
            _ => {
                let fifo = fifos[rank as usize - 1].as_os_str().to_os_string();
                let script = OsString::from("read line < \"$0\" && exec \"$@\"");
                vec!["sh".into(), "-c".into(), script, fifo]
            }
        },
        |_| RankSetup {
            args: args([
                &"--load",
                &global,
                &"--main",
                &main,
                &"--library-path",
                &dir.path(),
            ]),
            env: vec![("HERALD_TEST_GATE".into(), gate.display().to_string())],
        },
    );
    wait_until_listening(coordinator);
    let mut junk = Junk::default();
    junk.open(coordinator, BEFORE);
    let during = std::thread::spawn(move || {
        let mut junk = Junk::default();
        junk.open(coordinator, DURING_FORMATION);
        junk
    });
    for fifo in &fifos {
        let mut writer = std::fs::OpenOptions::new()
            .write(true)
            .open(fifo)
            .expect("open a start fifo");
        writer.write_all(b"go\n").expect("start a rank");
    }
    let mut before = junk;
    let mut junk = during.join().expect("junk during formation");
    job.expect_line(|l| l.rank == 0 && l.text == "gate: waiting");
    junk.open(coordinator, DURING_JOB);
    // The job is formed and rank 0 alive: the connections opened before it
    // formed got a short deadline and were closed, none kept for good.
    before.expect_all_closed(STRANGER_DEADLINE_BOUND);
    junk.absorb(before);
    // Those refusals show in rank 0's log as a summary ("refused N more ..."),
    // not one line each.
    let summary = job.expect_line(|l| l.rank == 0 && l.stderr && refused_count(&l.text) >= 100);
    std::fs::write(&gate, b"").expect("open the gate");
    let statuses = job.wait();
    let transcript = job.transcript();
    println!("{}", junk.summary());
    let log: Vec<String> = job
        .transcript()
        .lines()
        .filter(|l| l.contains(" err] "))
        .map(str::to_owned)
        .collect();
    println!("the ranks' log ({} lines):\n{}", log.len(), log.join("\n"));
    println!("summary: {}", summary.text);
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert_eq!(
        job.count_lines(|l| l.rank == 0 && l.text == format!("registration: ok on {NODES} nodes")),
        1,
        "{transcript}"
    );
    let log_lines = job.count_lines(|l| l.stderr);
    assert!(
        log_lines <= MOST_LOG_LINES,
        "{log_lines} log lines for {} junk connections: a line per connection?\n{transcript}",
        junk.attempted
    );
    drop(junk);
}

/// Unauthenticated connections held open, and how their attempts went.
#[derive(Default)]
struct Junk {
    streams: Vec<TcpStream>,
    attempted: usize,
    /// Connects refused or timed out (the port need not stay open).
    failed: usize,
}

impl Junk {
    /// Opens `count` connections to `to`, cycling through idle, garbage, magic
    /// bytes only, and magic bytes with a cut hello, and keeps them open.
    fn open(&mut self, to: SocketAddr, count: usize) {
        for i in 0..count {
            self.attempted += 1;
            let Ok(mut stream) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
                self.failed += 1;
                continue;
            };
            // Write errors are fine: the listener may have closed it already.
            let _ = match (self.attempted + i) % 4 {
                0 => Ok(()),
                1 => stream.write_all(&garbage(self.attempted)),
                2 => stream.write_all(&herald_tcp::WIRE_MAGIC),
                _ => {
                    let mut hello = herald_tcp::WIRE_MAGIC.to_vec();
                    hello.extend_from_slice(&herald_tcp::WIRE_VERSION.to_le_bytes());
                    hello.extend_from_slice(&[0xff; 5]);
                    stream.write_all(&hello)
                }
            };
            self.streams.push(stream);
        }
    }

    /// Waits until the other end has closed every connection (end of stream or
    /// reset), reading and dropping whatever it sends; panics if one is still open
    /// after `within`.
    fn expect_all_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        for (i, stream) in self.streams.iter_mut().enumerate() {
            let mut buf = [0u8; 512];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                stream
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .expect("read timeout");
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                    Err(e) => panic!(
                        "junk connection {i} of {} still open {within:?} after the first \
                         was opened ({e}): unauthenticated connections get no deadline?",
                        self.streams.len()
                    ),
                }
            }
        }
    }

    fn absorb(&mut self, other: Junk) {
        self.streams.extend(other.streams);
        self.attempted += other.attempted;
        self.failed += other.failed;
    }

    fn summary(&self) -> String {
        format!(
            "junk connections: {} attempted, {} connected, {} refused or timed out",
            self.attempted,
            self.streams.len(),
            self.failed
        )
    }
}

/// N in a log line saying "refused N ...", else 0.
fn refused_count(text: &str) -> u64 {
    text.split("refused ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Bytes no herald node sends first, different per connection.
fn garbage(seed: usize) -> Vec<u8> {
    let mut state = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..64)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Waits (a failure guard of a minute) until something accepts connections at
/// `to`: rank 0 has bound its listener.
fn wait_until_listening(to: SocketAddr) {
    let deadline = Instant::now() + common::GUARD;
    while TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_err() {
        assert!(Instant::now() < deadline, "rank 0 never listened on {to}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Raises this process's soft limit on open files to the hard one: the test
/// holds 1,000 sockets, and the ranks (which inherit it) accept as many.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 2_500,
        "the hard limit on open files ({}) is too low for 1,000 junk connections",
        limit.rlim_cur
    );
}

/// Makes a named pipe at `path`.
fn make_fifo(path: &Path) -> std::path::PathBuf {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a C path");
    // SAFETY: mkfifo reads the NUL-terminated path only.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
    path.to_path_buf()
}
