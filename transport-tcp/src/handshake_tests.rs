//! Handshake unit tests over real loopback sockets.

use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use super::*;

fn identity<'a>(rank: u32, size: u32, cluster_id: &'a str, secret: &'a Secret) -> Identity<'a> {
    Identity {
        rank,
        size,
        cluster_id,
        secret,
        agreed: &[],
    }
}

/// A connected (connector, acceptor) pair with a timeout so a broken test cannot hang.
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connector = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (acceptor, _) = listener.accept().unwrap();
    for stream in [&connector, &acceptor] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
    }
    (connector, acceptor)
}

/// Runs both sides; `a` and `c` are (rank, size, cluster, secret) of acceptor and connector.
fn run(
    acceptor: (u32, u32, &'static str, Secret),
    connector: (u32, u32, &'static str, Secret),
    expected_peer: u32,
) -> (Result<u32, HandshakeError>, Result<(), HandshakeError>) {
    let (mut c_stream, mut a_stream) = pair();
    let accept = thread::spawn(move || {
        let me = identity(acceptor.0, acceptor.1, acceptor.2, &acceptor.3);
        let result = accept_side(&mut a_stream, &me);
        drop(a_stream); // close, so a connector still waiting sees EOF
        result
    });
    let me = identity(connector.0, connector.1, connector.2, &connector.3);
    let connect = connect_side(&mut c_stream, &me, expected_peer);
    drop(c_stream);
    (accept.join().unwrap(), connect)
}

fn key(byte: u8) -> Secret {
    Secret::from_bytes([byte; 32])
}

#[test]
fn matching_peers_authenticate_each_other() {
    let (accepted, connected) = run((0, 3, "c", key(1)), (2, 3, "c", key(1)), 0);
    assert_eq!(accepted.unwrap(), 2);
    connected.unwrap();
}

#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let (accepted, connected) = run((0, 2, "c", key(1)), (1, 2, "c", key(2)), 0);
    assert!(
        matches!(accepted, Err(HandshakeError::BadProof)),
        "{accepted:?}"
    );
    assert!(
        matches!(connected, Err(HandshakeError::Rejected)),
        "{connected:?}"
    );
}

#[test]
fn cluster_and_size_mismatches_are_named() {
    let (accepted, connected) = run((0, 2, "blue", key(1)), (1, 2, "green", key(1)), 0);
    assert!(
        matches!(&accepted, Err(HandshakeError::ClusterMismatch { ours, theirs }) if ours == "blue" && theirs == "green"),
        "{accepted:?}"
    );
    assert!(matches!(
        connected,
        Err(HandshakeError::ClusterMismatch { .. })
    ));
    let (accepted, connected) = run((0, 2, "c", key(1)), (1, 3, "c", key(1)), 0);
    assert!(matches!(
        accepted,
        Err(HandshakeError::SizeMismatch { ours: 2, theirs: 3 })
    ));
    assert!(matches!(
        connected,
        Err(HandshakeError::SizeMismatch { ours: 3, theirs: 2 })
    ));
}

#[test]
fn ranks_must_fit_the_direction_of_the_link() {
    // A lower rank must never dial a higher one, and a connector must reach the rank it meant.
    let (accepted, _) = run((2, 4, "c", key(1)), (1, 4, "c", key(1)), 2);
    assert!(matches!(
        accepted,
        Err(HandshakeError::UnexpectedRank { found: 1, .. })
    ));
    let (_, connected) = run((1, 4, "c", key(1)), (3, 4, "c", key(1)), 0);
    assert!(matches!(
        connected,
        Err(HandshakeError::UnexpectedRank { found: 1, .. })
    ));
}

#[test]
fn another_version_is_reported_as_such() {
    let (mut c_stream, mut a_stream) = pair();
    let accept = thread::spawn(move || {
        let secret = key(1);
        accept_side(&mut a_stream, &identity(0, 2, "c", &secret))
    });
    let mut hello = WIRE_MAGIC.to_vec();
    hello.extend_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
    c_stream.write_all(&hello).unwrap();
    let accepted = accept.join().unwrap();
    assert!(
        matches!(accepted, Err(HandshakeError::Version { ours: WIRE_VERSION, theirs }) if theirs == WIRE_VERSION + 1),
        "{accepted:?}"
    );
}

#[test]
fn garbage_gets_no_answer() {
    let (mut c_stream, mut a_stream) = pair();
    let accept = thread::spawn(move || {
        let secret = key(1);
        let result = accept_side(&mut a_stream, &identity(0, 2, "c", &secret));
        drop(a_stream);
        result
    });
    c_stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(matches!(
        accept.join().unwrap(),
        Err(HandshakeError::NotHerald)
    ));
    let mut reply = Vec::new();
    // The acceptor closed without writing a byte (a reset is also fine).
    let _ = c_stream.read_to_end(&mut reply);
    assert!(reply.is_empty());
}

#[test]
fn proofs_cannot_be_reflected_or_replayed() {
    let secret = key(7);
    let me = identity(1, 4, "c", &secret);
    let (n_a, n_b) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
    let p = proof(&me, 1, 2, &n_a, &n_b);
    verify(&me, 1, 2, &n_a, &n_b, &p).unwrap();
    // Reflection: the same bytes presented as the other party's proof.
    assert!(verify(&me, 2, 1, &n_b, &n_a, &p).is_err());
    assert!(verify(&me, 2, 1, &n_a, &n_b, &p).is_err());
    // Replay: a fresh nonce on the verifier's side invalidates it.
    assert!(verify(&me, 1, 2, &n_a, &[3u8; NONCE_LEN], &p).is_err());
    // Another cluster id or size with the same secret also fails.
    let other = identity(1, 4, "d", &secret);
    assert!(verify(&other, 1, 2, &n_a, &n_b, &p).is_err());
    let bigger = identity(1, 5, "c", &secret);
    assert!(verify(&bigger, 1, 2, &n_a, &n_b, &p).is_err());
}

#[test]
fn stalled_peer_times_out() {
    let (c_stream, mut a_stream) = pair();
    a_stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let secret = key(1);
    let result = accept_side(&mut a_stream, &identity(0, 2, "c", &secret));
    assert!(
        matches!(result, Err(HandshakeError::TimedOut)),
        "{result:?}"
    );
    drop(c_stream);
}
