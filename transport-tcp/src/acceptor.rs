//! The listener: accepts connections for as long as the mesh lives, authenticates
//! each on its own short-lived thread, and hands authenticated links to formation.
//! Junk (scanners, garbage, stalls, wrong secrets) is logged and closed; it never
//! reaches the mesh and never blocks a legitimate connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::config::Agreed;
use crate::error::HandshakeError;
use crate::handshake::{Identity, accept_side};
use crate::secret::Secret;

/// At most this many handshakes run at once; further connections are closed at
/// once, so a flood of idle connections costs a bounded number of threads.
const MAX_PENDING_HANDSHAKES: usize = 64;
/// Pause after a failing `accept` (e.g. out of file descriptors) so it cannot spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What every thread needs to know about this rank.
pub(crate) struct Local {
    pub(crate) rank: u32,
    pub(crate) size: u32,
    pub(crate) cluster_id: String,
    pub(crate) secret: Secret,
    pub(crate) handshake_timeout: Duration,
    /// Every setting both ends of a link compare.
    pub(crate) agreed: Vec<Agreed>,
}

impl Local {
    pub(crate) fn identity(&self) -> Identity<'_> {
        Identity {
            rank: self.rank,
            size: self.size,
            cluster_id: &self.cluster_id,
            secret: &self.secret,
            agreed: &self.agreed,
        }
    }
}

/// What the acceptor hands to formation: an authenticated link, or an
/// authenticated rank whose settings disagree with ours (which fails formation).
pub(crate) type Accepted = Result<Incoming, Refused>;

/// A higher rank that proved the secret but disagrees on a shared setting.
pub(crate) struct Refused {
    pub(crate) from: SocketAddr,
    pub(crate) rank: u32,
    pub(crate) reason: HandshakeError,
}

/// An authenticated incoming connection from a higher rank.
pub(crate) struct Incoming {
    pub(crate) rank: u32,
    pub(crate) stream: TcpStream,
    pub(crate) from: SocketAddr,
}

/// The running accept loop.
pub(crate) struct Acceptor {
    stop: Arc<AtomicBool>,
    wake: SocketAddr,
    handle: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Starts accepting on `listener`; authenticated links go to `incoming` until
    /// its receiver is dropped, after which they are refused (links never reconnect).
    pub(crate) fn start(
        listener: TcpListener,
        local: Arc<Local>,
        incoming: Sender<Accepted>,
    ) -> std::io::Result<Acceptor> {
        let wake = wake_addr(listener.local_addr()?);
        let stop = Arc::new(AtomicBool::new(false));
        let handle = thread::Builder::new()
            .name(format!("herald-tcp-accept{}", local.rank))
            .spawn({
                let stop = Arc::clone(&stop);
                move || accept_loop(&listener, &stop, &local, &incoming)
            })?;
        Ok(Acceptor {
            stop,
            wake,
            handle: Some(handle),
        })
    }

    /// Stops the loop and waits for it. Handshakes in progress finish on their own
    /// within the handshake timeout.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // accept() has no timeout: a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    local: &Arc<Local>,
    incoming: &Sender<Accepted>,
) {
    let pending = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let (stream, from) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(%err, "herald-tcp: accept failed; retrying");
                thread::sleep(ACCEPT_ERROR_BACKOFF);
                continue;
            }
        };
        if pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_HANDSHAKES {
            pending.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%from, "herald-tcp: too many handshakes in progress; closing connection");
            continue;
        }
        let spawned = thread::Builder::new()
            .name("herald-tcp-handshake".into())
            .spawn({
                let (local, incoming, pending) =
                    (Arc::clone(local), incoming.clone(), Arc::clone(&pending));
                move || {
                    authenticate(stream, from, &local, &incoming);
                    pending.fetch_sub(1, Ordering::AcqRel);
                }
            });
        if let Err(err) = spawned {
            pending.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%from, %err, "herald-tcp: cannot start a handshake thread; closing connection");
        }
    }
}

fn authenticate(
    mut stream: TcpStream,
    from: SocketAddr,
    local: &Local,
    incoming: &Sender<Accepted>,
) {
    // A peer that stalls mid-handshake is cut off by these timeouts.
    let timeouts = stream
        .set_read_timeout(Some(local.handshake_timeout))
        .and_then(|()| stream.set_write_timeout(Some(local.handshake_timeout)));
    if let Err(err) = timeouts {
        tracing::warn!(%from, %err, "herald-tcp: cannot set handshake timeouts; closing connection");
        return;
    }
    let rank = match accept_side(&mut stream, &local.identity()) {
        Ok(rank) => rank,
        Err(HandshakeError::Disagreement(disagreement)) => {
            let peer = disagreement.peer;
            let reason = HandshakeError::Disagreement(disagreement);
            tracing::error!(%from, "herald-tcp: rank {} refused rank {peer}: {reason}", local.rank);
            let _ = incoming.send(Err(Refused {
                from,
                rank: peer,
                reason,
            }));
            return;
        }
        Err(reason) => {
            tracing::warn!(
                %from, rank = local.rank, cluster = %local.cluster_id,
                "herald-tcp: rank {} rejected a connection from {from}: {reason}", local.rank
            );
            return;
        }
    };
    if incoming.send(Ok(Incoming { rank, stream, from })).is_err() {
        tracing::warn!(
            %from, rank,
            "herald-tcp: rank {rank} authenticated after the mesh formed; links never \
             reconnect (crash-stop), so the connection is closed"
        );
    }
}

/// Where to connect to wake our own listener: an unspecified bind address is not
/// connectable, its loopback is.
fn wake_addr(listening: SocketAddr) -> SocketAddr {
    let ip = match listening.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listening.port())
}
