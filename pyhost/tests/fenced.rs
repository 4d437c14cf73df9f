//! herald-python ranks started by hand (as `herald run` starts them): a rank the
//! job declares down must exit with the status `herald run` recognises as
//! "fenced" (88, like `herald node`), so that the launcher lets the rest of the
//! job go on instead of stopping it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The status `herald node` exits with when the job declared it down, and the
/// only one `herald run` does not treat as a failure of the job.
const FENCED_EXIT: i32 = 88;

/// Longest the test waits for any one step before failing.
const GUARD: Duration = Duration::from_secs(60);

fn start_rank(rank: u32, size: u32, coordinator: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herald-python"))
        .args([
            "-c",
            "import sys\nprint('ready', flush=True)\nsys.stdin.readline()",
        ])
        .env("HERALD_RANK", rank.to_string())
        .env("HERALD_SIZE", size.to_string())
        .env("HERALD_COORDINATOR", coordinator)
        .env("HERALD_SECRET", "5".repeat(64))
        .env("HERALD_HEARTBEAT_MS", "100")
        .env("HERALD_PEER_TIMEOUT_MS", "1000")
        .env_remove("HERALD_SECRET_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("herald-python starts")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {name} failed");
}

/// Sends each line of `child`'s stdout and stderr to `lines`, tagged with `rank`.
fn forward(child: &mut Child, rank: u32, lines: &mpsc::Sender<(u32, String)>) {
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    for pipe in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr) as _,
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = lines.send((rank, line));
            }
        });
    }
}

fn expect_line(
    lines: &mpsc::Receiver<(u32, String)>,
    transcript: &mut String,
    wanted: impl Fn(u32, &str) -> bool,
) {
    loop {
        let (rank, line) = lines
            .recv_timeout(GUARD)
            .unwrap_or_else(|_| panic!("no awaited line within {GUARD:?}:\n{transcript}"));
        transcript.push_str(&format!("[{rank}] {line}\n"));
        if wanted(rank, &line) {
            return;
        }
    }
}

#[test]
fn a_rank_declared_down_exits_with_the_fenced_status() {
    let coordinator = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("its address").to_string()
    };
    let (send, lines) = mpsc::channel();
    let mut ranks: Vec<Child> = (0..3)
        .map(|rank| start_rank(rank, 3, &coordinator))
        .collect();
    for (rank, child) in ranks.iter_mut().enumerate() {
        forward(child, rank as u32, &send);
    }
    let mut transcript = String::new();
    expect_line(&lines, &mut transcript, |rank, line| {
        rank == 0 && line == "ready"
    });
    // Rank 2 stops answering: rank 0 declares it down after the peer timeout.
    signal(&ranks[2], "-STOP");
    expect_line(&lines, &mut transcript, |rank, line| {
        rank == 0 && line.contains("node 2 is down in the job's view")
    });
    signal(&ranks[2], "-CONT");
    let status = ranks[2].wait().expect("rank 2 ends");
    // The rest of the job goes on; rank 0's program ends it.
    if let Some(stdin) = ranks[0].stdin.as_mut() {
        let _ = stdin.write_all(b"\n");
    }
    let rest: Vec<_> = ranks[..2]
        .iter_mut()
        .map(|child| child.wait().expect("rank ends"))
        .collect();
    drop(send);
    while let Ok((rank, line)) = lines.recv_timeout(Duration::from_secs(1)) {
        transcript.push_str(&format!("[{rank}] {line}\n"));
    }
    assert!(rest.iter().all(|s| s.success()), "{rest:?}\n{transcript}");
    assert_eq!(
        status.code(),
        Some(FENCED_EXIT),
        "a fenced herald-python rank must exit like a fenced `herald node` (88), \
         or `herald run` stops the whole job:\n{transcript}"
    );
}
