//! One authenticated link: a reader thread and a writer thread around a TcpStream.

use std::io::{self, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::frame::{FrameError, read_frame, write_frame};
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

/// A running link. Dropping it without [`Link::close_writer`] leaks nothing: the
/// threads end when the socket or the queue closes.
pub(crate) struct Link {
    shared: Arc<Shared>,
    queue: Option<Sender<Vec<u8>>>,
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
        closing: Arc<AtomicBool>,
        events: Sender<MeshEvent>,
    ) -> io::Result<Link> {
        // Formation used timeouts; an established link waits for frames indefinitely.
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        stream.set_nodelay(true)?;
        let read_half = stream.try_clone()?;
        let write_half = stream.try_clone()?;
        let shared = Arc::new(Shared {
            peer,
            stream,
            down: AtomicBool::new(false),
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
                    write_loop(&shared, &frames, write_half);
                    drop(done_tx); // wakes close_writer
                }
            })?;
        let reader = thread::Builder::new()
            .name(format!("herald-tcp-r{peer}"))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    read_loop(&shared, read_half, max_frame_bytes);
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

    /// Queues a frame; dropped silently once the link is down.
    pub(crate) fn send(&self, frame: Vec<u8>) {
        if self.shared.down.load(Ordering::Acquire) {
            return;
        }
        if let Some(queue) = &self.queue {
            let _ = queue.send(frame);
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
    /// and reports the loss unless this side is shutting down. A clean close is
    /// how every job ends, so only errors are worth a warning here; whoever
    /// consumes the `PeerDown` knows whether the loss matters.
    fn fail(&self, reason: String, clean: bool) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        if self.closing.load(Ordering::Acquire) {
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

/// Drains the queue into a buffer and flushes when the queue runs dry, so a burst
/// of frames leaves in as few segments as possible while a lone frame leaves at once.
fn write_loop(shared: &Shared, frames: &Receiver<Vec<u8>>, stream: TcpStream) {
    let mut out = BufWriter::with_capacity(BUFFER_BYTES, stream);
    let result = (|| -> io::Result<()> {
        while let Ok(frame) = frames.recv() {
            write_one(shared, &mut out, &frame)?;
            loop {
                match frames.try_recv() {
                    Ok(frame) => write_one(shared, &mut out, &frame)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break,
                }
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

fn read_loop(shared: &Shared, stream: TcpStream, max_frame_bytes: usize) {
    let mut input = BufReader::with_capacity(BUFFER_BYTES, stream);
    loop {
        match read_frame(&mut input, max_frame_bytes) {
            Ok(bytes) => {
                shared.frames_received.fetch_add(1, Ordering::Relaxed);
                shared
                    .bytes_received
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                // A dropped receiver means nobody listens any more; keep draining
                // the socket anyway so the peer's writes do not stall.
                let _ = shared.events.send(MeshEvent::Frame {
                    from: shared.peer,
                    bytes,
                });
            }
            Err(FrameError::Closed) => {
                return shared.fail(format!("rank {} closed the connection", shared.peer), true);
            }
            Err(err) => {
                return shared.fail(
                    format!("receiving from rank {} failed: {err}", shared.peer),
                    false,
                );
            }
        }
    }
}
