//! One authenticated link: a reader thread and a writer thread around a TcpStream.
//!
//! The writer sends a heartbeat (a bare length prefix of `u32::MAX`) whenever it
//! has had nothing to send for the heartbeat interval; the reader wakes at least
//! that often and reports the peer down once nothing at all — no frame, no
//! heartbeat, no byte of a frame in progress — has arrived for the peer timeout.
//! So a peer that is stopped (SIGSTOP), cut off by the network, or that sends half
//! a frame and stalls, is reported like a crashed one. Its link is not cut at once:
//! frames queued before [`Link::retire`] (the news that it was declared down) still
//! go, so a stopped peer reads them when it continues; without a retire the link
//! is cut one more timeout later.

use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::frame::{FrameReader, HEARTBEAT, write_frame};
use crate::mesh::MeshEvent;

/// Frame and byte counts of this rank's links (payload bytes, without the 4-byte prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames written to sockets.
    pub frames_sent: u64,
    /// Payload bytes written to sockets.
    pub bytes_sent: u64,
    /// Frames read from sockets.
    pub frames_received: u64,
    /// Payload bytes read from sockets.
    pub bytes_received: u64,
    /// The same counts for each peer, in rank order (this rank itself is absent).
    pub per_peer: Vec<PeerStats>,
}

/// Frame and byte counts of the link to one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's rank.
    pub node: u32,
    /// Frames written to this peer.
    pub frames_sent: u64,
    /// Payload bytes written to this peer.
    pub bytes_sent: u64,
    /// Frames read from this peer.
    pub frames_received: u64,
    /// Payload bytes read from this peer.
    pub bytes_received: u64,
}

/// Read/write buffer size: large enough to batch many small frames per syscall.
const BUFFER_BYTES: usize = 64 * 1024;

/// Timing of a link's liveness checks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Liveness {
    /// Idle time after which the writer sends a heartbeat; zero: never.
    pub(crate) heartbeat: Duration,
    /// Silence after which the reader reports the peer down; zero: never.
    pub(crate) peer_timeout: Duration,
}

/// What the writer thread is asked to do.
enum Outgoing {
    Frame(Vec<u8>),
    /// Send what is queued, then close the link for good (the peer is down in the
    /// job's view): no further frames, and no `PeerDown` event for it.
    Retire,
}

/// A running link. Dropping it without [`Link::close_writer`] leaks nothing: the
/// threads end when the socket or the queue closes.
pub(crate) struct Link {
    shared: Arc<Shared>,
    queue: Option<Sender<Outgoing>>,
    writer_done: Receiver<()>,
    reader_done: Receiver<()>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

/// What the two threads of a link and the mesh share.
struct Shared {
    peer: u32,
    stream: TcpStream,
    down: AtomicBool,
    /// Set once the loss of this peer has been reported (at most one `PeerDown`).
    reported: AtomicBool,
    /// Set by [`Link::retire`]: the owner already knows the peer is gone.
    retired: AtomicBool,
    /// Mesh-wide: set when this side shuts down, so no PeerDown is reported for it.
    closing: Arc<AtomicBool>,
    events: Sender<MeshEvent>,
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_received: AtomicU64,
}

impl Link {
    /// Starts the reader and writer threads on an authenticated stream.
    pub(crate) fn start(
        peer: u32,
        stream: TcpStream,
        max_frame_bytes: usize,
        liveness: Liveness,
        closing: Arc<AtomicBool>,
        events: Sender<MeshEvent>,
    ) -> io::Result<Link> {
        // Formation used timeouts; an established link wakes its reader at least
        // once per heartbeat interval to check for silence, and writes without one.
        stream.set_read_timeout(read_tick(liveness))?;
        stream.set_write_timeout(None)?;
        stream.set_nodelay(true)?;
        let read_half = stream.try_clone()?;
        let write_half = stream.try_clone()?;
        let shared = Arc::new(Shared {
            peer,
            stream,
            down: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            closing,
            events,
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
        });
        let (queue, frames) = crossbeam_channel::unbounded();
        // Each thread drops its end of a `done` channel on exit, so closing can wait
        // for it with a deadline (std's join has none).
        let (done_tx, writer_done) = crossbeam_channel::bounded::<()>(0);
        let (reader_done_tx, reader_done) = crossbeam_channel::bounded::<()>(0);
        let writer = thread::Builder::new()
            .name(format!("herald-tcp-w{peer}"))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    write_loop(&shared, &frames, write_half, liveness.heartbeat);
                    drop(done_tx); // wakes close_writer
                }
            })?;
        let reader = thread::Builder::new()
            .name(format!("herald-tcp-r{peer}"))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    read_loop(&shared, read_half, max_frame_bytes, liveness);
                    drop(reader_done_tx);
                }
            });
        let reader = match reader {
            Ok(handle) => handle,
            Err(err) => {
                let _ = shared.stream.shutdown(Shutdown::Both);
                return Err(err);
            }
        };
        Ok(Link {
            shared,
            queue: Some(queue),
            writer_done,
            reader_done,
            reader: Some(reader),
            writer: Some(writer),
        })
    }

    /// Queues a frame; dropped silently once the link is down or retired.
    pub(crate) fn send(&self, frame: Vec<u8>) {
        if self.shared.down.load(Ordering::Acquire) || self.shared.retired.load(Ordering::Acquire) {
            return;
        }
        if let Some(queue) = &self.queue {
            let _ = queue.send(Outgoing::Frame(frame));
        }
    }

    /// Closes the link for good without waiting: frames already queued are sent,
    /// then the connection is half-closed; later frames are dropped, frames that
    /// arrive are discarded, and no `PeerDown` is reported for this peer. A peer
    /// that neither reads nor closes is cut off by the silence check.
    pub(crate) fn retire(&self) {
        if self.shared.retired.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(queue) = &self.queue {
            let _ = queue.send(Outgoing::Retire);
        }
    }

    /// This link's counters.
    pub(crate) fn stats(&self) -> PeerStats {
        let s = &self.shared;
        PeerStats {
            node: s.peer,
            frames_sent: s.frames_sent.load(Ordering::Relaxed),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            frames_received: s.frames_received.load(Ordering::Relaxed),
            bytes_received: s.bytes_received.load(Ordering::Relaxed),
        }
    }

    /// First half of an orderly close: lets the writer send what is queued, then
    /// half-close (FIN). Waits until `deadline` at most; a peer that stopped
    /// reading gets its connection cut instead.
    pub(crate) fn close_writer(&mut self, deadline: Instant) {
        self.queue = None;
        if let Err(RecvTimeoutError::Timeout) = self.writer_done.recv_deadline(deadline) {
            let _ = self.shared.stream.shutdown(Shutdown::Both);
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }

    /// Second half: waits (until `deadline`) for the peer to close its side, so that
    /// data still in flight towards us does not make our close a reset that could
    /// destroy frames the peer has not read yet; then closes and joins the reader.
    pub(crate) fn close_reader(&mut self, deadline: Instant) {
        if let Err(RecvTimeoutError::Timeout) = self.reader_done.recv_deadline(deadline) {
            // Unblocks the reader's pending read.
            let _ = self.shared.stream.shutdown(Shutdown::Both);
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let _ = self.shared.stream.shutdown(Shutdown::Both);
    }
}

impl Shared {
    /// Marks the link down once, cuts the socket so the other thread stops too,
    /// and reports the loss unless this side is shutting down or already retired
    /// the link. A clean close is how every job ends, so only errors are worth a
    /// warning here; whoever consumes the `PeerDown` knows whether the loss matters.
    fn fail(&self, reason: String, clean: bool) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        self.report(reason, clean);
    }

    /// Reports the loss of the peer (once), leaving the socket as it is.
    fn report(&self, reason: String, clean: bool) {
        if self.reported.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.closing.load(Ordering::Acquire) || self.retired.load(Ordering::Acquire) {
            tracing::debug!(peer = self.peer, %reason, "herald-tcp: closed link to rank {} ended", self.peer);
            return;
        }
        if clean {
            tracing::debug!(peer = self.peer, %reason, "herald-tcp: rank {} closed its link", self.peer);
        } else {
            tracing::warn!(peer = self.peer, %reason, "herald-tcp: link to rank {} lost", self.peer);
        }
        let _ = self.events.send(MeshEvent::PeerDown {
            node: self.peer,
            reason,
        });
    }
}

/// How long the reader blocks in one read: the heartbeat interval (so a silent
/// peer is noticed within one interval of the timeout), or for ever when silence
/// detection is off.
fn read_tick(liveness: Liveness) -> Option<Duration> {
    if liveness.peer_timeout.is_zero() {
        return None;
    }
    Some(
        (liveness.peer_timeout / 4)
            .min(liveness.heartbeat)
            .max(Duration::from_millis(1)),
    )
}

/// Drains the queue into a buffer and flushes when the queue runs dry, so a burst
/// of frames leaves in as few segments as possible while a lone frame leaves at
/// once. After `heartbeat` with nothing to send, sends a heartbeat.
fn write_loop(
    shared: &Shared,
    frames: &Receiver<Outgoing>,
    stream: TcpStream,
    heartbeat: Duration,
) {
    let mut out = BufWriter::with_capacity(BUFFER_BYTES, stream);
    let result = (|| -> io::Result<()> {
        loop {
            let next = if heartbeat.is_zero() {
                frames.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                frames.recv_timeout(heartbeat)
            };
            let first = match next {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    out.write_all(&HEARTBEAT)?;
                    out.flush()?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut item = Some(first);
            while let Some(outgoing) = item.take() {
                match outgoing {
                    Outgoing::Frame(frame) => write_one(shared, &mut out, &frame)?,
                    Outgoing::Retire => {
                        out.flush()?;
                        return out.get_ref().shutdown(Shutdown::Write);
                    }
                }
                item = frames.try_recv().ok();
            }
            out.flush()?;
        }
        // The mesh dropped the queue: everything is flushed; tell the peer we are done.
        out.get_ref().shutdown(Shutdown::Write)
    })();
    if let Err(err) = result {
        shared.fail(
            format!("sending to rank {} failed: {err}", shared.peer),
            false,
        );
    }
}

fn write_one(shared: &Shared, out: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    write_frame(out, frame)?;
    shared.frames_sent.fetch_add(1, Ordering::Relaxed);
    shared
        .bytes_sent
        .fetch_add(frame.len() as u64, Ordering::Relaxed);
    Ok(())
}

fn read_loop(shared: &Shared, mut stream: TcpStream, max_frame_bytes: usize, liveness: Liveness) {
    let peer = shared.peer;
    let mut frames = FrameReader::new(max_frame_bytes);
    let mut buffer = vec![0u8; BUFFER_BYTES];
    let mut last_heard = Instant::now();
    let mut last_woke = Instant::now();
    let mut linger_until: Option<Instant> = None;
    loop {
        let read = stream.read(&mut buffer);
        let now = Instant::now();
        // A wake-up long after the previous one means this process itself was not
        // running (stopped, or starved): the peer gets a fresh timeout rather than
        // being blamed for our own pause. Frames it sent meanwhile are read first.
        if !liveness.peer_timeout.is_zero()
            && now.duration_since(last_woke) > liveness.peer_timeout / 2
        {
            last_heard = now;
        }
        last_woke = now;
        let n = match read {
            Ok(0) if frames.in_progress().is_none() => {
                return shared.fail(format!("rank {peer} closed the connection"), true);
            }
            Ok(0) => {
                let (got, len) = frames.in_progress().unwrap_or_default();
                return shared.fail(
                    format!(
                        "rank {peer} closed the connection in the middle of a frame \
                         ({got} of {len} bytes)"
                    ),
                    false,
                );
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let silent = now.duration_since(last_heard);
                if silent < liveness.peer_timeout {
                    continue;
                }
                let reason = silence(peer, silent, frames.in_progress());
                match linger_until {
                    // The peer may be alive but stopped: the link stays open for
                    // one more timeout, so the owner can queue the news that it was
                    // declared down (and retire the link) before it is cut.
                    None => {
                        shared.report(reason, false);
                        linger_until = Some(now + liveness.peer_timeout);
                    }
                    Some(until) if now >= until => return shared.fail(reason, false),
                    Some(_) => {}
                }
                continue;
            }
            Err(err) => {
                return shared.fail(format!("receiving from rank {peer} failed: {err}"), false);
            }
        };
        last_heard = now;
        // Nothing is delivered once the peer is reported down or the link retired.
        let retired =
            shared.retired.load(Ordering::Acquire) || shared.reported.load(Ordering::Acquire);
        let fed = frames.feed(&buffer[..n], |bytes| {
            shared.frames_received.fetch_add(1, Ordering::Relaxed);
            shared
                .bytes_received
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            // A dropped receiver means nobody listens any more; keep draining
            // the socket anyway so the peer's writes do not stall.
            if !retired {
                let _ = shared.events.send(MeshEvent::Frame { from: peer, bytes });
            }
        });
        if let Err(err) = fed {
            return shared.fail(format!("receiving from rank {peer} failed: {err}"), false);
        }
    }
}

/// Why a silent peer is reported down.
fn silence(peer: u32, silent: Duration, partial: Option<(usize, usize)>) -> String {
    let during = match partial {
        Some((got, len)) => format!(" in the middle of a frame ({got} of {len} bytes received)"),
        None => String::new(),
    };
    format!(
        "rank {peer} sent nothing for {:.1} s{during} (peer timeout; no heartbeat either): \
         it is stopped, hung or cut off",
        silent.as_secs_f64()
    )
}
