//! One non-blocking connection: the handshake, sealed records in and out, and
//! how long it has been quiet. It knows nothing of ranks' roles in the job; the
//! reactor decides what its records and failures mean.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use crate::error::HandshakeError;
use crate::frame::{Control, FrameError, FrameReader};
use crate::handshake::{Expect, Handshake, Identity};
use crate::outlet::Outlet;
use crate::seal::{Kind, Opener};

/// Bytes read from a socket at a time.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Full reads a connection gets per turn of the I/O thread before the others
/// get theirs (it comes back for the rest at once): a peer that sends without
/// pause cannot starve the other links, whose heartbeats would then seem to
/// stop and their ranks be declared down.
pub(crate) const READS_PER_TURN: usize = 4;

/// A connection, from its first byte to its close.
pub(crate) struct Conn {
    /// The socket and its sending side, which senders may share.
    pub(crate) outlet: Arc<Outlet>,
    /// The address at the other end.
    pub(crate) remote: SocketAddr,
    /// What this connection should lead to: the rank we dialled, any rank (we
    /// accepted it), or a process asking to join.
    pub(crate) expect: Expect,
    /// The peer's rank, once its hello has been checked.
    pub(crate) rank: Option<u32>,
    stage: Stage,
    /// Handshake bytes received and not yet consumed.
    raw_in: Vec<u8>,
    records: FrameReader,
    opener: Option<Opener>,
    pub(crate) opened_at: Instant,
    pub(crate) last_heard: Instant,
    /// The peer's hello has arrived (it must come first, and once).
    hello_seen: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// A dialled connection whose TCP handshake has not finished.
    Connecting,
    /// The unsealed handshake.
    Handshake,
    /// Keys are up; waiting for the peer's hello.
    Hello,
    /// The peer's hello was accepted: records flow.
    Open,
}

/// What a connection received.
#[derive(Debug)]
pub(crate) enum Received {
    /// The peer's hello, to be checked by the reactor ([`Conn::accept_hello`]).
    Hello(crate::handshake::Hello),
    /// A control message after the hello.
    Control(Control),
    /// A frame for the layer above.
    Data(Vec<u8>),
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The peer closed it; `partial` is how far a record in progress got.
    Closed { partial: Option<(usize, usize)> },
    /// The socket failed.
    Io(io::Error),
    /// The handshake failed.
    Handshake(HandshakeError),
    /// The peer broke the record protocol.
    Protocol(String),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Closed { partial: None } => write!(f, "closed the connection"),
            ConnError::Closed {
                partial: Some((got, len)),
            } => write!(
                f,
                "closed the connection in the middle of a frame ({got} of {len} bytes)"
            ),
            ConnError::Io(err) => write!(f, "the connection failed: {err}"),
            ConnError::Handshake(err) => write!(f, "{err}"),
            ConnError::Protocol(reason) => write!(f, "{reason}"),
        }
    }
}

impl Conn {
    /// Starts dialling `addr`.
    pub(crate) fn dial(addr: SocketAddr, expect: Expect, now: Instant) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        Ok(Conn::new(stream, addr, expect, Stage::Connecting, now))
    }

    /// A connection our listener accepted.
    pub(crate) fn accepted(stream: TcpStream, remote: SocketAddr, now: Instant) -> Conn {
        Conn::new(stream, remote, Expect::AnyOther, Stage::Handshake, now)
    }

    fn new(
        stream: TcpStream,
        remote: SocketAddr,
        expect: Expect,
        stage: Stage,
        now: Instant,
    ) -> Conn {
        Conn {
            outlet: Arc::new(Outlet::new(stream, now)),
            remote,
            expect,
            rank: match expect {
                Expect::Rank(rank) => Some(rank),
                _ => None,
            },
            stage,
            raw_in: Vec::new(),
            records: FrameReader::new(0),
            opener: None,
            opened_at: now,
            last_heard: now,
            hello_seen: false,
        }
    }

    /// Whether the peer's hello has been accepted.
    pub(crate) fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    /// Whether the peer has proved the cluster secret (a connection that has not
    /// is a stranger's and gets a short deadline).
    pub(crate) fn is_authenticated(&self) -> bool {
        matches!(self.stage, Stage::Hello | Stage::Open)
    }

    /// Whether the dial has completed its TCP handshake.
    pub(crate) fn is_connecting(&self) -> bool {
        self.stage == Stage::Connecting
    }

    /// How far a record in progress got: received and total bytes.
    pub(crate) fn partial(&self) -> Option<(usize, usize)> {
        self.records.in_progress()
    }

    /// The socket is writable: finish connecting if dialling, then write what is queued.
    pub(crate) fn on_writable(
        &mut self,
        handshake: &mut Option<Handshake>,
        me: &Identity,
        now: Instant,
    ) -> Result<(), ConnError> {
        if self.stage == Stage::Connecting {
            let stream = &self.outlet.stream;
            if let Some(err) = stream.take_error().map_err(ConnError::Io)? {
                return Err(ConnError::Io(err));
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(err) => return Err(ConnError::Io(err)),
            }
            let _ = stream.set_nodelay(true);
            let (started, greeting) =
                Handshake::connector(&me.secret).map_err(ConnError::Handshake)?;
            *handshake = Some(started);
            self.stage = Stage::Handshake;
            self.outlet.queue_raw(greeting);
            self.opened_at = now;
            self.last_heard = now;
        }
        self.flush(now)
    }

    /// The socket is readable: reads until it would block, or up to
    /// [`READS_PER_TURN`] full buffers, advancing the handshake and opening
    /// records; what arrived goes to `received`. Returns true if it stopped at
    /// that bound: more may be waiting, and no new readiness event will say so.
    pub(crate) fn on_readable(
        &mut self,
        handshake: &mut Option<Handshake>,
        me: &Identity,
        max_record: usize,
        now: Instant,
        buffer: &mut [u8],
        received: &mut Vec<Received>,
    ) -> Result<bool, ConnError> {
        if self.stage == Stage::Connecting {
            return Ok(false);
        }
        // A read that does not fill the buffer took everything the socket had:
        // data that comes later raises a new readiness event, so reading again
        // now (to see it would block) only costs a system call per frame.
        let mut drained = false;
        let mut reads = 0;
        while !drained {
            if reads == READS_PER_TURN {
                self.flush(now)?;
                return Ok(true);
            }
            reads += 1;
            let n = match (&self.outlet.stream).read(buffer) {
                Ok(0) => {
                    return Err(ConnError::Closed {
                        partial: self.partial(),
                    });
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(ConnError::Io(err)),
            };
            drained = n < buffer.len();
            self.last_heard = now;
            let mut bytes = &buffer[..n];
            if self.stage == Stage::Handshake {
                self.raw_in.extend_from_slice(bytes);
                bytes = &[];
                let Some(step) = handshake.as_mut() else {
                    return Err(ConnError::Protocol("handshake state lost".into()));
                };
                let mut output = Vec::new();
                let advanced = step.advance(&mut self.raw_in, &mut output);
                if !output.is_empty() {
                    self.outlet.queue_raw(output);
                }
                match advanced {
                    Err(err) => {
                        // Best effort: the peer may learn why (rejection, version).
                        let _ = self.flush(now);
                        return Err(ConnError::Handshake(err));
                    }
                    Ok(None) => continue,
                    Ok(Some(keys)) => {
                        *handshake = None;
                        self.outlet.set_sealer(keys.seal);
                        self.opener = Some(keys.open);
                        self.records = FrameReader::new(max_record);
                        self.stage = Stage::Hello;
                        let hello = Control::Hello(me.hello()).encode();
                        self.outlet
                            .send(Kind::Control, &hello, now)
                            .map_err(ConnError::Io)?;
                        // Records may have arrived with the last handshake bytes.
                        let rest = std::mem::take(&mut self.raw_in);
                        self.take_records(&rest, received)?;
                    }
                }
            }
            self.take_records(bytes, received)?;
        }
        self.flush(now)?;
        Ok(false)
    }

    /// The peer's hello passed the reactor's checks: data may flow.
    pub(crate) fn accept_hello(&mut self, rank: u32) {
        self.rank = Some(rank);
        self.stage = Stage::Open;
    }

    /// Writes what is queued until the socket would block.
    pub(crate) fn flush(&self, now: Instant) -> Result<(), ConnError> {
        self.outlet.flush(now).map_err(ConnError::Io)
    }

    fn take_records(
        &mut self,
        bytes: &[u8],
        received: &mut Vec<Received>,
    ) -> Result<(), ConnError> {
        let mut failure = None;
        let opener = &mut self.opener;
        let hello_seen = &mut self.hello_seen;
        let fed = self.records.feed(bytes, |record| {
            if failure.is_some() {
                return;
            }
            let Some(opener) = opener.as_mut() else {
                failure = Some(ConnError::Protocol("a record before the keys".into()));
                return;
            };
            match opener.open(record) {
                Err(err) => failure = Some(ConnError::Protocol(err.to_string())),
                Ok((Kind::Heartbeat, _)) => {}
                Ok((Kind::Control, payload)) => match Control::decode(&payload) {
                    Ok(Control::Hello(_)) if *hello_seen => {
                        failure = Some(ConnError::Protocol("a second hello".into()))
                    }
                    Ok(Control::Hello(hello)) => {
                        *hello_seen = true;
                        received.push(Received::Hello(hello));
                    }
                    Ok(_) if !*hello_seen => {
                        failure = Some(ConnError::Protocol("a message before the hello".into()))
                    }
                    Ok(control) => received.push(Received::Control(control)),
                    Err(err) => {
                        failure = Some(ConnError::Protocol(format!(
                            "an undecodable control message: {err}"
                        )))
                    }
                },
                Ok((Kind::Data, _)) if !*hello_seen => {
                    failure = Some(ConnError::Protocol("a frame before the hello".into()))
                }
                Ok((Kind::Data, payload)) => received.push(Received::Data(payload)),
            }
        });
        if let Some(failure) = failure {
            return Err(failure);
        }
        fed.map_err(|err| match err {
            FrameError::TooLarge { len, max } => ConnError::Protocol(format!(
                "the peer announced a record of {len} bytes, above the largest accepted \
                 ({max} bytes)"
            )),
            FrameError::Io(err) => ConnError::Io(err),
        })
    }
}
