//! Checks, under `mpirun -np 2`, that frames sent to one peer by several threads
//! arrive in the order the sends were made, large ones (past MPI's eager limit,
//! so their sends complete only once the receiver takes them) among small ones,
//! and that the closing message comes after all of them. Exits 1 naming
//! the first violation. Run by scripts/mpi.sh:
//!
//!     mpirun -np 2 target/debug/examples/mpi_order
//!
//! Rank 0's shutdown waits for rank 1 to close its side, which it does once it
//! has every frame and rank 0's close.

fn main() -> std::process::ExitCode {
    match order::run() {
        Ok(summary) => {
            println!("mpi-order: {summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mpi-order: FAILED: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

mod order {
    use std::time::Duration;

    use herald_mpi::{MpiConfig, MpiTransport};
    use herald_tcp::MeshEvent;

    /// Frames rank 0 sends to rank 1.
    const FRAMES: u32 = 3000;
    /// Every this many frames, one is too large for MPI's eager path.
    const LARGE_EVERY: u32 = 50;
    const LARGE_BYTES: usize = 512 << 10;
    /// Longest rank 1 waits for the next event.
    const PATIENCE: Duration = Duration::from_secs(10);

    pub(super) fn run() -> Result<String, String> {
        let (transport, events) =
            MpiTransport::start(MpiConfig::default()).map_err(|e| e.to_string())?;
        if transport.size() != 2 {
            return Err(format!("run with 2 ranks, not {}", transport.size()));
        }
        transport.opener().open();
        let summary = if transport.rank() == 0 {
            send_from_two_threads(&transport);
            format!("rank 0 sent {FRAMES} frames from two threads, then closed")
        } else {
            let received = receive_in_order(&events)?;
            transport.close_peer(0);
            format!("rank 1 received {received} frames in order, then rank 0's close")
        };
        transport.shutdown();
        Ok(summary)
    }

    /// Two threads take turns (a channel hands the turn over, so each send
    /// happens after the one before), then the link closes.
    fn send_from_two_threads(transport: &MpiTransport) {
        let (to_second, second_turn) = crossbeam_channel::bounded::<u32>(1);
        let (to_first, first_turn) = crossbeam_channel::bounded::<u32>(1);
        std::thread::scope(|scope| {
            // Owns its ends: when it stops, the first thread's wait ends too.
            scope.spawn(move || {
                while let Ok(next) = second_turn.recv() {
                    transport.send(1, frame(next));
                    if next + 1 >= FRAMES || to_first.send(next + 1).is_err() {
                        break;
                    }
                }
            });
            let mut next = 0;
            loop {
                transport.send(1, frame(next));
                if next + 1 >= FRAMES || to_second.send(next + 1).is_err() {
                    break;
                }
                match first_turn.recv() {
                    Ok(turn) => next = turn,
                    Err(_) => break,
                }
            }
        });
        transport.close_peer(1);
    }

    fn receive_in_order(events: &crossbeam_channel::Receiver<MeshEvent>) -> Result<u32, String> {
        let mut expected = 0;
        loop {
            match events.recv_timeout(PATIENCE) {
                Ok(MeshEvent::Frame { from: 0, bytes }) => {
                    let number = number_of(&bytes)?;
                    if number != expected {
                        return Err(format!("frame {number} arrived where {expected} was due"));
                    }
                    if bytes != frame(number) {
                        return Err(format!("frame {number} arrived altered"));
                    }
                    expected += 1;
                }
                Ok(MeshEvent::PeerDown { node: 0, .. }) if expected == FRAMES => {
                    return Ok(expected);
                }
                other => {
                    return Err(format!(
                        "after {expected} of {FRAMES} frames, expected the next, got {other:?}"
                    ));
                }
            }
        }
    }

    /// Frame `number`: its number, then filler (a large one every LARGE_EVERY).
    fn frame(number: u32) -> Vec<u8> {
        let len = if number % LARGE_EVERY == LARGE_EVERY - 1 {
            LARGE_BYTES
        } else {
            64
        };
        let mut bytes = vec![(number % 251) as u8; len];
        bytes[..4].copy_from_slice(&number.to_le_bytes());
        bytes
    }

    fn number_of(bytes: &[u8]) -> Result<u32, String> {
        let head: [u8; 4] = bytes
            .get(..4)
            .and_then(|head| head.try_into().ok())
            .ok_or_else(|| format!("a frame of {} bytes is too short", bytes.len()))?;
        Ok(u32::from_le_bytes(head))
    }
}
