//! Hostile and misconfigured peers: wrong secret, cluster or version, garbage,
//! stalls, duplicate ranks and oversized frames. Each is refused with a clear,
//! logged reason and leaves the legitimate links alone.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::{
    assert_all_pairs_work, assert_closed_by_peer, capture_logs, config, form, raw_send, recv,
    wait_for_log,
};
use herald_tcp::{
    HandshakeError, Mesh, MeshConfig, MeshEvent, Secret, TcpError, WIRE_MAGIC, WIRE_VERSION,
};

/// What a thread that forms a mesh hands back.
type Formation =
    thread::JoinHandle<Result<(Mesh, crossbeam_channel::Receiver<MeshEvent>), TcpError>>;

#[test]
fn a_wrong_secret_is_refused_and_the_real_rank_still_joins() {
    let (template, zero) = rank_zero("secret-test");
    let mut impostor = as_rank_one(&template);
    impostor.secret = Secret::random();
    match Mesh::establish(impostor) {
        Err(
            err @ TcpError::Handshake {
                rank: 0,
                reason: HandshakeError::Rejected,
                ..
            },
        ) => {
            assert!(err.to_string().contains("HERALD_SECRET"), "{err}");
        }
        other => panic!("expected a rejected handshake, got {other:?}"),
    }
    wait_for_log(&["cluster=secret-test", "did not verify"]);
    the_real_rank_one_joins(&template, zero);
}

#[test]
fn a_wrong_cluster_id_is_refused_with_both_names() {
    let (template, zero) = rank_zero("blue-team");
    let mut stranger = as_rank_one(&template);
    stranger.cluster_id = "red-team".into();
    match Mesh::establish(stranger) {
        Err(TcpError::Handshake {
            reason: HandshakeError::ClusterMismatch { ours, theirs },
            ..
        }) => {
            assert_eq!((ours.as_str(), theirs.as_str()), ("red-team", "blue-team"));
        }
        other => panic!("expected a cluster mismatch, got {other:?}"),
    }
    wait_for_log(&["cluster=blue-team", "\"red-team\""]);
    the_real_rank_one_joins(&template, zero);
}

#[test]
fn another_protocol_version_is_refused_on_either_side() {
    // An old or new node dials our rank 0: it gets our hello back, then is closed.
    let (template, zero) = rank_zero("version-test");
    let mut hello = WIRE_MAGIC.to_vec();
    hello.extend_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
    hello.extend_from_slice(&[0u8; 41]);
    let mut future = raw_send(template.coordinator, &hello);
    assert_closed_by_peer(&mut future);
    wait_for_log(&["cluster=version-test", "version"]);

    // Our rank 1 dials a "rank 0" that answers with another version.
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut config = as_rank_one(&template);
    config.coordinator = fake.local_addr().expect("addr");
    let answer = thread::spawn(move || {
        let (mut stream, _) = fake.accept().expect("accept");
        let mut reply = WIRE_MAGIC.to_vec();
        reply.extend_from_slice(&7u16.to_le_bytes());
        stream.write_all(&reply).expect("reply");
        let mut sink = [0u8; 256];
        let _ = stream.read(&mut sink); // hold the socket until rank 1 gives up
    });
    match Mesh::establish(config) {
        Err(TcpError::Handshake {
            reason: HandshakeError::Version { ours, theirs: 7 },
            ..
        }) => assert_eq!(ours, WIRE_VERSION),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    answer.join().expect("fake rank 0");

    the_real_rank_one_joins(&template, zero);
}

#[test]
fn a_stalled_connection_does_not_hold_up_formation() {
    capture_logs();
    let (listener, mut template) = rank_zero_listener(2, "stall");
    // The whole budget equals the handshake timeout: had the stall blocked the
    // accept loop, formation could not finish in time.
    template.establish_timeout = Duration::from_secs(5);
    let staller = TcpStream::connect(template.coordinator).expect("connect");
    let zero = start_rank_zero(&template, listener);
    let (one, _) = Mesh::establish(as_rank_one(&template)).expect("rank 1 joins despite the stall");
    let (zero, _) = zero
        .join()
        .expect("rank 0 thread")
        .expect("rank 0 forms the mesh");
    drop(staller);
    one.shutdown();
    zero.shutdown();
}

#[test]
fn garbage_after_formation_leaves_the_mesh_working() {
    capture_logs();
    let meshes = form(3, "garbage", |_| {});
    let mut long_hello = WIRE_MAGIC.to_vec();
    long_hello.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    long_hello.extend_from_slice(&[0xff; 64]); // absurd size and rank, then silence
    let mut stalled = Vec::new();
    for (mesh, _) in &meshes {
        let addr = mesh.local_addr();
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            &[0u8; 3][..],
            &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8],
        ] {
            let mut conn = raw_send(addr, junk);
            drop(conn.shutdown(std::net::Shutdown::Write));
            assert_closed_by_peer(&mut conn);
        }
        stalled.push(raw_send(addr, &long_hello));
        stalled.push(TcpStream::connect(addr).expect("connect"));
    }
    wait_for_log(&["cluster=garbage", "magic bytes"]);
    // The stalled handshakes are still open while every link keeps working.
    assert_all_pairs_work(&meshes);
    for (_, events) in &meshes {
        assert!(events.try_recv().is_err(), "junk produced an event");
    }
    drop(stalled);
    for (mesh, _) in meshes {
        mesh.shutdown();
    }
}

#[test]
fn two_processes_claiming_one_rank_fail_formation() {
    let (listener, template) = rank_zero_listener(3, "dup");
    let zero = start_rank_zero(&template, listener);
    let twins: Vec<_> = (0..2)
        .map(|_| {
            let config = as_rank_one(&template);
            thread::spawn(move || Mesh::establish(config))
        })
        .collect();
    match zero.join().expect("rank 0 thread") {
        Err(err @ TcpError::DuplicateRank { rank: 1, .. }) => {
            assert!(
                err.to_string().contains("check how ranks are assigned"),
                "{err}"
            );
        }
        other => panic!("expected a duplicate rank, got {other:?}"),
    }
    for twin in twins {
        assert!(
            twin.join().expect("twin thread").is_err(),
            "a twin formed a mesh"
        );
    }
}

#[test]
fn an_oversized_frame_closes_only_that_link() {
    capture_logs();
    // Every rank accepts at most 1 KiB per frame (the limit is agreed); rank 0
    // sends more anyway.
    let meshes = form(3, "oversize", |config| {
        config.max_frame_bytes = 1024;
    });
    meshes[0].0.send(1, vec![7u8; 4096]);
    for (rank, other) in [(1, 0), (0, 1)] {
        match recv(&meshes[rank].1, "the loss of the oversized link") {
            MeshEvent::PeerDown { node, reason } => {
                assert_eq!(node, other);
                if rank == 1 {
                    assert!(reason.contains("above the limit of 1024"), "{reason}");
                }
            }
            other => panic!("expected PeerDown, got {other:?}"),
        }
    }
    wait_for_log(&["above the limit of 1024"]);
    // The links to rank 2 are untouched.
    for (a, b) in [(0, 2), (2, 0), (1, 2), (2, 1)] {
        meshes[a].0.send(b as u32, b"still here".to_vec());
        common::expect_frame(&meshes[b].1, a as u32, b"still here");
    }
    assert!(meshes[2].1.try_recv().is_err(), "rank 2 saw an event");
    for (mesh, _) in meshes {
        mesh.shutdown();
    }
}

/// Starts rank 0 of a two-rank job on a thread; returns its config template.
fn rank_zero(cluster: &str) -> (MeshConfig, Formation) {
    capture_logs();
    let (listener, template) = rank_zero_listener(2, cluster);
    let zero = start_rank_zero(&template, listener);
    (template, zero)
}

/// Rank 0's listener on a free loopback port, and its config in a job of `size`
/// ranks with a fresh secret: the template the other ranks' configs are made from.
fn rank_zero_listener(size: u32, cluster: &str) -> (TcpListener, MeshConfig) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let template = config(
        0,
        size,
        listener.local_addr().expect("addr"),
        &Secret::random(),
        cluster,
    );
    (listener, template)
}

/// Rank 0 forming its mesh on `listener`, on a thread.
fn start_rank_zero(template: &MeshConfig, listener: TcpListener) -> Formation {
    let config = template.clone();
    thread::spawn(move || Mesh::establish_with_listener(config, listener))
}

fn as_rank_one(template: &MeshConfig) -> MeshConfig {
    let mut config = template.clone();
    config.rank = 1;
    config
}

/// After a refused impostor, the real rank 1 still joins and rank 0 forms the
/// mesh; then both shut down.
fn the_real_rank_one_joins(template: &MeshConfig, zero: Formation) {
    let (one, _) = Mesh::establish(as_rank_one(template)).expect("the real rank 1 joins");
    let (zero, _) = zero
        .join()
        .expect("rank 0 thread")
        .expect("rank 0 forms the mesh");
    one.shutdown();
    zero.shutdown();
}
