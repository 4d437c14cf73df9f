//! Mesh formation: every rank links to rank 0 and reports its listen address;
//! rank 0 sends the address table; every rank dials each lower rank and accepts
//! each higher one; every rank reports ready to rank 0, which says go. A rank
//! that fails tells rank 0 why, and rank 0 tells everyone, so a broken job fails
//! everywhere with one clear reason instead of timing out rank by rank.

use std::collections::BTreeSet;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::acceptor::{Accepted, Acceptor, Incoming, Local};
use crate::config::MeshConfig;
use crate::error::TcpError;
use crate::frame::{Control, FrameError, read_frame, write_frame};
use crate::handshake::connect_side;

/// Control messages are tiny; this caps what formation will read from a peer.
const MAX_CONTROL_BYTES: usize = 1 << 20;
/// Longest single connect attempt; attempts repeat until the deadline.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(5);
/// Longest pause between connect attempts to a listener that is not up yet.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The outcome of formation: one authenticated stream per other rank.
pub(crate) struct Formed {
    /// Indexed by rank; `None` at this rank's own index.
    pub(crate) streams: Vec<Option<TcpStream>>,
    pub(crate) acceptor: Acceptor,
}

/// Runs formation for this rank on an already-bound listener.
pub(crate) fn form(
    config: &MeshConfig,
    local: Arc<Local>,
    listener: TcpListener,
) -> Result<Formed, TcpError> {
    let deadline = Instant::now() + config.establish_timeout;
    let listen_addr = listener
        .local_addr()
        .map_err(io_error("reading the listen address"))?;
    let (incoming_tx, incoming) = crossbeam_channel::unbounded();
    let acceptor = Acceptor::start(listener, Arc::clone(&local), incoming_tx)
        .map_err(io_error("starting the accept thread"))?;
    let run = Run {
        config,
        local: &local,
        deadline,
        incoming,
    };
    let streams = if config.rank == 0 {
        run.coordinator()?
    } else {
        run.member(listen_addr)?
    };
    // `run` (and with it the incoming receiver) is gone: later authenticated
    // connections are refused by the acceptor.
    Ok(Formed { streams, acceptor })
}

struct Run<'a> {
    config: &'a MeshConfig,
    local: &'a Local,
    deadline: Instant,
    incoming: Receiver<Accepted>,
}

impl Run<'_> {
    /// Rank 0: collect every registration, send the table, wait for every ready.
    fn coordinator(self) -> Result<Vec<Option<TcpStream>>, TcpError> {
        let size = self.config.size as usize;
        let mut streams: Vec<Option<(TcpStream, SocketAddr)>> = (0..size).map(|_| None).collect();
        let mut addrs = vec![self.config.coordinator; size];
        let collected = (|| {
            while let Some(missing) = missing_ranks(&streams, 0) {
                let link = self.next_incoming(missing)?;
                if let Some((_, first)) = &streams[link.rank as usize] {
                    return Err(TcpError::DuplicateRank {
                        rank: link.rank,
                        first: *first,
                        second: link.from,
                    });
                }
                match read_control(&link.stream, self.deadline) {
                    Ok(Control::Register { listen }) => addrs[link.rank as usize] = listen,
                    other => return Err(unexpected(link.rank, "its listen address", other)),
                }
                streams[link.rank as usize] = Some((link.stream, link.from));
            }
            Ok(())
        })();
        let streams: Vec<Option<TcpStream>> =
            streams.into_iter().map(|s| s.map(|(s, _)| s)).collect();
        if let Err(err) = collected.and_then(|()| self.table_then_ready(&streams, addrs)) {
            abort_all(&streams, &err.to_string());
            return Err(err);
        }
        Ok(streams)
    }

    fn table_then_ready(
        &self,
        streams: &[Option<TcpStream>],
        addrs: Vec<SocketAddr>,
    ) -> Result<(), TcpError> {
        let table = Control::Table { addrs };
        for (rank, stream) in live(streams) {
            send_control(stream, &table).map_err(|err| lost(rank, err))?;
        }
        self.await_ready(streams)?;
        for (rank, stream) in live(streams) {
            send_control(stream, &Control::Go).map_err(|err| lost(rank, err))?;
        }
        Ok(())
    }

    /// Waits for every rank's ready on a thread each, so the first failure is seen
    /// as soon as it is reported, whichever rank it comes from.
    fn await_ready(&self, streams: &[Option<TcpStream>]) -> Result<(), TcpError> {
        thread::scope(|scope| {
            let (tx, results) = crossbeam_channel::unbounded();
            for (rank, stream) in live(streams) {
                let tx = tx.clone();
                scope.spawn(move || tx.send((rank, read_control(stream, self.deadline))));
            }
            drop(tx);
            let mut waiting: BTreeSet<u32> = live(streams).map(|(rank, _)| rank).collect();
            let mut failure = None;
            for (rank, result) in results.iter() {
                match result {
                    Ok(Control::Ready) => {
                        waiting.remove(&rank);
                        continue;
                    }
                    Ok(Control::Abort { reason }) => {
                        failure = Some(TcpError::Formation {
                            reason: format!("rank {rank} failed: {reason}"),
                        });
                    }
                    Err(ControlError::TimedOut) => {
                        failure = Some(self.timeout(waiting.iter().copied().collect()));
                    }
                    other => failure = Some(unexpected(rank, "ready", other)),
                }
                // Cutting the sockets wakes the readers still waiting, ending the scope.
                abort_all(
                    streams,
                    &failure
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                );
                break;
            }
            failure.map_or(Ok(()), Err)
        })
    }

    /// Any other rank: link to rank 0, get the table, link to everyone, report ready.
    fn member(self, listen_addr: SocketAddr) -> Result<Vec<Option<TcpStream>>, TcpError> {
        let coordinator = self.dial(0, self.config.coordinator)?;
        // A wildcard bind is not an address others can dial; the interface that
        // reached rank 0 is the one the others can most likely reach us on.
        let mut reported = listen_addr;
        if reported.ip().is_unspecified() {
            let via = coordinator
                .local_addr()
                .map_err(io_error("reading the local address"))?;
            reported.set_ip(via.ip());
        }
        if reported.ip().is_loopback() && !self.config.coordinator.ip().is_loopback() {
            tracing::warn!(
                %reported, coordinator = %self.config.coordinator,
                "herald-tcp: this rank listens on loopback but rank 0 is remote; ranks on \
                 other hosts cannot reach it: set MeshConfig::bind (HERALD_BIND)"
            );
        }
        send_control(&coordinator, &Control::Register { listen: reported })
            .map_err(|err| lost(0, err))?;
        let addrs = match read_control(&coordinator, self.deadline) {
            Ok(Control::Table { addrs }) if addrs.len() == self.config.size as usize => addrs,
            Ok(Control::Abort { reason }) => return Err(TcpError::Aborted { reason }),
            other => return Err(unexpected(0, "the address table", other)),
        };
        let streams = match self.link_peers(coordinator.try_clone(), &addrs) {
            Ok(streams) => streams,
            Err(err) => {
                let _ = send_control(
                    &coordinator,
                    &Control::Abort {
                        reason: err.to_string(),
                    },
                );
                return Err(err);
            }
        };
        send_control(&coordinator, &Control::Ready).map_err(|err| lost(0, err))?;
        match read_control(&coordinator, self.deadline) {
            Ok(Control::Go) => Ok(streams),
            Ok(Control::Abort { reason }) => Err(TcpError::Aborted { reason }),
            Err(ControlError::TimedOut) => Err(self.timeout(vec![0])),
            other => Err(unexpected(0, "the go signal", other)),
        }
    }

    fn link_peers(
        &self,
        coordinator: io::Result<TcpStream>,
        addrs: &[SocketAddr],
    ) -> Result<Vec<Option<TcpStream>>, TcpError> {
        let me = self.config.rank as usize;
        let mut streams: Vec<Option<TcpStream>> = (0..addrs.len()).map(|_| None).collect();
        streams[0] = Some(coordinator.map_err(io_error("cloning the rank 0 socket"))?);
        for (rank, addr) in addrs.iter().enumerate().take(me).skip(1) {
            streams[rank] = Some(self.dial(rank as u32, *addr)?);
        }
        while let Some(missing) = missing_ranks(&streams, me) {
            let link = self.next_incoming(missing)?;
            if streams[link.rank as usize].is_some() {
                let first = streams[link.rank as usize]
                    .as_ref()
                    .and_then(|s| s.peer_addr().ok());
                return Err(TcpError::DuplicateRank {
                    rank: link.rank,
                    first: first.unwrap_or(link.from),
                    second: link.from,
                });
            }
            streams[link.rank as usize] = Some(link.stream);
        }
        Ok(streams)
    }

    /// Connects to `rank` (retrying while its listener is not up yet) and authenticates.
    fn dial(&self, rank: u32, addr: SocketAddr) -> Result<TcpStream, TcpError> {
        let mut pause = Duration::from_millis(5);
        let mut stream = loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            match TcpStream::connect_timeout(
                &addr,
                remaining.min(CONNECT_ATTEMPT).max(Duration::from_millis(1)),
            ) {
                Ok(stream) => break stream,
                Err(source) if remaining <= pause => {
                    return Err(TcpError::Connect { rank, addr, source });
                }
                Err(_) => {
                    // Rank 0 may simply not be listening yet: back off and retry.
                    thread::sleep(pause);
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        };
        let timeout = self
            .local
            .handshake_timeout
            .min(self.deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let set = stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)));
        set.map_err(io_error("setting handshake timeouts"))?;
        connect_side(&mut stream, &self.local.identity(), rank)
            .map_err(|reason| TcpError::Handshake { rank, addr, reason })?;
        Ok(stream)
    }

    fn next_incoming(&self, missing: Vec<u32>) -> Result<Incoming, TcpError> {
        match self.incoming.recv_deadline(self.deadline) {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(refused)) => Err(TcpError::Handshake {
                rank: refused.rank,
                addr: refused.from,
                reason: refused.reason,
            }),
            Err(RecvTimeoutError::Timeout) => Err(self.timeout(missing)),
            Err(RecvTimeoutError::Disconnected) => Err(TcpError::Formation {
                reason: "the accept thread stopped unexpectedly".into(),
            }),
        }
    }

    fn timeout(&self, missing: Vec<u32>) -> TcpError {
        TcpError::Timeout {
            after: self.config.establish_timeout,
            missing,
        }
    }
}

/// Why a control message could not be read.
#[derive(Debug)]
enum ControlError {
    TimedOut,
    Failed(String),
}

fn read_control(stream: &TcpStream, deadline: Instant) -> Result<Control, ControlError> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(ControlError::TimedOut);
    }
    stream
        .set_read_timeout(Some(remaining))
        .map_err(|err| ControlError::Failed(err.to_string()))?;
    match read_frame(&mut &*stream, MAX_CONTROL_BYTES) {
        Ok(bytes) => Control::decode(&bytes).map_err(ControlError::Failed),
        Err(FrameError::Io(err))
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(ControlError::TimedOut)
        }
        Err(err) => Err(ControlError::Failed(err.to_string())),
    }
}

fn send_control(stream: &TcpStream, message: &Control) -> io::Result<()> {
    write_frame(&mut &*stream, &message.encode())
}

/// Tells every linked rank that formation failed, then cuts the links.
fn abort_all(streams: &[Option<TcpStream>], reason: &str) {
    for (_, stream) in live(streams) {
        let _ = send_control(
            stream,
            &Control::Abort {
                reason: reason.to_owned(),
            },
        );
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}

fn live(streams: &[Option<TcpStream>]) -> impl Iterator<Item = (u32, &TcpStream)> {
    streams
        .iter()
        .enumerate()
        .filter_map(|(rank, s)| s.as_ref().map(|s| (rank as u32, s)))
}

/// Ranks other than `me` with no stream yet, or `None` when all are linked.
fn missing_ranks<T>(streams: &[Option<T>], me: usize) -> Option<Vec<u32>> {
    let missing: Vec<u32> = (0..streams.len())
        .filter(|&r| r != me && streams[r].is_none())
        .map(|r| r as u32)
        .collect();
    (!missing.is_empty()).then_some(missing)
}

fn unexpected(rank: u32, wanted: &str, got: Result<Control, ControlError>) -> TcpError {
    let reason = match got {
        Ok(message) => format!("rank {rank} sent {message:?} when {wanted} was expected"),
        Err(ControlError::TimedOut) => format!("rank {rank} did not send {wanted} in time"),
        Err(ControlError::Failed(err)) => format!("waiting for {wanted} from rank {rank}: {err}"),
    };
    TcpError::Formation { reason }
}

fn lost(rank: u32, err: io::Error) -> TcpError {
    TcpError::Formation {
        reason: format!("the link to rank {rank} failed during formation: {err}"),
    }
}

fn io_error(context: &'static str) -> impl Fn(io::Error) -> TcpError {
    move |source| TcpError::Io {
        context: context.to_owned(),
        source,
    }
}
