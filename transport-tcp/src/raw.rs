//! Blocking links for tests that play a misbehaving rank: they join the job like
//! a rank, then write what they like (sealed frames, raw bytes, nothing at all)
//! and read what the real ranks send them. Not for jobs.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::config::MeshConfig;
use crate::error::{HandshakeError, TcpError};
use crate::frame::{Control, FrameError, FrameReader};
use crate::handshake::{Expect, Handshake, Identity};
use crate::seal::{Kind, Opener, RECORD_OVERHEAD, Sealer};

/// One authenticated connection, driven by hand.
#[doc(hidden)]
pub struct RawLink {
    sender: RawSender,
    receiver: RawReceiver,
}

/// The sending half of a [`RawLink`].
#[doc(hidden)]
pub struct RawSender {
    stream: TcpStream,
    sealer: Sealer,
}

/// The receiving half of a [`RawLink`].
#[doc(hidden)]
pub struct RawReceiver {
    stream: TcpStream,
    opener: Opener,
    records: FrameReader,
    /// Records read but not yet returned.
    ready: Vec<(Kind, Vec<u8>)>,
}

impl RawLink {
    /// Opens one more link, as rank `config.rank`, to rank `to` at `addr` (a
    /// rank may hold two connections with a peer: one each way, or a new one).
    pub fn dial(config: &MeshConfig, to: u32, addr: SocketAddr) -> Result<RawLink, TcpError> {
        let deadline = Instant::now() + config.establish_timeout;
        dial(&identity(config), to, addr, deadline, max_record(config))
    }

    /// The address of this end of the link.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sender.stream.local_addr()
    }

    /// Half-closes the link: the peer reads the end of the stream after what
    /// was sent, as when a rank closes a link it is done with.
    pub fn close_write(&self) -> io::Result<()> {
        self.sender.stream.shutdown(Shutdown::Write)
    }

    /// Closes the link with a reset instead of the end of the stream, as the
    /// kernel does for a socket closed with data unread: the peer's next write
    /// on it fails.
    pub fn reset(self) -> io::Result<()> {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the descriptor is this link's open socket, and `linger` is a
        // valid `struct linger` whose size is the length passed.
        let set = unsafe {
            libc::setsockopt(
                self.sender.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        // Both halves share the socket: it closes (and resets) with the last.
        drop(self);
        Ok(())
    }

    /// Splits the link so one thread can send while another reads.
    pub fn split(self) -> (RawSender, RawReceiver) {
        (self.sender, self.receiver)
    }

    /// Sends a sealed data frame.
    pub fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        self.sender.send_frame(frame)
    }

    /// Writes `bytes` to the socket as they are (a torn or forged record).
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sender.write_raw(bytes)
    }

    /// The next data frame, or `None` once the peer closed the connection.
    pub fn recv_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.receiver.recv_frame()
    }

    /// Sets a read timeout (a read past it fails with `WouldBlock`).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.receiver.set_read_timeout(timeout)
    }
}

impl RawSender {
    /// Sends a sealed data frame.
    pub fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let record = self.sealer.seal(Kind::Data, frame);
        self.stream.write_all(&record)
    }

    /// Sends a sealed heartbeat.
    pub fn send_heartbeat(&mut self) -> io::Result<()> {
        let record = self.sealer.seal(Kind::Heartbeat, &[]);
        self.stream.write_all(&record)
    }

    /// Seals a data frame and returns the record instead of sending it (to
    /// replay, reorder or alter it).
    pub fn seal_frame(&mut self, frame: &[u8]) -> Vec<u8> {
        self.sealer.seal(Kind::Data, frame)
    }

    /// Writes `bytes` to the socket as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }
}

impl RawReceiver {
    /// The next data frame (heartbeats and control messages skipped), or `None`
    /// once the peer closed the connection.
    pub fn recv_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.next_record()? {
                None => return Ok(None),
                Some((Kind::Data, frame)) => return Ok(Some(frame)),
                Some(_) => {}
            }
        }
    }

    /// Sets a read timeout (a read past it fails with `WouldBlock`).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    fn next_record(&mut self) -> io::Result<Option<(Kind, Vec<u8>)>> {
        let mut buffer = [0u8; 16 * 1024];
        while self.ready.is_empty() {
            let n = self.stream.read(&mut buffer)?;
            if n == 0 {
                return Ok(None);
            }
            self.take(&buffer[..n])?;
        }
        Ok(Some(self.ready.remove(0)))
    }

    /// Opens the records in `bytes` (and what earlier calls left incomplete).
    fn take(&mut self, bytes: &[u8]) -> io::Result<()> {
        {
            let opener = &mut self.opener;
            let ready = &mut self.ready;
            let mut failed = None;
            self.records
                .feed(bytes, |record| match opener.open(record) {
                    Ok(opened) => ready.push(opened),
                    Err(err) => failed = Some(err),
                })
                .map_err(|err| match err {
                    FrameError::Io(err) => err,
                    other => io::Error::other(other.to_string()),
                })?;
            if let Some(err) = failed {
                return Err(io::Error::other(err.to_string()));
            }
        }
        Ok(())
    }
}

/// Registers with rank 0 like a rank, waits for the table, then dials every
/// other rank.
pub(crate) fn establish(
    config: &MeshConfig,
    listener: &TcpListener,
) -> Result<Vec<Option<RawLink>>, TcpError> {
    let deadline = Instant::now() + config.establish_timeout;
    let me = identity(config);
    let max_record = max_record(config);
    let mut zero = dial(&me, 0, config.coordinator, deadline, max_record)?;
    let listen = listener.local_addr().map_err(|source| TcpError::Io {
        context: "reading the listen address".into(),
        source,
    })?;
    let register = Control::Register { listen }.encode();
    let record = zero.sender.sealer.seal(Kind::Control, &register);
    zero.sender
        .stream
        .write_all(&record)
        .map_err(|err| lost(0, &err))?;
    let addrs = loop {
        match zero.receiver.next_record().map_err(|err| lost(0, &err))? {
            Some((Kind::Control, bytes)) => match Control::decode(&bytes) {
                Ok(Control::Table { addrs }) => break addrs,
                Ok(Control::Abort { reason }) => return Err(TcpError::Aborted { reason }),
                _ => {}
            },
            Some(_) => {}
            None => return Err(lost(0, &io::ErrorKind::UnexpectedEof.into())),
        }
    };
    let mut links: Vec<Option<RawLink>> = (0..addrs.len()).map(|_| None).collect();
    links[0] = Some(zero);
    for (rank, addr) in addrs.iter().enumerate().skip(1) {
        if rank as u32 != config.rank {
            links[rank] = Some(dial(&me, rank as u32, *addr, deadline, max_record)?);
        }
    }
    Ok(links)
}

/// Who a raw link says it is.
fn identity(config: &MeshConfig) -> Identity {
    Identity {
        rank: config.rank,
        size: config.size,
        cluster_id: config.cluster_id.clone(),
        secret: config.secret.clone(),
        agreed: config.all_agreed(),
    }
}

/// The largest record a raw link accepts (control messages may exceed frames).
fn max_record(config: &MeshConfig) -> usize {
    config.max_frame_bytes.max(1 << 20) + RECORD_OVERHEAD
}

fn dial(
    me: &Identity,
    rank: u32,
    addr: SocketAddr,
    deadline: Instant,
    max_record: usize,
) -> Result<RawLink, TcpError> {
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(source) if Instant::now() >= deadline => {
                return Err(TcpError::Connect { rank, addr, source });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let fail = |reason: HandshakeError| TcpError::Handshake { rank, addr, reason };
    let _ = stream.set_nodelay(true);
    let timeout = deadline.saturating_duration_since(Instant::now());
    let _ = stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
    let (handshake, greeting) = Handshake::connector(&me.secret).map_err(fail)?;
    let (keys, early) = handshake
        .run_blocking(&mut stream, greeting)
        .map_err(fail)?;
    let clone = |stream: &TcpStream| {
        stream.try_clone().map_err(|source| TcpError::Io {
            context: "cloning a socket".into(),
            source,
        })
    };
    let mut link = RawLink {
        sender: RawSender {
            stream: clone(&stream)?,
            sealer: keys.seal,
        },
        receiver: RawReceiver {
            stream,
            opener: keys.open,
            records: FrameReader::new(max_record),
            ready: Vec::new(),
        },
    };
    link.receiver.take(&early).map_err(|err| fail(err.into()))?;
    let hello = link
        .sender
        .sealer
        .seal(Kind::Control, &Control::Hello(me.hello()).encode());
    link.sender
        .stream
        .write_all(&hello)
        .map_err(|err| fail(err.into()))?;
    match link.receiver.next_record() {
        Ok(Some((Kind::Control, bytes))) => match Control::decode(&bytes) {
            Ok(Control::Hello(theirs)) => me.check(&theirs, Expect::Rank(rank)).map_err(fail)?,
            other => return Err(fail(HandshakeError::Malformed(format!("{other:?}")))),
        },
        Ok(other) => return Err(fail(HandshakeError::Malformed(format!("{other:?}")))),
        Err(err) => return Err(fail(err.into())),
    }
    Ok(link)
}

fn lost(rank: u32, err: &io::Error) -> TcpError {
    TcpError::Formation {
        reason: format!("the link to rank {rank} failed during formation: {err}"),
    }
}
