//! The sending side of one connection, shared by the I/O thread and the threads
//! that send frames: a sender writes its frame to the socket itself when nothing
//! is queued before it, so a frame leaves without waking the I/O thread. What the
//! socket does not take at once is queued, and the I/O thread writes it when the
//! socket becomes writable again.
//!
//! Sealing and queueing happen under one lock, so records leave in the order of
//! their counters whoever sends them.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use mio::net::TcpStream;

use crate::seal::{Kind, Sealer};

/// A connection's socket and everything written to it.
pub(crate) struct Outlet {
    pub(crate) stream: TcpStream,
    state: Mutex<State>,
}

struct State {
    sealer: Option<Sealer>,
    out: VecDeque<Vec<u8>>,
    /// Bytes of `out`'s front already written.
    out_at: usize,
    queued_bytes: usize,
    last_sent: Instant,
    /// Half-close once everything queued is written.
    shut_when_flushed: bool,
    write_shut: bool,
}

impl Outlet {
    pub(crate) fn new(stream: TcpStream, now: Instant) -> Outlet {
        Outlet {
            stream,
            state: Mutex::new(State {
                sealer: None,
                out: VecDeque::new(),
                out_at: 0,
                queued_bytes: 0,
                last_sent: now,
                shut_when_flushed: false,
                write_shut: false,
            }),
        }
    }

    /// Records are sealed from now on.
    pub(crate) fn set_sealer(&self, sealer: Sealer) {
        self.state().sealer = Some(sealer);
    }

    /// Queues handshake bytes as they are (write them with [`Outlet::flush`]).
    pub(crate) fn queue_raw(&self, bytes: Vec<u8>) {
        let mut state = self.state();
        state.queued_bytes += bytes.len();
        state.out.push_back(bytes);
    }

    /// Seals a record and writes what the socket takes; returns the bytes still
    /// queued. Nothing is sent before the keys are up.
    pub(crate) fn send(&self, kind: Kind, payload: &[u8], now: Instant) -> io::Result<usize> {
        let mut state = self.state();
        let Some(sealer) = state.sealer.as_mut() else {
            return Ok(state.queued_bytes);
        };
        let record = sealer.seal(kind, payload);
        state.queued_bytes += record.len();
        state.out.push_back(record);
        self.write_out(&mut state, now)?;
        Ok(state.queued_bytes)
    }

    /// Writes what is queued until the socket would block; half-closes once all
    /// is written if [`Outlet::shut_when_flushed`] was asked for.
    pub(crate) fn flush(&self, now: Instant) -> io::Result<()> {
        let mut state = self.state();
        self.write_out(&mut state, now)
    }

    /// Half-closes the connection once everything queued has been written.
    pub(crate) fn shut_when_flushed(&self, now: Instant) {
        let mut state = self.state();
        state.shut_when_flushed = true;
        let _ = self.write_out(&mut state, now);
    }

    /// Whether everything queued has been written and the write side closed.
    pub(crate) fn is_drained(&self) -> bool {
        self.state().write_shut
    }

    /// When bytes last left for the peer.
    pub(crate) fn last_sent(&self) -> Instant {
        self.state().last_sent
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while holding the lock left whole records
        // queued (the lock is taken around complete operations): carry on.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_out(&self, state: &mut State, now: Instant) -> io::Result<()> {
        while let Some(front) = state.out.front() {
            match (&self.stream).write(&front[state.out_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    state.last_sent = now;
                    state.out_at += n;
                    state.queued_bytes -= n;
                    if state.out_at == front.len() {
                        state.out.pop_front();
                        state.out_at = 0;
                    }
                }
                // The I/O thread is told when the socket takes more.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if state.shut_when_flushed && !state.write_shut {
            state.write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }
}
