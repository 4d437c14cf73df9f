//! Meshes of 1, 2 and 4 ranks in one process: formation, FIFO delivery between
//! every pair, statistics, peer loss and orderly shutdown.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{TIMEOUT, assert_all_pairs_work, config, expect_frame, form, recv};
use herald_tcp::{Mesh, MeshEvent, Secret, TcpError};

/// Frame `seq` from `from` to `to`; sizes vary (including empty and > one buffer).
fn frame(from: u32, to: u32, seq: u32) -> Vec<u8> {
    let len = match seq % 5 {
        0 => 0,
        1 => 12,
        2 => 64,
        3 => 1000,
        _ => 70_000, // larger than the 64 KiB socket buffers of a link
    };
    let mut bytes = vec![(seq % 251) as u8; len.max(12)];
    bytes[..4].copy_from_slice(&from.to_le_bytes());
    bytes[4..8].copy_from_slice(&to.to_le_bytes());
    bytes[8..12].copy_from_slice(&seq.to_le_bytes());
    if len == 0 {
        bytes.clear();
    }
    bytes
}

/// Every rank sends `per_pair` frames to every other rank, from a thread per rank
/// so that sends and receives interleave; each rank checks per-sender order.
fn exchange(size: u32, per_pair: u32) {
    let meshes = form(size, &format!("fifo-{size}"), |_| {});
    std::thread::scope(|scope| {
        for (mesh, events) in &meshes {
            scope.spawn(move || {
                for seq in 0..per_pair {
                    for to in (0..size).filter(|&to| to != mesh.rank()) {
                        mesh.send(to, frame(mesh.rank(), to, seq));
                    }
                }
                // Empty frames carry no header: count them per sender instead.
                let mut next: BTreeMap<u32, u32> = BTreeMap::new();
                for _ in 0..per_pair * (size - 1) {
                    let (from, bytes) = match recv(events, "a frame") {
                        MeshEvent::Frame { from, bytes } => (from, bytes),
                        other => panic!("rank {}: unexpected {other:?}", mesh.rank()),
                    };
                    let seq = next.entry(from).or_insert(0);
                    assert_eq!(
                        bytes,
                        frame(from, mesh.rank(), *seq),
                        "frame {seq} from {from}"
                    );
                    *seq += 1;
                }
                let expected: BTreeMap<u32, u32> = (0..size)
                    .filter(|&r| r != mesh.rank())
                    .map(|r| (r, per_pair))
                    .collect();
                assert_eq!(next, expected);
            });
        }
    });
    for (mesh, _) in &meshes {
        let stats = mesh.stats();
        assert_eq!(stats.frames_sent, u64::from(per_pair * (size - 1)));
        assert_eq!(stats.frames_received, u64::from(per_pair * (size - 1)));
        assert_eq!(stats.per_peer.len() as u32, size - 1);
        let sent: u64 = stats.per_peer.iter().map(|p| p.bytes_sent).sum();
        assert_eq!(sent, stats.bytes_sent);
    }
    for (mesh, _) in meshes {
        mesh.shutdown();
    }
}

#[test]
fn a_single_rank_mesh_forms_and_delivers_to_itself() {
    let meshes = form(1, "solo", |_| {});
    let (mesh, events) = &meshes[0];
    assert_eq!((mesh.rank(), mesh.size()), (0, 1));
    mesh.send(0, b"self".to_vec());
    expect_frame(events, 0, b"self");
    assert_eq!(mesh.stats().frames_sent, 0);
}

#[test]
fn two_ranks_deliver_in_fifo_order() {
    exchange(2, 300);
}

#[test]
fn four_ranks_deliver_in_fifo_order_between_every_pair() {
    exchange(4, 150);
}

/// A rank whose owner says "do not poll" (its workers are busy with user code)
/// still delivers every frame: its I/O thread sleeps until each arrives. The
/// gate is asked while the thread polls after activity, and not otherwise.
#[test]
fn a_closed_poll_gate_is_asked_and_frames_still_arrive() {
    let meshes = form(2, "gate", |_| {});
    let asked = Arc::new(AtomicU64::new(0));
    let (zero, zero_events) = &meshes[0];
    let (one, one_events) = &meshes[1];
    let counted = Arc::clone(&asked);
    assert!(one.set_poll_gate(Arc::new(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        false
    })));
    assert!(
        !one.set_poll_gate(Arc::new(|| true)),
        "a second gate replaced the first"
    );
    for round in 0..200u32 {
        zero.send(1, round.to_le_bytes().to_vec());
        expect_frame(one_events, 0, &round.to_le_bytes());
        one.send(0, round.to_le_bytes().to_vec());
        expect_frame(zero_events, 1, &round.to_le_bytes());
    }
    // Rank 1's I/O thread had activity 200 times and asks after each (unless
    // its poll window had passed already, a slow machine's case) before it
    // decides whether to poll on.
    assert!(
        asked.load(Ordering::Relaxed) >= 100,
        "asked {asked:?} times"
    );
    for (mesh, _) in meshes {
        mesh.shutdown();
    }
}

#[test]
fn a_lost_peer_is_reported_once_and_the_rest_keep_working() {
    let mut meshes = form(3, "peer-down", |_| {});
    let (gone, _gone_events) = meshes.pop().expect("three meshes");
    gone.shutdown();
    // Rank 0 holds rank 2's link from formation and sees it close; rank 1 has no
    // link to rank 2 (links are made on demand) and learns when it tries to send.
    for (mesh, events) in &meshes {
        mesh.send(2, b"into the void".to_vec());
        match recv(events, "the loss of rank 2") {
            MeshEvent::PeerDown { node: 2, reason } => {
                assert!(reason.contains("rank 2"), "{reason}")
            }
            other => panic!(
                "rank {}: expected PeerDown for 2, got {other:?}",
                mesh.rank()
            ),
        }
        mesh.send(2, b"into the void".to_vec()); // dropped silently
    }
    assert_all_pairs_work(&meshes);

    // Shutting rank 0 down reports nothing on its own side; rank 1 sees rank 0 go.
    let (one, one_events) = meshes.pop().expect("rank 1");
    let (zero, zero_events) = meshes.pop().expect("rank 0");
    zero.shutdown();
    assert!(
        zero_events.recv_timeout(TIMEOUT).is_err(),
        "rank 0 reported an event for its own shutdown"
    );
    assert!(matches!(
        recv(&one_events, "the loss of rank 0"),
        MeshEvent::PeerDown { node: 0, .. }
    ));
    one.shutdown();
    let rest: Vec<MeshEvent> = one_events.iter().collect();
    assert!(rest.is_empty(), "extra events after shutdown: {rest:?}");
}

#[test]
fn frames_queued_before_shutdown_are_delivered() {
    let mut meshes = form(2, "drain", |_| {});
    let (one, one_events) = meshes.pop().expect("rank 1");
    let (zero, _) = meshes.pop().expect("rank 0");
    for seq in 0..1000u32 {
        zero.send(1, seq.to_le_bytes().to_vec());
    }
    zero.shutdown();
    for seq in 0..1000u32 {
        expect_frame(&one_events, 0, &seq.to_le_bytes());
    }
    assert!(matches!(
        recv(&one_events, "the loss of rank 0"),
        MeshEvent::PeerDown { node: 0, .. }
    ));
    one.shutdown();
}

#[test]
fn formation_times_out_naming_the_missing_ranks() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut config = config(
        0,
        3,
        listener.local_addr().expect("addr"),
        &Secret::random(),
        "lonely",
    );
    config.establish_timeout = Duration::from_millis(300);
    match Mesh::establish_with_listener(config, listener) {
        Err(err @ TcpError::Timeout { .. }) => {
            let TcpError::Timeout { ref missing, .. } = err else {
                unreachable!()
            };
            assert_eq!(missing, &[1, 2]);
            assert!(
                err.to_string().contains("same size, coordinator, secret"),
                "{err}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn invalid_configurations_are_refused_up_front() {
    let secret = Secret::random();
    let addr = "127.0.0.1:1".parse().expect("addr");
    let mut bad = config(3, 3, addr, &secret, "c");
    assert!(matches!(
        Mesh::establish(bad.clone()),
        Err(TcpError::InvalidConfig { .. })
    ));
    bad.rank = 0;
    bad.max_frame_bytes = 0;
    assert!(matches!(
        Mesh::establish(bad.clone()),
        Err(TcpError::InvalidConfig { .. })
    ));
    bad.max_frame_bytes = 10;
    bad.cluster_id = "x".repeat(300);
    assert!(matches!(
        Mesh::establish(bad.clone()),
        Err(TcpError::InvalidConfig { .. })
    ));
    // Timing that cannot work is refused saying what to change.
    bad.cluster_id = "c".into();
    bad.peer_timeout = Duration::from_secs(5);
    bad.heartbeat = Duration::ZERO;
    match Mesh::establish(bad.clone()) {
        Err(TcpError::InvalidConfig { reason }) => {
            assert!(reason.contains("no heartbeats"), "{reason}");
            assert!(reason.contains("--heartbeat-ms"), "{reason}");
            assert!(reason.contains("peer timeout of 0"), "{reason}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| "a mesh")),
    }
    bad.heartbeat = Duration::from_secs(3);
    match Mesh::establish(bad.clone()) {
        Err(TcpError::InvalidConfig { reason }) => {
            assert!(reason.contains("at least twice"), "{reason}");
            assert!(reason.contains("--peer-timeout-ms"), "{reason}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| "a mesh")),
    }
    bad.heartbeat = Duration::from_secs(1);
    // A size no job can have is refused before anything is allocated for it
    // (four billion ranks would need hundreds of gigabytes of rank 0's state).
    bad.cluster_id = "c".into();
    bad.size = 4_000_000_000;
    match Mesh::establish(bad) {
        Err(TcpError::InvalidConfig { reason }) => {
            assert!(reason.contains("size is 4000000000"), "{reason}");
            assert!(
                reason.contains(&herald_tcp::MAX_RANKS.to_string()),
                "{reason}"
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| "a mesh")),
    }
}

#[test]
fn the_mesh_is_shareable_and_the_config_never_prints_the_secret() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Mesh>();
    let secret = Secret::random();
    let config = config(0, 1, "127.0.0.1:1".parse().expect("addr"), &secret, "c");
    assert!(!format!("{config:?}").contains(&secret.to_hex()[..16]));
}

#[test]
fn a_process_joins_a_running_job_and_every_rank_reaches_it() {
    let secret = Secret::random();
    let meshes = common::form_with(2, "join", &secret, |_| {});
    let mut joining = config(0, 0, meshes[0].0.local_addr(), &Secret::random(), "join");
    let refused = Mesh::join(joining.clone());
    assert!(
        refused.is_err(),
        "a joiner with another secret was admitted"
    );
    joining.secret = secret;
    let (joiner, joiner_events) = Mesh::join(joining).expect("the joiner is admitted");
    assert_eq!((joiner.rank(), joiner.size()), (2, 3));
    match recv(&meshes[0].1, "the join") {
        MeshEvent::Joined { node: 2 } => {}
        other => panic!("expected Joined {{ node: 2 }}, got {other:?}"),
    }
    // Rank 1 never heard of rank 2: it asks rank 0 where it listens.
    meshes[1].0.send(2, b"welcome".to_vec());
    expect_frame(&joiner_events, 1, b"welcome");
    joiner.send(1, b"thanks".to_vec());
    expect_frame(&meshes[1].1, 2, b"thanks");
    joiner.send(0, b"hello zero".to_vec());
    expect_frame(&meshes[0].1, 2, b"hello zero");
    meshes[0].0.send(2, b"hello two".to_vec());
    expect_frame(&joiner_events, 0, b"hello two");
    joiner.shutdown();
    for (mesh, _) in meshes {
        mesh.shutdown();
    }
}

/// Processes joining at once are reported to rank 0's owner in the order of the
/// ranks they were given, every one of them: the owner (herald's core) takes an
/// admission to mean that every rank below it was given out, and declares a
/// lower one that it has not seen absent. (A joiner gets its rank when its
/// hello arrives and is admitted when its address does, and these can cross;
/// about one burst in six crossed here before joins were reported in order.)
#[test]
fn joiners_arriving_at_once_are_reported_in_rank_order() {
    const JOINERS: u32 = 12;
    const BURSTS: u32 = 4;
    let secret = Secret::random();
    let meshes = common::form_with(2, "joins", &secret, |_| {});
    let coordinator = meshes[0].0.local_addr();
    let joining = AtomicBool::new(true);
    let joined: Vec<Mesh> = std::thread::scope(|scope| {
        // Rank 0's I/O thread is kept busy meanwhile (as by a job's traffic), so
        // that the joiners' hellos and registrations interleave. It stops when
        // this closure ends, also by a failed assertion.
        let (busy, joining) = (&meshes[1].0, &joining);
        let _stop = Stop(joining);
        scope.spawn(move || {
            while joining.load(Ordering::Relaxed) {
                busy.send(0, vec![0; 64 << 10]);
            }
        });
        let mut joined = Vec::new();
        for burst in 0..BURSTS {
            let first = 2 + burst * JOINERS;
            let start = Barrier::new(JOINERS as usize);
            let arrivals: Vec<Mesh> = std::thread::scope(|burst_scope| {
                let joiners: Vec<_> = (0..JOINERS)
                    .map(|_| {
                        let config = config(0, 0, coordinator, &secret, "joins");
                        let start = &start;
                        burst_scope.spawn(move || {
                            start.wait();
                            Mesh::join(config).expect("every joiner is admitted").0
                        })
                    })
                    .collect();
                joiners
                    .into_iter()
                    .map(|j| j.join().expect("joiner thread"))
                    .collect()
            });
            let mut ranks: Vec<u32> = arrivals.iter().map(Mesh::rank).collect();
            ranks.sort_unstable();
            assert_eq!(ranks, (first..first + JOINERS).collect::<Vec<_>>());
            let reported: Vec<u32> = meshes[0]
                .1
                .iter()
                .filter_map(|event| match event {
                    MeshEvent::Joined { node } => Some(node),
                    MeshEvent::Frame { from: 1, .. } => None,
                    other => panic!("expected Joined, got {other:?}"),
                })
                .take(JOINERS as usize)
                .collect();
            assert_eq!(
                reported, ranks,
                "burst {burst}: joins reported out of rank order"
            );
            joined.extend(arrivals);
        }
        joined
    });
    for mesh in joined {
        mesh.shutdown();
    }
    for (mesh, _) in meshes {
        mesh.shutdown();
    }
}

/// Clears a flag when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
