//! Shared by the benchmarks: starting a job of this same executable on loopback,
//! compiling a C library, reading the resident set size.
#![allow(dead_code)]

pub mod mpi;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_host::{HostConfig, Runtime};
use herald_tcp::{Mesh, MeshConfig, MeshEvent, Secret};

/// Set in the children: their rank. Absent in the parent.
pub const RANK_ENV: &str = "HERALD_BENCH_RANK";

/// Set in the children: where rank 0 of the raw-frame mesh listens.
const RAW_COORDINATOR_ENV: &str = "HERALD_BENCH_RAW_COORDINATOR";

/// This process's rank if it is a child of the benchmark.
pub fn child_rank() -> Option<u32> {
    std::env::var(RANK_ENV).ok().and_then(|v| v.parse().ok())
}

/// Starts `nodes` copies of this executable as one job, with `env`, and returns
/// every line they print (prefixed "rank: "), after all have exited successfully.
pub fn run_job(nodes: u32, env: &[(&str, String)]) -> Vec<String> {
    let exe = std::env::current_exe().expect("current exe");
    let port = free_port();
    // A second job-wide port for a mesh of its own that a benchmark may form for
    // raw frames (`join_raw_mesh`), so those never mix with the runtime's.
    let raw_port = free_port();
    let secret = Secret::random().to_hex();
    let mut children = Vec::new();
    for rank in 0..nodes {
        let mut command = Command::new(&exe);
        command
            .env(RANK_ENV, rank.to_string())
            .env("HERALD_BENCH_SIZE", nodes.to_string())
            .env("HERALD_COORDINATOR", port.to_string())
            .env(RAW_COORDINATOR_ENV, raw_port.to_string())
            .env("HERALD_SECRET", &secret)
            .stdout(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        children.push(command.spawn().expect("spawn a rank"));
    }
    let mut lines = Vec::new();
    for (rank, child) in children.iter_mut().enumerate() {
        let stdout = child.stdout.take().expect("stdout");
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            lines.push(format!("{rank}: {line}"));
        }
    }
    for (rank, mut child) in children.into_iter().enumerate() {
        let status = child.wait().expect("wait");
        assert!(
            status.success(),
            "rank {rank} failed: {status}\n{}",
            lines.join("\n")
        );
    }
    lines
}

/// Joins the job this child belongs to: the mesh its runtime uses.
pub fn join_mesh() -> (Mesh, crossbeam_channel::Receiver<MeshEvent>) {
    establish("HERALD_COORDINATOR", "herald")
}

/// Joins a second mesh of the same ranks, for raw frames (round-trip
/// measurements): nothing sent on it can reach a runtime, and nothing a runtime
/// sends can reach it.
pub fn join_raw_mesh() -> (Mesh, crossbeam_channel::Receiver<MeshEvent>) {
    establish(RAW_COORDINATOR_ENV, "herald-bench-raw")
}

fn establish(
    coordinator_env: &str,
    cluster_id: &str,
) -> (Mesh, crossbeam_channel::Receiver<MeshEvent>) {
    let var = |name: &str| std::env::var(name).expect(name);
    let rank = var(RANK_ENV).parse().expect("rank");
    let size = var("HERALD_BENCH_SIZE").parse().expect("size");
    let coordinator = var(coordinator_env).parse().expect("coordinator");
    let secret = Secret::from_hex(&var("HERALD_SECRET")).expect("secret");
    let mut config = MeshConfig::new(rank, size, coordinator, secret);
    config.cluster_id = cluster_id.to_owned();
    config.establish_timeout = Duration::from_secs(60);
    HostConfig::default().agree_on(&mut config);
    Mesh::establish(config).expect("mesh")
}

fn free_port() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Starts the runtime, allowing libraries from `dir`.
pub fn start_runtime(
    mesh: Mesh,
    events: crossbeam_channel::Receiver<MeshEvent>,
    dir: &Path,
) -> Runtime {
    let config = HostConfig {
        library_dirs: vec![dir.to_path_buf()],
        ..HostConfig::default()
    };
    Runtime::start(mesh, events, config).expect("runtime")
}

/// Compiles C source into `dir/lib{name}.so`.
pub fn compile(dir: &Path, name: &str, source: &str) -> PathBuf {
    let source_path = dir.join(format!("{name}.c"));
    std::fs::write(&source_path, source).expect("write source");
    let library = dir.join(format!("lib{name}.so"));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&library)
        .arg(&source_path)
        .status()
        .expect("cc");
    assert!(status.success(), "cc failed");
    library
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// The median of some durations, in microseconds.
pub fn median_us(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e6
}
