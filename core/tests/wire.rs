//! Framing and decoding of untrusted bytes.

use herald_core::{
    Config, FrameError, Key, LaunchId, LocalState, Message, Node, NodeId, Output, ProtocolError,
    Registration, Report, TaskError, TaskErrorKind, WIRE_VERSION, decode_frame, encode_frames,
};
use proptest::prelude::*;

const MAX: usize = 1 << 16;

fn sample_messages() -> Vec<Message> {
    let reg = Registration::new(b"lib.so:cb".to_vec(), b"args".to_vec()).with_tag("t");
    let mut report = Report::default();
    report.failures.insert(NodeId(3), "boom".into());
    report.unreachable.insert(NodeId(4));
    vec![
        Message::Request {
            key: reg.key(),
            registration: reg.clone(),
            offer: None,
        },
        Message::Request {
            key: reg.key(),
            registration: reg.clone(),
            offer: Some(4),
        },
        Message::Ran {
            key: reg.key(),
            view: 4,
            error: Some("failed here".into()),
        },
        Message::Disseminate {
            key: reg.key(),
            root: NodeId(2),
            view: 4,
            registration: reg.clone(),
        },
        Message::Ack {
            key: reg.key(),
            root: NodeId(2),
            report: report.clone(),
        },
        Message::Complete {
            key: reg.key(),
            view: 4,
            report,
        },
        Message::Launch {
            launch: LaunchId(9),
            task: "t".into(),
            args: vec![1, 2],
            requires: vec![reg.key()],
            strict: true,
        },
        Message::TaskResult {
            launch: LaunchId(9),
            outcome: Err(TaskError {
                node: NodeId(1),
                kind: TaskErrorKind::Unreachable,
            }),
        },
    ]
}

#[test]
fn every_message_kind_round_trips() {
    let messages = sample_messages();
    let frames = encode_frames(&messages, MAX).expect("encode");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0][0], WIRE_VERSION);
    assert_eq!(decode_frame(&frames[0], MAX).expect("decode"), messages);
}

#[test]
fn frames_split_under_the_limit_and_keep_order() {
    let messages: Vec<Message> = (0..100)
        .map(|i| Message::Launch {
            launch: LaunchId(i),
            task: "x".repeat(50),
            args: vec![0; 50],
            requires: vec![],
            strict: true,
        })
        .collect();
    let frames = encode_frames(&messages, 1024).expect("encode");
    assert!(frames.len() > 1);
    assert!(frames.iter().all(|f| f.len() <= 1024));
    let decoded: Vec<Message> = frames
        .iter()
        .flat_map(|f| decode_frame(f, 1024).expect("decode"))
        .collect();
    assert_eq!(decoded, messages);
    let huge = Message::Launch {
        launch: LaunchId(0),
        task: String::new(),
        args: vec![0; 2048],
        requires: vec![],
        strict: true,
    };
    assert!(encode_frames(&[huge], 1024).is_err());
}

#[test]
fn bad_frames_are_typed_errors() {
    assert_eq!(decode_frame(&[], MAX), Err(FrameError::Empty));
    assert_eq!(
        decode_frame(&[WIRE_VERSION + 1, 0], MAX),
        Err(FrameError::UnsupportedVersion {
            found: WIRE_VERSION + 1
        })
    );
    assert!(matches!(
        decode_frame(&[WIRE_VERSION; 100], 50),
        Err(FrameError::TooLarge { len: 100, max: 50 })
    ));
    assert!(matches!(
        decode_frame(&[WIRE_VERSION], MAX),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        decode_frame(&[WIRE_VERSION, 200, 1], MAX),
        Err(FrameError::Malformed(_))
    ));
    let err = decode_frame(&[7], MAX).expect_err("version");
    assert!(err.to_string().contains("same herald version"));
}

#[test]
fn node_rejects_bad_senders_and_forged_keys() {
    let fresh = || Node::new(Config::new(NodeId(0), 2).expect("config"));
    let reg = Registration::new(b"a".to_vec(), vec![]);
    let request = Message::Request {
        key: reg.key(),
        registration: reg.clone(),
        offer: None,
    };
    let mut node = fresh();
    assert!(matches!(
        node.handle_message(NodeId(0), request.clone()),
        Err(ProtocolError::BadSender { .. })
    ));
    assert!(matches!(
        node.handle_message(NodeId(herald_core::MAX_NODES), request),
        Err(ProtocolError::BadSender { .. })
    ));
    assert!(
        node.poll_output().is_none(),
        "a bad sender id declares nobody down"
    );

    let forged = Message::Request {
        key: Key([7; 32]),
        registration: reg.clone(),
        offer: None,
    };
    let stray = Message::Disseminate {
        key: reg.key(),
        root: NodeId(9),
        view: 4,
        registration: reg.clone(),
    };
    for (message, expected) in [(forged, "does not match"), (stray, "not part of this job")] {
        let mut node = fresh();
        let err = node
            .handle_message(NodeId(1), message)
            .expect_err("invalid");
        assert!(err.to_string().contains(expected), "{err}");
        assert_sender_declared_down(&mut node);
    }
    let mut node = fresh();
    assert!(matches!(
        node.handle_frame(NodeId(1), &[0xff]),
        Err(ProtocolError::Frame(_))
    ));
    assert_sender_declared_down(&mut node);
}

/// Nothing ran; node 1 is down here and is told so.
fn assert_sender_declared_down(node: &mut Node) {
    let outputs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert!(
        matches!(&outputs[..], [
            Output::PeerDown { node: NodeId(1), by: NodeId(0), reason },
            Output::ViewChanged(_),
            Output::Transmit { to: NodeId(1), messages },
        ] if reason.contains("invalid") && matches!(messages[..], [Message::Down { node: NodeId(1), .. }])),
        "{outputs:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic the decoder or the node.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes, MAX);
        let mut node = Node::new(Config::new(NodeId(0), 4).expect("config"));
        let _ = node.handle_frame(NodeId(1), &bytes);
        while node.poll_output().is_some() {}
    }

    /// Valid frames with bytes flipped, cut or inserted never panic either.
    #[test]
    fn mutated_frames_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut frame = encode_frames(&sample_messages(), MAX).expect("encode").remove(0);
        for (at, byte, op) in edits {
            let i = at.index(frame.len().max(1));
            match op {
                0 if !frame.is_empty() => frame[i] = byte,
                1 if !frame.is_empty() => { frame.truncate(i); }
                _ => frame.insert(i.min(frame.len()), byte),
            }
        }
        let _ = decode_frame(&frame, MAX);
        let mut node = Node::new(Config::new(NodeId(0), 8).expect("config"));
        let _ = node.handle_frame(NodeId(1), &frame);
        while node.poll_output().is_some() {}
    }
}

#[test]
fn messages_before_junk_in_a_frame_are_handled_and_its_sender_is_declared_down() {
    let reg = Registration::new(b"before junk".to_vec(), vec![]);
    let request = Message::Request {
        key: reg.key(),
        registration: reg.clone(),
        offer: None,
    };
    let mut frame = encode_frames(&[request], MAX).expect("encodes").remove(0);
    frame.extend_from_slice(&[0xff, 0xff, 0xff]);
    let mut node = fresh();
    let error = node.handle_frame(NodeId(1), &frame).expect_err("junk");
    assert!(
        matches!(error, ProtocolError::Frame(FrameError::Malformed(_))),
        "{error:?}"
    );
    assert_eq!(
        node.local_state(&reg.key()),
        Some(LocalState::Running),
        "the request before the junk was handled"
    );
    assert!(node.dead_nodes().contains(&NodeId(1)), "its sender is down");
}

#[test]
fn a_message_the_caller_refuses_stops_the_frame_and_downs_its_sender() {
    let first = Registration::new(b"first".to_vec(), vec![]);
    let second = Registration::new(b"second".to_vec(), vec![]);
    let requests: Vec<Message> = [&first, &second]
        .into_iter()
        .map(|reg| Message::Request {
            key: reg.key(),
            registration: reg.clone(),
            offer: None,
        })
        .collect();
    let frame = encode_frames(&requests, MAX).expect("encodes").remove(0);
    let mut node = fresh();
    let mut seen = 0;
    let error = node
        .handle_frame_inspecting(NodeId(1), &frame, |_| {
            seen += 1;
            if seen == 2 {
                Err("the second one".into())
            } else {
                Ok(())
            }
        })
        .expect_err("refused");
    assert_eq!(
        error,
        ProtocolError::Refused {
            from: NodeId(1),
            reason: "the second one".into()
        }
    );
    assert!(node.local_state(&first.key()).is_some());
    assert!(node.local_state(&second.key()).is_none(), "not handled");
    assert!(node.dead_nodes().contains(&NodeId(1)));
}

/// Node 0 of a job of 2.
fn fresh() -> Node {
    Node::new(Config::new(NodeId(0), 2).expect("config"))
}
