//! MPI's own 64-byte broadcast + reduce against herald's global registration of
//! a no-op callback over the MPI transport, in one `mpirun`. Run by
//! `scripts/bench-mpi.sh`, e.g.:
//!
//! ```sh
//! cargo build --release -p herald-host --features mpi --example mpi_bench
//! mpirun -np 4 --mca pml ob1 --mca btl vader,self target/release/examples/mpi_bench shm
//! ```
//!
//! The program initialises MPI itself (`MPI_THREAD_MULTIPLE`), as an
//! application would, and herald joins it on a duplicate of the world. Each
//! figure is the median over many rounds, timed on rank 0 from the start of a
//! round to its end there; every round starts after a barrier (MPI) or right
//! after the previous one (herald, where the other ranks only serve). Rank 0
//! prints one line: `mpi-bench label=L n=N mpi_us=.. herald_us=.. ratio=..
//! transport_rtt_us=.. in_process_us=..`: the last two say where herald's time
//! goes (a 64-byte round trip between two main threads through herald-mpi, and
//! the same registration among N runtimes of one process, without MPI).

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_host::{CodeRef, Executor, HostConfig, MpiLinks, Runtime};
use herald_mpi::{MpiConfig, MpiTransport, mpi};
use herald_tcp::MeshEvent;
use mpi::Threading;
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::topology::Communicator;

const MPI_ROUNDS: usize = 2000;
const HERALD_ROUNDS: usize = 500;
const WARM_UP: usize = 100;

struct Noop;
impl Executor for Noop {
    fn invoke(&self, _payload: &[u8], _args: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let label = std::env::args().nth(1).unwrap_or_else(|| "default".into());
    let Some((universe, level)) = mpi::initialize_with_threading(Threading::Multiple) else {
        return Err("MPI was already initialised".into());
    };
    if level != Threading::Multiple {
        return Err(format!("MPI provides {level:?}, herald needs Multiple").into());
    }
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());

    // MPI's own figure: broadcast 64 bytes from rank 0, reduce 64 bytes to it.
    let mut times = Vec::with_capacity(MPI_ROUNDS);
    let root = world.process_at_rank(0);
    for round in 0..WARM_UP + MPI_ROUNDS {
        let mut data = [round as u8; 64];
        let mut sum = [0u8; 64];
        world.barrier();
        let start = Instant::now();
        root.broadcast_into(&mut data[..]);
        if rank == 0 {
            root.reduce_into_root(&data[..], &mut sum[..], SystemOperation::bitwise_or());
        } else {
            root.reduce_into(&data[..], SystemOperation::bitwise_or());
        }
        if round >= WARM_UP {
            times.push(start.elapsed());
        }
    }
    let mpi_time = median(&mut times);

    // Where herald's time goes, part 1: a 64-byte round trip between rank 0's
    // and rank 1's main threads through herald-mpi alone (each way: a thread
    // hand-off to the progress thread, MPI, a hand-off to the main thread).
    let rtt = transport_round_trip(rank)?;
    // Part 2: the same registration in one process, N runtimes connected by
    // channels (no MPI; the host's threads only), on rank 0 while the others
    // wait in a barrier.
    let local = if rank == 0 {
        local_registration(size as u32)?
    } else {
        Duration::ZERO
    };
    world.barrier();

    // herald's figure: a global registration of a no-op callback, on herald's
    // own duplicate of the world.
    let config = HostConfig::default();
    let links = MpiLinks::join(&config)?;
    let runtime = links.start(config, |runtime| {
        runtime.register_executor("noop", Arc::new(Noop));
    })?;
    let code = CodeRef::Custom {
        kind: "noop".into(),
        payload: Vec::new(),
    };
    let mut times = Vec::with_capacity(HERALD_ROUNDS);
    if rank == 0 {
        for round in 0..WARM_UP + HERALD_ROUNDS {
            let args = (round as u64).to_le_bytes().to_vec();
            let start = Instant::now();
            let result = runtime.register_global(code.clone(), args, None).wait()?;
            if !result.is_ok() {
                return Err(format!("registration failed: {result:?}").into());
            }
            if round >= WARM_UP {
                times.push(start.elapsed());
            }
        }
        runtime.end_job()?;
    } else {
        runtime.wait_for_job_end(None)?;
    }
    runtime.shutdown();
    if rank == 0 {
        let herald_time = median(&mut times);
        println!(
            "mpi-bench label={label} n={size} mpi_us={:.1} herald_us={:.1} ratio={:.1} \
             transport_rtt_us={:.1} in_process_us={:.1}",
            micros(mpi_time),
            micros(herald_time),
            herald_time.as_secs_f64() / mpi_time.as_secs_f64(),
            micros(rtt),
            micros(local),
        );
    }
    Ok(())
}

/// Median 64-byte round trip rank 0 -> rank 1 -> rank 0 over herald-mpi.
fn transport_round_trip(rank: i32) -> Result<Duration, Box<dyn std::error::Error>> {
    let (transport, events) = MpiTransport::start(MpiConfig::default())?;
    transport.opener().open();
    let mut times = Vec::with_capacity(MPI_ROUNDS);
    let frame = vec![7u8; 64];
    for round in 0..WARM_UP + MPI_ROUNDS {
        if rank == 0 {
            let start = Instant::now();
            transport.send(1, frame.clone());
            expect_frame(&events)?;
            if round >= WARM_UP {
                times.push(start.elapsed());
            }
        } else if rank == 1 {
            expect_frame(&events)?;
            transport.send(0, frame.clone());
        }
    }
    transport.shutdown();
    Ok(if times.is_empty() {
        Duration::ZERO
    } else {
        median(&mut times)
    })
}

fn expect_frame(
    events: &crossbeam_channel::Receiver<MeshEvent>,
) -> Result<(), Box<dyn std::error::Error>> {
    // Ranks other than 0 and 1 take no part and close their links early.
    loop {
        match events.recv()? {
            MeshEvent::Frame { .. } => return Ok(()),
            MeshEvent::PeerDown { node, .. } if node > 1 => {}
            other => return Err(format!("expected a frame, got {other:?}").into()),
        }
    }
}

/// Median no-op registration on `nodes` runtimes of one process.
fn local_registration(nodes: u32) -> Result<Duration, Box<dyn std::error::Error>> {
    let runtimes = Runtime::local_cluster(nodes, HostConfig::default())?;
    for runtime in &runtimes {
        runtime.register_executor("noop", Arc::new(Noop));
    }
    let code = CodeRef::Custom {
        kind: "noop".into(),
        payload: Vec::new(),
    };
    let mut times = Vec::with_capacity(HERALD_ROUNDS);
    for round in 0..WARM_UP + HERALD_ROUNDS {
        let args = (round as u64).to_le_bytes().to_vec();
        let start = Instant::now();
        let result = runtimes[0]
            .register_global(code.clone(), args, None)
            .wait()?;
        if !result.is_ok() {
            return Err(format!("registration failed: {result:?}").into());
        }
        if round >= WARM_UP {
            times.push(start.elapsed());
        }
    }
    runtimes.iter().for_each(Runtime::shutdown);
    Ok(median(&mut times))
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
