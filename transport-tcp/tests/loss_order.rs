//! What a peer sent before it went comes before the report that it is gone,
//! whichever of its connections carried it.
//!
//! Two ranks may hold two connections: one dialled each way, when both start
//! sending to each other at once. A rank that retires a peer (the job declared
//! it down) sends the news on its own connection, then closes both; the fenced
//! peer may see the other connection fail first (its write fails, or it reads
//! the end of the stream there). It must still deliver the news before it
//! reports the rank that sent it lost: otherwise it declares an innocent rank
//! down instead of learning that it was fenced itself.
//!
//! Rank 0 is a real mesh; rank 1 is played by hand over two raw links. Rank 0's
//! I/O thread is held in the events hook while the kernel is brought to the
//! state of the race (checked in /proc/net/tcp, not waited for with sleeps), so
//! the order in which it then finds things is fixed.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{TIMEOUT, config, recv};
use crossbeam_channel::{Receiver, Sender};
use herald_tcp::{Mesh, MeshConfig, MeshEvent, RawLink, Secret};

/// The news rank 1 sends on its second connection before it closes the first.
const NEWS: &[u8] = b"you were declared down";

/// Rank 1's first link fails with a reset, and rank 0 finds out by writing to
/// it (its write fails with ECONNRESET, as EPIPE in the job where this was
/// seen): the news waiting on rank 1's second link is delivered first.
#[test]
fn a_failed_write_delivers_what_the_peer_sent_on_its_other_connection_first() {
    let mut race = Race::start("loss-order-write");
    let first = race.first.take().expect("the first link");
    let first_addr = first.local_addr().expect("first link address");
    race.second.send_frame(NEWS).expect("send the news");
    first.reset().expect("reset the first link");
    race.kernel_holds_news();
    wait_until("rank 0's end of the first link to be reset", || {
        socket(race.coordinator, first_addr).is_none_or(|s| s.state != ESTABLISHED)
    });
    // The first frame rank 0 sends to rank 1 goes through the I/O thread, on the
    // first connection rank 1 opened: the one that was reset.
    race.mesh.send(1, b"to rank 1".to_vec());
    let events = race.release();
    assert_news_then_down(&events);
}

/// Rank 1 closes its first link cleanly, and rank 0 reads the end of that
/// stream before it looks at the second one: the news waiting there is
/// delivered before rank 1 is reported lost. The end of the stream arrives
/// with the frame before it, so one readiness event announces both: rank 0
/// must read on to the end then (no heartbeat or timeout would tell it later:
/// they are off here).
#[test]
fn a_closed_connection_delivers_what_the_peer_sent_on_its_other_connection_first() {
    let mut race = Race::start("loss-order-close");
    let mut first = race.first.take().expect("the first link");
    let first_addr = first.local_addr().expect("first link address");
    // Rank 0's loop finds connections in the order they became readable: the
    // first link's frame arrives before the news, so it is looked at first.
    first.send_frame(b"before").expect("send on the first link");
    wait_until("the first link's frame to reach rank 0", || {
        socket(race.coordinator, first_addr).is_some_and(|s| s.unread > 0)
    });
    race.second.send_frame(NEWS).expect("send the news");
    race.kernel_holds_news();
    first.close_write().expect("close the first link");
    wait_until("rank 0's end of the first link to see its end", || {
        socket(race.coordinator, first_addr).is_some_and(|s| s.state == CLOSE_WAIT)
    });
    let events = race.release();
    assert_eq!(events[0], b"before".to_vec(), "{events:?}");
    assert_news_then_down(&events);
    drop(first);
}

/// The sending side: a rank that retires a peer with two connections closes
/// the one it sent the news on first, and the other only once the peer has
/// read the first to its end and closed it, so the peer cannot see the other
/// end first while the news still waits (behind other frames) on the first.
#[test]
fn a_retired_peer_s_other_connection_closes_after_the_one_with_the_news() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let coordinator = listener.local_addr().expect("addr");
    let secret = Secret::random();
    let cluster = "loss-order-retire";
    let one = quiet(config(1, 3, coordinator, &secret, cluster));
    let raw = {
        let one = one.clone();
        thread::spawn(move || Mesh::establish_raw(one).expect("raw rank 1"))
    };
    let two = quiet(config(2, 3, coordinator, &secret, cluster));
    let two = thread::spawn(move || Mesh::establish(two).expect("rank 2"));
    let zero = quiet(config(0, 3, coordinator, &secret, cluster));
    let (mesh, events) = Mesh::establish_with_listener(zero, listener).expect("rank 0");
    let (two, two_events) = two.join().expect("rank 2 thread");
    let mut links = raw.join().expect("raw thread");
    let mut first = links[0].take().expect("rank 1's link to rank 0");
    let (mut second, second_addr) = second_link(&one, coordinator, &events);
    // Frames to rank 1 go on the first connection it opened.
    mesh.send(1, NEWS.to_vec());
    mesh.close_peer(1);
    // Commands are handled in order: once rank 2 has this, rank 1 is retired.
    mesh.send(2, b"marker".to_vec());
    match recv(&two_events, "the marker") {
        MeshEvent::Frame { from: 0, bytes } if bytes == b"marker" => {}
        other => panic!("expected rank 0's marker, got {other:?}"),
    }
    let state = socket(coordinator, second_addr).map(|s| s.state);
    assert_eq!(
        state,
        Some(ESTABLISHED),
        "rank 0 closed the second connection before rank 1 closed the first"
    );
    first.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_eq!(first.recv_frame().expect("the news"), Some(NEWS.to_vec()));
    assert_eq!(first.recv_frame().expect("the end"), None);
    first.close_write().expect("close the first link");
    // Then the second closes too, with nothing on it.
    second.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    assert_eq!(second.recv_frame().expect("the end"), None);
    assert!(
        events.try_recv().is_err(),
        "a retired peer reported nothing"
    );
    // Rank 1 leaves, so the others' shutdown need not wait for it.
    drop((first, second, links));
    two.shutdown();
    mesh.shutdown();
}

/// A real rank 0 and a hand-played rank 1 with two connections to it, rank 0's
/// I/O thread held in its events hook.
struct Race {
    mesh: Mesh,
    events: Receiver<MeshEvent>,
    coordinator: SocketAddr,
    /// The link rank 1 formed the job on (rank 0 sends to rank 1 on it).
    first: Option<RawLink>,
    /// A second link rank 1 opened later.
    second: RawLink,
    second_addr: SocketAddr,
    release: Sender<()>,
}

impl Race {
    fn start(cluster: &str) -> Race {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let coordinator = listener.local_addr().expect("addr");
        let secret = Secret::random();
        let one = quiet(config(1, 2, coordinator, &secret, cluster));
        let raw = {
            let one = one.clone();
            thread::spawn(move || Mesh::establish_raw(one).expect("raw rank 1"))
        };
        let zero = quiet(config(0, 2, coordinator, &secret, cluster));
        let (mesh, events) = Mesh::establish_with_listener(zero, listener).expect("rank 0");
        let mut links = raw.join().expect("raw thread");
        let first = links[0].take().expect("rank 1's link to rank 0");
        // The hook holds rank 0's I/O thread after its second event (the pause
        // below), until released; nothing else makes events here.
        let (release, gate) = crossbeam_channel::bounded::<()>(1);
        let calls = AtomicUsize::new(0);
        mesh.on_events(Arc::new(move || {
            if calls.fetch_add(1, Ordering::SeqCst) + 1 == 2 {
                let _ = gate.recv_timeout(TIMEOUT);
            }
        }));
        let (mut second, second_addr) = second_link(&one, coordinator, &events);
        second.send_frame(b"pause").expect("send the pause");
        match recv(&events, "the pause") {
            MeshEvent::Frame { from: 1, bytes } if bytes == b"pause" => {}
            other => panic!("expected the pause from rank 1, got {other:?}"),
        }
        // Rank 0's I/O thread is in the hook (or on its way, with nothing to do
        // before it), having read everything the second link had brought.
        Race {
            mesh,
            events,
            coordinator,
            first: Some(first),
            second,
            second_addr,
            release,
        }
    }

    /// Waits until the news is in rank 0's receive queue of the second link.
    fn kernel_holds_news(&self) {
        wait_until("the news to reach rank 0", || {
            socket(self.coordinator, self.second_addr).is_some_and(|s| s.unread > 0)
        });
    }

    /// Lets rank 0's I/O thread go on; returns the frames rank 0 delivered from
    /// then on, up to the report that rank 1 is lost, which ends them as "DOWN".
    fn release(self) -> Vec<Vec<u8>> {
        self.release.send(()).expect("release the I/O thread");
        let mut seen = Vec::new();
        loop {
            let event = self.events.recv_timeout(TIMEOUT);
            let event = event.unwrap_or_else(|err| {
                panic!("waiting for rank 1 to be reported lost, after {seen:?}: {err}")
            });
            match event {
                MeshEvent::Frame { from: 1, bytes } => seen.push(bytes),
                MeshEvent::PeerDown { node: 1, .. } => {
                    seen.push(b"DOWN".to_vec());
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        self.mesh.shutdown();
        seen
    }
}

/// No heartbeats and no silence detection: nothing but the test's own steps
/// happens on the links.
fn quiet(mut config: MeshConfig) -> MeshConfig {
    config.heartbeat = Duration::ZERO;
    config.peer_timeout = Duration::ZERO;
    config
}

/// Rank 1 opens a second link to rank 0 and sends a frame on it; returns once
/// rank 0 delivered it (so rank 0 holds both connections), with its address.
fn second_link(
    one: &MeshConfig,
    coordinator: SocketAddr,
    events: &Receiver<MeshEvent>,
) -> (RawLink, SocketAddr) {
    let mut second = RawLink::dial(one, 0, coordinator).expect("a second link to rank 0");
    let addr = second.local_addr().expect("second link address");
    second
        .send_frame(b"second")
        .expect("send on the second link");
    match recv(events, "the frame on the second link") {
        MeshEvent::Frame { from: 1, bytes } if bytes == b"second" => {}
        other => panic!("expected rank 1's frame, got {other:?}"),
    }
    (second, addr)
}

fn assert_news_then_down(seen: &[Vec<u8>]) {
    let text: Vec<String> = seen
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(
        &seen[seen.len().saturating_sub(2)..],
        [NEWS.to_vec(), b"DOWN".to_vec()],
        "the news rank 1 sent before it went must come before its loss: {text:?}"
    );
}

const ESTABLISHED: u8 = 0x01;
const CLOSE_WAIT: u8 = 0x08;

/// One TCP socket as /proc/net/tcp lists it.
struct Socket {
    state: u8,
    /// Bytes received and not yet read.
    unread: u64,
}

/// The IPv4 socket from `local` to `remote` in this network namespace, if the
/// kernel lists one (a socket that was reset is no longer listed).
fn socket(local: SocketAddr, remote: SocketAddr) -> Option<Socket> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let (local, remote) = (proc_addr(local), proc_addr(remote));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
        let unread = u64::from_str_radix(fields.get(4)?.split_once(':')?.1, 16).ok()?;
        Some(Socket { state, unread })
    })
}

/// An address as /proc/net/tcp writes it: the IPv4 address's bytes as a
/// little-endian number, and the port, in hex.
fn proc_addr(addr: SocketAddr) -> String {
    let SocketAddr::V4(addr) = addr else {
        panic!("an IPv4 address expected: {addr}");
    };
    format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(addr.ip().octets()),
        addr.port()
    )
}

/// Polls the kernel's state until `ready` holds, at most [`TIMEOUT`].
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let until = Instant::now() + TIMEOUT;
    while !ready() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}
