//! Global registration latency on loopback, next to the bare TCP round trip and to
//! Open MPI's 64-byte `MPI_Bcast` + `MPI_Reduce` over TCP, all measured in one run.
//!
//! `cargo bench -p herald-host --bench registration` (optionally followed by
//! `-- SIZES...`, default 2 4 8 16; `BENCH_COUNT` sets the count). For each job size
//! N it starts N processes of this executable; rank 0 first measures the TCP round
//! trip to every peer with raw frames on a mesh of their own (so no frame of the
//! runtime, which starts on a second mesh afterwards, can be taken for a ping),
//! then issues COUNT (default 200) global registrations of a no-op C callback one
//! after another (each with new argument bytes, so each is a new registration) and
//! reports the median and p90 time until each completed on every node. Then the
//! Open MPI reference (host/benches/common/mpi_reference.c, built with `mpicc`)
//! runs COUNT bcast+reduce rounds of 64 bytes at the same N (after warm-up), and
//! the table gives herald / MPI (the target: within 3x). Without
//! `mpicc`/`mpirun` the reference is skipped, saying why.

mod common;

use std::ffi::c_void;
use std::time::Instant;

use herald_core::{Key, NodeId, Tree};
use herald_tcp::MeshEvent;

const NOOP: &str =
    "int bench_noop(const void *a, unsigned long n) { (void)a; (void)n; return 0; }\n";
const PINGS: usize = 200;
/// The MPI reference's message size, as in the issue: 64 bytes.
const MPI_BYTES: usize = 64;
/// The target: herald's median within this factor of MPI's.
const TARGET_RATIO: f64 = 3.0;

fn main() {
    if let Some(rank) = common::child_rank() {
        return child(rank);
    }
    let mut sizes: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![2, 4, 8, 16];
    }
    let count: usize = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let library = common::compile(dir.path(), "noop", NOOP);
    let mpi = common::mpi::MpiReference::build(dir.path());
    if let Err(reason) = &mpi {
        println!("Open MPI reference skipped: {reason}");
    }
    println!(
        "global registration latency, loopback, fanout {}; Open MPI {MPI_BYTES}-byte \
         MPI_Bcast+MPI_Reduce over TCP (btl tcp,self) in the same run",
        herald_core::DEFAULT_FANOUT
    );
    println!(
        "{:>4} | {:>5} | {:>10} | {:>11} | {:>11} | {:>12} | {:>11} | {:>11} | {:>11} | {:>13} | {:>16}",
        "N",
        "depth",
        "TCP RTT us",
        "herald med",
        "herald p90",
        "med, coord 0",
        "med, other",
        "MPI med us",
        "MPI p90 us",
        "herald / MPI",
        "reg / (RTT*hops)"
    );
    for nodes in sizes {
        let env = [
            ("BENCH_LIBRARY", library.display().to_string()),
            ("BENCH_COUNT", count.to_string()),
        ];
        let lines = common::run_job(nodes, &env);
        let Some(result) = lines.iter().find_map(|l| l.strip_prefix("0: result ")) else {
            panic!("no result from rank 0:\n{}", lines.join("\n"));
        };
        let herald = HeraldResult::parse(result);
        let reference = mpi
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|mpi| mpi.bcast_reduce(nodes, MPI_BYTES, count.max(100), 100));
        let (mpi_median, mpi_p90, ratio) = match &reference {
            Ok(l) => (format!("{:.1}", l.median_us), format!("{:.1}", l.p90_us), {
                let ratio = herald.median_us / l.median_us;
                let mark = if ratio <= TARGET_RATIO { "ok" } else { "over" };
                format!("{ratio:.2}x {mark}")
            }),
            Err(_) => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:>4} | {:>5} | {:>10.1} | {:>11.1} | {:>11.1} | {:>12} | {:>11} | {:>11} | {:>11} | {:>13} | {:>16.2}",
            nodes,
            tree_depth(nodes),
            herald.rtt_us,
            herald.median_us,
            herald.p90_us,
            optional_us(herald.median_home_us),
            optional_us(herald.median_away_us),
            mpi_median,
            mpi_p90,
            ratio,
            herald.median_us / (herald.rtt_us * herald.hops)
        );
        if let (Err(reason), Ok(_)) = (&reference, &mpi) {
            println!("     Open MPI reference at N={nodes} failed: {reason}");
        }
    }
    println!(
        "herald med/p90: microseconds until a registration completed on every node; med, coord \
         0 / other: the median of the registrations whose key's coordinator is node 0 (the \
         requester) / another node; MPI: one bcast+reduce round timed on rank 0; target \
         herald / MPI <= 3x. hops: round trips averaged over coordinators: down and up the \
         tree (depth round trips), plus one to the key's coordinator and back when that is \
         another node, except when node 0 is a child of it with no children (its own run then \
         stands for its part: one round trip at N = 2 whoever coordinates)."
    );
}

/// Rank 0's figures, as its `result` line carries them.
struct HeraldResult {
    rtt_us: f64,
    median_us: f64,
    p90_us: f64,
    hops: f64,
    /// Medians of the registrations coordinated by node 0 and by another node
    /// (NaN when there were none).
    median_home_us: f64,
    median_away_us: f64,
}

impl HeraldResult {
    fn parse(line: &str) -> HeraldResult {
        let fields: Vec<f64> = line
            .split_whitespace()
            .map(|f| f.parse().expect("a number in rank 0's result"))
            .collect();
        let [
            rtt_us,
            median_us,
            p90_us,
            hops,
            median_home_us,
            median_away_us,
        ] = fields[..]
        else {
            panic!("malformed result from rank 0: {line}");
        };
        HeraldResult {
            rtt_us,
            median_us,
            p90_us,
            hops,
            median_home_us,
            median_away_us,
        }
    }
}

fn child(rank: u32) {
    let library = std::path::PathBuf::from(std::env::var("BENCH_LIBRARY").expect("library"));
    let count: usize = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let dir = library.parent().expect("dir").to_path_buf();
    // The round trips use a mesh of their own, kept open until the end: a frame
    // of the runtime can never reach the echo loop (nor a ping the runtime).
    let (raw, raw_events) = common::join_raw_mesh();
    let size = raw.size();
    if rank != 0 {
        // Echo rank 0's pings until it says the round-trip phase is over.
        loop {
            match raw_events.recv() {
                Ok(MeshEvent::Frame { from: 0, bytes }) if bytes == b"done" => break,
                Ok(MeshEvent::Frame { from, bytes }) => raw.send(from, bytes),
                Ok(MeshEvent::Joined { .. }) => {}
                Ok(MeshEvent::PeerDown { .. }) | Err(_) => std::process::exit(1),
            }
        }
        let (mesh, events) = common::join_mesh();
        let runtime = common::start_runtime(mesh, events, &dir);
        let _ = runtime.wait_for_job_end(None);
        runtime.shutdown();
        drop(raw);
        return;
    }

    let mut rtts = Vec::new();
    for peer in 1..size {
        for i in 0..PINGS + 20 {
            let started = Instant::now();
            raw.send(peer, vec![7; 64]);
            match raw_events.recv() {
                Ok(MeshEvent::Frame { .. }) => {}
                other => panic!("ping to {peer}: {other:?}"),
            }
            if i >= 20 {
                rtts.push(started.elapsed());
            }
        }
    }
    let rtt_us = common::median_us(&mut rtts);
    for peer in 1..size {
        raw.send(peer, b"done".to_vec());
    }
    let (mesh, events) = common::join_mesh();
    let runtime = common::start_runtime(mesh, events, &dir);
    runtime.load_library(&library).expect("load");
    let function = {
        // SAFETY: herald loaded the library already; only the symbol's address is taken.
        let lib = unsafe { libloading::Library::new(&library) }.expect("open");
        let symbol = unsafe { lib.get::<*const c_void>(b"bench_noop\0") }.expect("symbol");
        let address = *symbol;
        std::mem::forget(lib);
        address
    };
    let mut latencies = Vec::new();
    // By the key's coordinator: node 0 itself, or another node.
    let mut by_coordinator: [Vec<std::time::Duration>; 2] = [Vec::new(), Vec::new()];
    let mut hops = 0.0;
    for i in 0..count + 10 {
        let args = (i as u64).to_le_bytes().to_vec();
        let started = Instant::now();
        let handle = runtime
            .register_callback(function, args, None)
            .expect("register");
        let result = handle.wait().expect("registration");
        if i >= 10 {
            let elapsed = started.elapsed();
            latencies.push(elapsed);
            by_coordinator[usize::from(result.key.home(size) != NodeId(0))].push(elapsed);
            hops += expected_hops(result.key, size);
        }
    }
    let hops = hops / count as f64;
    let mut sorted = latencies.clone();
    let median = common::median_us(&mut latencies);
    sorted.sort();
    let p90 = sorted[sorted.len() * 9 / 10].as_secs_f64() * 1e6;
    let [home, away] = by_coordinator.map(|mut l| {
        if l.is_empty() {
            f64::NAN
        } else {
            common::median_us(&mut l)
        }
    });
    println!("result {rtt_us} {median} {p90} {hops} {home} {away}");
    runtime.end_job().expect("end");
    runtime.shutdown();
    drop(raw);
}

/// Round trips a registration from node 0 needs: one per tree level, plus one to
/// the coordinator and back if it is another node of which node 0 is not a
/// childless child (its own run then stands for its part).
fn expected_hops(key: Key, nodes: u32) -> f64 {
    let coordinator = key.home(nodes);
    let tree = Tree::new(nodes, herald_core::DEFAULT_FANOUT, coordinator);
    let stands_for_its_part = tree.is_childless_child_of_root(NodeId(0));
    let extra = if coordinator == NodeId(0) || stands_for_its_part {
        0.0
    } else {
        1.0
    };
    f64::from(tree_depth(nodes)) + extra
}

fn tree_depth(nodes: u32) -> u32 {
    let tree = Tree::new(nodes, herald_core::DEFAULT_FANOUT, NodeId(0));
    (0..nodes).map(|n| tree.depth(NodeId(n))).max().unwrap_or(0)
}

/// A figure in microseconds, or "-" if there is none.
fn optional_us(us: f64) -> String {
    if us.is_nan() {
        "-".into()
    } else {
        format!("{us:.1}")
    }
}
