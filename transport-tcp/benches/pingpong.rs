//! Loopback ping-pong of a 64-byte frame: two Meshes against raw std TcpStreams and
//! against Open MPI's `MPI_Send`/`MPI_Recv` between two processes over TCP
//! (host/benches/common/mpi_reference.c, built with `mpicc`), all measured in the
//! same run so the ratios are meaningful on any machine.
//!
//! Run: `cargo bench -p herald-tcp --bench pingpong` (set HERALD_BENCH_ROUNDS to
//! change the number of measured round trips; default 20000). Without
//! `mpicc`/`mpirun` the MPI reference is skipped, saying why.

#[path = "../../host/benches/common/mpi.rs"]
mod mpi;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use herald_tcp::{Mesh, MeshConfig, MeshEvent, Secret};

const FRAME_BYTES: usize = 64;
const WARMUP: usize = 2_000;

fn main() {
    let rounds = std::env::var("HERALD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let raw = raw_rtts(rounds);
    let mesh = mesh_rtts(rounds);
    println!("loopback ping-pong, {FRAME_BYTES}-byte frame, {rounds} round trips each");
    report("raw TcpStream", &raw);
    report("herald-tcp Mesh", &mesh);
    println!(
        "ratio (Mesh / raw): median {:.2}x, mean {:.2}x",
        median(&mesh).as_secs_f64() / median(&raw).as_secs_f64(),
        mean(&mesh).as_secs_f64() / mean(&raw).as_secs_f64()
    );
    match mpi_rtt(rounds) {
        Ok(mpi) => {
            println!(
                "{:>16}: median {:>7.1} us  p90 {:>7.1} us  (two processes, btl tcp,self)",
                "Open MPI", mpi.median_us, mpi.p90_us
            );
            println!(
                "ratio (Mesh / MPI): median {:.2}x; (raw / MPI): median {:.2}x",
                us(median(&mesh)) / mpi.median_us,
                us(median(&raw)) / mpi.median_us
            );
        }
        Err(reason) => println!("Open MPI reference skipped: {reason}"),
    }
}

/// Open MPI's round trip of the same message size between two processes.
fn mpi_rtt(rounds: usize) -> Result<mpi::Latency, String> {
    let dir = std::env::temp_dir().join(format!("herald-pingpong-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let result = mpi::MpiReference::build(&dir)
        .and_then(|reference| reference.pingpong(FRAME_BYTES, rounds, WARMUP));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Round trips through two meshes: each hop crosses a writer thread, the socket,
/// a reader thread and the event channel.
fn mesh_rtts(rounds: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let coordinator = listener.local_addr().expect("addr");
    let secret = Secret::random();
    let echo = thread::spawn({
        let config = MeshConfig::new(1, 2, coordinator, secret.clone());
        move || {
            let (mesh, events) = Mesh::establish(config).expect("rank 1");
            for _ in 0..WARMUP + rounds {
                match events.recv() {
                    Ok(MeshEvent::Frame { bytes, .. }) => mesh.send(0, bytes),
                    other => panic!("echo: {other:?}"),
                }
            }
            mesh.shutdown();
        }
    });
    let config = MeshConfig::new(0, 2, coordinator, secret);
    let (mesh, events) = Mesh::establish_with_listener(config, listener).expect("rank 0");
    let rtts = measure(rounds, || {
        mesh.send(1, vec![0xab; FRAME_BYTES]);
        match events.recv() {
            Ok(MeshEvent::Frame { bytes, .. }) => assert_eq!(bytes.len(), FRAME_BYTES),
            other => panic!("ping: {other:?}"),
        }
    });
    echo.join().expect("echo thread");
    mesh.shutdown();
    rtts
}

/// The same exchange on bare sockets: length prefix and payload in one write.
fn raw_rtts(rounds: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; 4 + FRAME_BYTES];
        for _ in 0..WARMUP + rounds {
            stream.read_exact(&mut buf).expect("echo read");
            stream.write_all(&buf).expect("echo write");
        }
    });
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut ping = [0xabu8; 4 + FRAME_BYTES];
    ping[..4].copy_from_slice(&(FRAME_BYTES as u32).to_le_bytes());
    let mut pong = [0u8; 4 + FRAME_BYTES];
    let rtts = measure(rounds, || {
        stream.write_all(&ping).expect("ping write");
        stream.read_exact(&mut pong).expect("ping read");
    });
    echo.join().expect("echo thread");
    rtts
}

fn measure(rounds: usize, mut round_trip: impl FnMut()) -> Vec<Duration> {
    for _ in 0..WARMUP {
        round_trip();
    }
    let mut rtts: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            round_trip();
            start.elapsed()
        })
        .collect();
    rtts.sort();
    rtts
}

fn report(name: &str, sorted: &[Duration]) {
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
    println!(
        "{name:>16}: median {:>7.1} us  mean {:>7.1} us  p99 {:>7.1} us",
        us(median(sorted)),
        us(mean(sorted)),
        us(pct(0.99))
    );
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn mean(sorted: &[Duration]) -> Duration {
    sorted.iter().sum::<Duration>() / sorted.len() as u32
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
