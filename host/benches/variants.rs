//! 100,000 lazily registered task variants issued from one node.
//!
//! `CARGO_TARGET_DIR=/work/target-host cargo bench -p herald-host --bench variants`
//! (optionally `-- NODES VARIANTS`, default 4 and 100000). Rank 0 registers the
//! variants one call at a time (names `bench.task.<i>`, symbols spread over a
//! generated library of 1,000 functions) and waits until every node has them.
//! Reported: wall time, messages and bytes sent by all nodes, resident memory
//! per variant on each node, and the first (lazy: dlopen + dlsym) and later runs
//! of a variant on a remote node.

mod common;

use std::sync::Arc;
use std::time::Instant;

use herald_host::{TaskCode, TaskVariant};

const SYMBOLS: usize = 1000;

fn main() {
    if let Some(rank) = common::child_rank() {
        return child(rank);
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let nodes = args.first().copied().unwrap_or(4) as u32;
    let variants = args.get(1).copied().unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut source = String::from(
        "#define T(i) int f##i(const void *a, unsigned long n, void *o) { (void)a; (void)n; (void)o; return 0; }\n",
    );
    for i in 0..SYMBOLS {
        source.push_str(&format!("T({i})\n"));
    }
    let library = common::compile(dir.path(), "variants", &source);
    let env = [
        ("BENCH_LIBRARY", library.display().to_string()),
        ("BENCH_VARIANTS", variants.to_string()),
    ];
    let lines = common::run_job(nodes, &env);
    let (mut messages, mut bytes) = (0u64, 0u64);
    for line in &lines {
        if let Some(rest) = line.split_once(": stats ").map(|(_, r)| r) {
            let fields: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            messages += fields.first().copied().unwrap_or(0);
            bytes += fields.get(1).copied().unwrap_or(0);
        }
    }
    println!("{variants} lazily registered task variants, {nodes} nodes on loopback");
    for line in &lines {
        if let Some((rank, rest)) = line.split_once(": report ") {
            println!("  node {rank}: {rest}");
        }
    }
    println!("  all nodes: {messages} protocol messages, {bytes} bytes sent in total");
}

fn child(rank: u32) {
    let (mesh, events) = common::join_mesh();
    let library = std::path::PathBuf::from(std::env::var("BENCH_LIBRARY").expect("library"));
    let count: usize = std::env::var("BENCH_VARIANTS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100_000);
    let dir = library.parent().expect("dir").to_path_buf();
    let runtime = common::start_runtime(mesh, events, &dir);
    let rss_before = common::rss_bytes();
    if rank == 0 {
        let started = Instant::now();
        let reference = runtime.library_ref(&library).expect("library");
        let mut handles = Vec::new();
        for i in 0..count {
            let variant = TaskVariant {
                name: format!("bench.task.{i}"),
                code: TaskCode::Native {
                    library: Arc::clone(&reference),
                    symbol: format!("f{}", i % SYMBOLS),
                },
            };
            let handle = runtime.register_task(variant).expect("register");
            if handles
                .last()
                .is_none_or(|h: &herald_host::RegistrationHandle| h.id() != handle.id())
            {
                handles.push(handle);
            }
        }
        let issued = started.elapsed();
        for handle in &handles {
            let _ = handle.wait().expect("registered everywhere");
        }
        let wall = started.elapsed();
        let node = runtime.num_nodes() - 1;
        let name = format!("bench.task.{}", count - 1);
        let first = Instant::now();
        runtime
            .launch(node, name.clone(), vec![])
            .wait()
            .expect("first run");
        let first = first.elapsed();
        let again = Instant::now();
        runtime
            .launch(node, name, vec![])
            .wait()
            .expect("second run");
        let again = again.elapsed();
        println!(
            "report issued in {:.0} ms, registered on every node after {:.0} ms, in {} batches; \
             first run on node {node} (dlopen + dlsym) {:.2} ms, next {:.2} ms",
            issued.as_secs_f64() * 1e3,
            wall.as_secs_f64() * 1e3,
            handles.len(),
            first.as_secs_f64() * 1e3,
            again.as_secs_f64() * 1e3
        );
        drop(handles);
        report_memory(&runtime, rss_before, count);
        runtime.end_job().expect("end");
    } else {
        let _ = runtime.wait_for_job_end(None);
        report_memory(&runtime, rss_before, count);
    }
    let stats = runtime.stats();
    println!("stats {} {}", stats.messages_sent, stats.bytes_sent);
    runtime.shutdown();
}

fn report_memory(runtime: &herald_host::Runtime, before: u64, count: usize) {
    let grown = common::rss_bytes().saturating_sub(before);
    println!(
        "report {} tasks registered here; resident memory grew {:.1} MiB = {:.0} bytes per variant",
        runtime.registered_tasks(),
        grown as f64 / (1 << 20) as f64,
        grown as f64 / count as f64
    );
}
