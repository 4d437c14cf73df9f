//! Heartbeats, silence detection, retiring a link, and settings agreed at set-up.

mod common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{TIMEOUT, config, form, recv};
use herald_tcp::{Mesh, MeshEvent, Secret, TcpError};

const HEARTBEAT: Duration = Duration::from_millis(50);
const PEER_TIMEOUT: Duration = Duration::from_millis(400);

/// The tests here run one at a time: their peer timeouts are short, and one of
/// them floods a link at full speed, which would take the cores from the
/// others' heartbeats.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fast(config: &mut herald_tcp::MeshConfig) {
    config.heartbeat = HEARTBEAT;
    config.peer_timeout = PEER_TIMEOUT;
}

/// Idle links stay up: heartbeats keep each end hearing from the other for many
/// peer timeouts with no frame sent, and no heartbeat is ever delivered as a frame.
#[test]
fn idle_links_stay_up_on_heartbeats_alone() {
    let _serial = one_at_a_time();
    let meshes = form(3, "idle", fast);
    // Nothing may happen while the links idle for five peer timeouts.
    match meshes[0].1.recv_timeout(5 * PEER_TIMEOUT) {
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        other => panic!("an idle link produced {other:?}"),
    }
    for (rank, (_, events)) in meshes.iter().enumerate() {
        assert!(events.try_recv().is_err(), "rank {rank} saw an event");
    }
    common::assert_all_pairs_work(&meshes);
}

/// A peer that sends the start of a frame and then nothing is reported down
/// after the peer timeout, with how far its frame got.
#[test]
fn a_peer_stalled_mid_frame_is_reported_down() {
    let _serial = one_at_a_time();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let coordinator = listener.local_addr().expect("addr");
    let secret = Secret::random();
    let mut one = config(1, 2, coordinator, &secret, "stall");
    fast(&mut one);
    let raw = thread::spawn(move || Mesh::establish_raw(one).expect("raw rank 1"));
    let mut zero = config(0, 2, coordinator, &secret, "stall");
    fast(&mut zero);
    let (mesh, events) = Mesh::establish_with_listener(zero, listener).expect("rank 0");
    let mut streams = raw.join().expect("raw thread");
    let mut stream = streams[0].take().expect("link to rank 0");
    stream.write_raw(&64u32.to_le_bytes()).expect("prefix");
    stream.write_raw(&[1u8; 10]).expect("part of the body");
    let started = Instant::now();
    match recv(&events, "rank 1 reported down") {
        MeshEvent::PeerDown { node: 1, reason } => {
            assert!(
                reason.contains("in the middle of a frame (14 of 68 bytes received)"),
                "{reason}"
            );
        }
        other => panic!("expected PeerDown for rank 1, got {other:?}"),
    }
    assert!(started.elapsed() >= PEER_TIMEOUT / 2, "reported too early");
    // The news queued before retiring still reaches the silent peer, then EOF.
    mesh.send(1, b"you are down".to_vec());
    mesh.close_peer(1);
    let (_, mut receiver) = stream.split();
    receiver.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = receiver.recv_frame() {
        frames.push(frame);
    }
    assert_eq!(frames, [b"you are down".to_vec()]);
    assert!(events.try_recv().is_err(), "nothing after the report");
    mesh.shutdown();
}

/// A retired link delivers nothing more and reports no PeerDown, even when the
/// peer then closes it.
#[test]
fn a_retired_link_reports_nothing_more() {
    let _serial = one_at_a_time();
    let meshes = form(2, "retire", |_| {});
    meshes[0].0.close_peer(1);
    meshes[1].0.send(0, b"late".to_vec());
    // Rank 1 sees rank 0 close the link; rank 0 sees nothing at all.
    match recv(&meshes[1].1, "rank 0 closing") {
        MeshEvent::PeerDown { node: 0, .. } => {}
        other => panic!("expected PeerDown for rank 0, got {other:?}"),
    }
    assert!(
        meshes[0]
            .1
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "a retired link delivered or reported something"
    );
}

/// Ranks that disagree on an agreed setting do not form a mesh; both say which
/// setting, both values, and what to do.
#[test]
fn a_disagreement_fails_formation_naming_both_values() {
    let _serial = one_at_a_time();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let coordinator = listener.local_addr().expect("addr");
    let secret = Secret::random();
    let mut one = config(1, 2, coordinator, &secret, "agree");
    one.agree("fan-out", 8, "--fanout");
    let other = thread::spawn(move || Mesh::establish(one).map(|_| ()));
    let mut zero = config(0, 2, coordinator, &secret, "agree");
    zero.agree("fan-out", 4, "--fanout");
    let zero = Mesh::establish_with_listener(zero, listener).map(|_| ());
    let one = other.join().expect("rank 1 thread");
    let text = |r: Result<(), TcpError>| r.expect_err("formation must fail").to_string();
    let (zero, one) = (text(zero), text(one));
    assert!(
        zero.contains(
            "node 1 uses fan-out 8, this node 4: start every rank with the same --fanout"
        ),
        "{zero}"
    );
    assert!(one.contains("node 0 uses fan-out 4, this node 8"), "{one}");
}

/// A peer that takes no frames cannot grow this rank's memory without bound:
/// once more than `max_queued_bytes` wait for it, it is reported down.
#[test]
fn a_peer_that_reads_nothing_is_dropped_at_the_queue_bound() {
    let _serial = one_at_a_time();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let coordinator = listener.local_addr().expect("addr");
    let secret = Secret::random();
    let bounded = |config: &mut herald_tcp::MeshConfig| {
        config.max_frame_bytes = 64 << 10;
        config.max_queued_bytes = 1 << 20;
    };
    let mut one = config(1, 2, coordinator, &secret, "bound");
    bounded(&mut one);
    let raw = thread::spawn(move || Mesh::establish_raw(one).expect("raw rank 1"));
    let mut zero = config(0, 2, coordinator, &secret, "bound");
    bounded(&mut zero);
    let (mesh, events) = Mesh::establish_with_listener(zero, listener).expect("rank 0");
    // Rank 1 holds its link open and never reads from it.
    let links = raw.join().expect("raw thread");
    // Far more than the bound plus what the kernel's socket buffers hold.
    let frame = vec![7u8; 64 << 10];
    for _ in 0..(64 << 20) / frame.len() {
        mesh.send(1, frame.clone());
    }
    let reason = match recv(&events, "the slow peer reported down") {
        MeshEvent::PeerDown { node: 1, reason } => reason,
        other => panic!("expected PeerDown for rank 1, got {other:?}"),
    };
    assert!(
        reason.contains("does not take frames fast enough") && reason.contains("max_queued_bytes"),
        "{reason}"
    );
    drop(links);
    mesh.shutdown();
}

/// A peer that sends without pause does not starve the other links: rank 0
/// reads every connection in turn, so it keeps hearing rank 2's heartbeats
/// (and never takes rank 2 for silent) while rank 1 floods it for many peer
/// timeouts. Rank 0 handles each frame on its I/O thread for a millisecond (as
/// the runtime does, through the events hook), so it reads slower than rank 1
/// writes; rank 1 keeps up to `IN_FLIGHT` frames (128 MiB) that rank 0 has not
/// yet delivered, which keeps rank 0's socket full, and half the queue bound
/// (256 MiB): a sender that outruns its reader past that bound declares it down,
/// by design, which an unpaced flood does.
#[test]
fn a_flooding_peer_does_not_silence_the_others() {
    const IN_FLIGHT: u64 = 512;
    const HANDLING: Duration = Duration::from_millis(1);
    let _serial = one_at_a_time();
    let meshes = form(3, "flood", fast);
    meshes[0].0.on_events(std::sync::Arc::new(|| {
        // Work, not a wait: the I/O thread is busy with the frame.
        let start = Instant::now();
        while start.elapsed() < HANDLING {
            std::hint::spin_loop();
        }
    }));
    let flooding = AtomicBool::new(true);
    let delivered = AtomicU64::new(0);
    let flood = vec![7u8; 256 << 10];
    let zero_events = &meshes[0].1;
    // Anything but the flood ends the test, named without the flood's bytes.
    let flood_or_nothing = |event: Result<MeshEvent, _>| match event {
        Ok(MeshEvent::Frame { from: 1, .. }) => {
            delivered.fetch_add(1, Ordering::Relaxed);
            true
        }
        Ok(MeshEvent::Frame { from, bytes }) => {
            panic!("a frame of {} bytes from {from}", bytes.len())
        }
        Ok(other) => panic!("rank 0, flooded by rank 1, saw {other:?}"),
        Err(_) => false,
    };
    thread::scope(|scope| {
        let (one, flooding, flood, delivered) = (&meshes[1].0, &flooding, &flood, &delivered);
        let _stop = Stop(flooding);
        scope.spawn(move || {
            let mut sent = 0u64;
            while flooding.load(Ordering::Relaxed) {
                if sent - delivered.load(Ordering::Relaxed) < IN_FLIGHT {
                    one.send(0, flood.clone());
                    sent += 1;
                } else {
                    thread::yield_now();
                }
            }
        });
        let until = Instant::now() + 8 * PEER_TIMEOUT;
        while Instant::now() < until {
            flood_or_nothing(zero_events.recv_timeout(PEER_TIMEOUT));
        }
        assert!(
            delivered.load(Ordering::Relaxed) > 0,
            "the flood never arrived"
        );
    });
    // The rest of the flood, then every link still works.
    while flood_or_nothing(zero_events.recv_timeout(PEER_TIMEOUT)) {}
    common::assert_all_pairs_work(&meshes);
}

/// Clears a flag when dropped (also when an assertion fails).
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
