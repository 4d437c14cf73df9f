//! Handshake unit tests: both ends driven in memory, byte by byte where it matters.

use super::*;
use crate::seal::Kind;

fn key(byte: u8) -> Secret {
    Secret::from_bytes([byte; 32])
}

/// Feeds `bytes` to `end` one byte at a time (the handshake must cope with any
/// split); returns what it wanted to send and its result.
fn feed(end: &mut Handshake, bytes: &[u8]) -> (Vec<u8>, Result<Option<LinkKeys>, HandshakeError>) {
    let mut input = Vec::new();
    let mut output = Vec::new();
    for &byte in bytes {
        input.push(byte);
        match end.advance(&mut input, &mut output) {
            Ok(None) => {}
            done => return (output, done),
        }
    }
    (output, Ok(None))
}

/// Runs a whole handshake; returns both ends' results.
fn run(
    acceptor_secret: &Secret,
    connector_secret: &Secret,
) -> (
    Result<Option<LinkKeys>, HandshakeError>,
    Result<Option<LinkKeys>, HandshakeError>,
) {
    let (mut connector, greeting) = Handshake::connector(connector_secret).unwrap();
    let mut acceptor = Handshake::acceptor(acceptor_secret).unwrap();
    let (to_connector, accepted) = feed(&mut acceptor, &greeting);
    assert!(matches!(accepted, Ok(None)));
    let (proof, connected) = feed(&mut connector, &to_connector);
    assert!(matches!(connected, Ok(None)), "{connected:?}");
    let (verdict, accepted) = feed(&mut acceptor, &proof);
    let (_, connected) = feed(&mut connector, &verdict);
    (accepted, connected)
}

#[test]
fn matching_peers_derive_matching_keys() {
    let (accepted, connected) = run(&key(1), &key(1));
    let mut a = accepted.unwrap().expect("acceptor done");
    let mut c = connected.unwrap().expect("connector done");
    let record = c.seal.seal(Kind::Data, b"to the acceptor");
    assert_eq!(
        a.open.open(record[4..].to_vec()).unwrap(),
        (Kind::Data, b"to the acceptor".to_vec())
    );
    let record = a.seal.seal(Kind::Data, b"back");
    assert_eq!(c.open.open(record[4..].to_vec()).unwrap().1, b"back");
}

#[test]
fn a_wrong_secret_is_refused_on_both_sides() {
    let (accepted, connected) = run(&key(1), &key(2));
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
fn the_acceptor_reveals_nothing_before_the_proof() {
    let (_, greeting) = Handshake::connector(&key(1)).unwrap();
    let mut acceptor = Handshake::acceptor(&key(1)).unwrap();
    let (answer, result) = feed(&mut acceptor, &greeting);
    assert!(matches!(result, Ok(None)));
    // Magic, version and a fresh nonce: no rank, size, cluster or setting.
    assert_eq!(answer.len(), GREETING_LEN);
    assert_eq!(&answer[..8], &WIRE_MAGIC);
    assert_eq!(&answer[8..10], &WIRE_VERSION.to_le_bytes());
    // A forged proof gets one byte: rejected.
    let (answer, result) = feed(&mut acceptor, &[0u8; PROOF_LEN]);
    assert_eq!(answer, [VERDICT_REJECT]);
    assert!(matches!(result, Err(HandshakeError::BadProof)));
}

#[test]
fn garbage_is_refused_on_its_first_wrong_byte_with_no_answer() {
    for junk in [&b"GET / HTTP/1.1\r\n"[..], &[0u8; 3], b"HRLDLINX"] {
        let mut acceptor = Handshake::acceptor(&key(1)).unwrap();
        let (answer, result) = feed(&mut acceptor, junk);
        assert!(answer.is_empty(), "{junk:?} got an answer");
        assert!(
            matches!(result, Err(HandshakeError::NotHerald)),
            "{junk:?}: {result:?}"
        );
    }
}

#[test]
fn another_version_is_reported_as_such_on_both_sides() {
    let (mut connector, mut greeting) = Handshake::connector(&key(1)).unwrap();
    greeting[8..10].copy_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
    let mut acceptor = Handshake::acceptor(&key(1)).unwrap();
    let (answer, result) = feed(&mut acceptor, &greeting);
    match result {
        Err(HandshakeError::Version { ours, theirs }) => {
            assert_eq!((ours, theirs), (WIRE_VERSION, WIRE_VERSION + 1));
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    // The acceptor still greets, so the connector can say what is wrong.
    let mut answer = answer;
    answer[8..10].copy_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
    let (_, result) = feed(&mut connector, &answer);
    assert!(
        matches!(result, Err(HandshakeError::Version { .. })),
        "{result:?}"
    );
}

#[test]
fn proofs_cannot_be_reflected_or_replayed() {
    // Reflection: an acceptor's own proof (role 'A') fed back as the connector's.
    let (_, greeting) = Handshake::connector(&key(1)).unwrap();
    let mut acceptor = Handshake::acceptor(&key(1)).unwrap();
    assert!(matches!(feed(&mut acceptor, &greeting).1, Ok(None)));
    let reflected = acceptor.proof(false);
    let (_, result) = feed(&mut acceptor, &reflected);
    assert!(matches!(result, Err(HandshakeError::BadProof)));
    // Replay: a valid proof from one connection offered on another.
    let (mut connector, greeting) = Handshake::connector(&key(1)).unwrap();
    let mut first = Handshake::acceptor(&key(1)).unwrap();
    let (answer, _) = feed(&mut first, &greeting);
    let (proof, _) = feed(&mut connector, &answer);
    let mut second = Handshake::acceptor(&key(1)).unwrap();
    assert!(matches!(feed(&mut second, &greeting).1, Ok(None)));
    let (_, result) = feed(&mut second, &proof);
    assert!(matches!(result, Err(HandshakeError::BadProof)));
}

fn identity(rank: u32, size: u32, cluster: &str, agreed: &[(&str, u64)]) -> Identity {
    Identity {
        rank,
        size,
        cluster_id: cluster.into(),
        secret: key(1),
        agreed: agreed
            .iter()
            .map(|(name, value)| Agreed {
                name: (*name).into(),
                value: *value,
                flag: format!("--{name}"),
            })
            .collect(),
    }
}

#[test]
fn hellos_are_checked_naming_both_sides() {
    let zero = identity(0, 4, "c", &[("fan-out", 4)]);
    let two = identity(2, 4, "c", &[("fan-out", 4)]);
    zero.check(&two.hello(), Expect::AnyOther).unwrap();
    two.check(&zero.hello(), Expect::Rank(0)).unwrap();
    match two.check(&zero.hello(), Expect::Rank(1)) {
        Err(HandshakeError::UnexpectedRank { found: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
    match zero.check(
        &identity(0, 4, "c", &[("fan-out", 4)]).hello(),
        Expect::AnyOther,
    ) {
        Err(HandshakeError::UnexpectedRank { found: 0, .. }) => {}
        other => panic!("a rank claiming ours: {other:?}"),
    }
    // A rank that joined later knows a larger job; the reactor decides whether
    // such a rank can exist.
    zero.check(
        &identity(7, 8, "c", &[("fan-out", 4)]).hello(),
        Expect::AnyOther,
    )
    .unwrap();
    identity(7, 8, "c", &[("fan-out", 4)])
        .check(&two.hello(), Expect::Rank(2))
        .unwrap();
    match zero.check(
        &identity(2, 4, "other", &[("fan-out", 4)]).hello(),
        Expect::AnyOther,
    ) {
        Err(err @ HandshakeError::ClusterMismatch { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains("\"other\"") && text.contains("\"c\""),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    match zero.check(
        &identity(2, 5, "c", &[("fan-out", 4)]).hello(),
        Expect::AnyOther,
    ) {
        Err(HandshakeError::SizeMismatch { ours: 4, theirs: 5 }) => {}
        other => panic!("{other:?}"),
    }
    match zero.check(
        &identity(2, 4, "c", &[("fan-out", 8)]).hello(),
        Expect::AnyOther,
    ) {
        Err(err @ HandshakeError::Disagreement(_)) => {
            let text = err.to_string();
            assert!(
                text.contains("fan-out 8, this node 4") && text.contains("--fan-out"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    match zero.check(
        &identity(2, 4, "c", &[("fan-out", 4), ("extra", 1)]).hello(),
        Expect::AnyOther,
    ) {
        Err(HandshakeError::Disagreement(d)) => assert_eq!(d.name, "extra"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_joiner_is_checked_on_settings_not_on_size() {
    let zero = identity(0, 4, "c", &[("fan-out", 4)]);
    let joiner = identity(JOINING, 0, "c", &[("fan-out", 4)]);
    zero.check(&joiner.hello(), Expect::Joiner).unwrap();
    joiner.check(&zero.hello(), Expect::Rank(0)).unwrap();
    let wrong = identity(JOINING, 0, "c", &[("fan-out", 2)]);
    assert!(matches!(
        zero.check(&wrong.hello(), Expect::Joiner),
        Err(HandshakeError::Disagreement(_))
    ));
}
