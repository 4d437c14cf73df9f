//! A hostile or careless C caller: frames naming nodes outside the job, lengths
//! no buffer has, results larger than any frame. Each is refused with an error
//! code, leaves the core usable, and never makes it send to a node outside the job.

mod common;

use std::ptr;

use common::{Core, Job, Out};
use herald_core::{Key, Message, NodeId, NodeSet, Report, encode_frames};
use herald_core_c::*;

const NODES: u32 = 4;

/// A valid frame node 1 sends node 0 (a registration's request or round).
fn frame_from_1_to_0() -> Vec<u8> {
    let mut job = Job::new(NODES);
    job.cores[1]
        .register(b"code", b"args", None, None)
        .expect("registered");
    job.run(|_, _, _| None);
    job.sent
        .iter()
        .find(|(from, to, _)| (*from, *to) == (1, 0))
        .map(|(_, _, frame)| frame.clone())
        .expect("node 1 sent node 0 a frame")
}

fn frame(messages: &[Message]) -> Vec<u8> {
    let mut frames =
        encode_frames(messages, herald_core::DEFAULT_MAX_FRAME_BYTES).expect("encoded");
    assert_eq!(frames.len(), 1);
    frames.remove(0)
}

/// Registers on `core`, runs what it invokes, and returns every output: it must
/// send only to nodes of the job.
fn register_and_check_targets(core: &mut Core, code: &[u8]) -> Vec<Out> {
    core.register(code, b"", None, None).expect("registered");
    let mut outputs = Vec::new();
    while let Some(out) = core.poll() {
        if let Out::Invoke { invocation, .. } = out {
            assert_eq!(core.invocation_finished(invocation, None), HERALD_CORE_OK);
        }
        if let Out::Transmit { to, .. } = out {
            assert!(
                to < NODES,
                "the core sends to node {to}, outside the job of {NODES}"
            );
        }
        outputs.push(out);
    }
    outputs
}

#[test]
fn a_frame_from_a_node_outside_the_job_is_refused_and_grows_nothing() {
    let valid = frame_from_1_to_0();
    for from in [NODES, NODES + 1, 1000, (1 << 20) - 1, 1 << 20, u32::MAX] {
        let mut core = Core::new(0, NODES);
        assert_eq!(
            core.handle_frame(from, &valid),
            HERALD_CORE_ERR_INVALID,
            "from node {from}"
        );
        assert!(
            core.error().contains(&format!("node {from}")) && core.error().contains("job of 4"),
            "{}",
            core.error()
        );
        // Also random bytes: the sender is not a node to declare down.
        assert_eq!(
            core.handle_frame(from, b"\x04\xff"),
            HERALD_CORE_ERR_INVALID
        );
        let outputs = register_and_check_targets(&mut core, b"after");
        assert!(
            !outputs.iter().any(|o| matches!(o, Out::PeerDown { .. })),
            "{outputs:?}"
        );
        assert_eq!(
            core.launch(NODES, "t", b"", None),
            Err(HERALD_CORE_ERR_INVALID)
        );
        assert_eq!(
            core.launch(999, "t", b"", None),
            Err(HERALD_CORE_ERR_INVALID)
        );
    }
}

#[test]
fn a_message_naming_a_node_outside_the_job_is_an_invalid_frame() {
    let mut set = NodeSet::default();
    set.insert(NodeId(500));
    let beyond = Report {
        failed: set,
        ..Report::default()
    };
    let hostile = [
        Message::Down {
            node: NodeId(1000),
            by: NodeId(1),
            reason: "x".into(),
        },
        Message::Down {
            node: NodeId(2),
            by: NodeId(70_000),
            reason: "x".into(),
        },
        Message::Disseminate {
            key: Key([1; 32]),
            root: NodeId(1),
            view: 5000,
            registration: herald_core::Registration::new(b"c".to_vec(), Vec::new()),
        },
        Message::Disseminate {
            key: Key([1; 32]),
            root: NodeId(9),
            view: NODES,
            registration: herald_core::Registration::new(b"c".to_vec(), Vec::new()),
        },
        Message::Ack {
            key: Key([1; 32]),
            root: NodeId(0),
            report: beyond.clone(),
        },
        Message::Complete {
            key: Key([1; 32]),
            view: 9000,
            report: Report::default(),
        },
        Message::Complete {
            key: Key([1; 32]),
            view: NODES,
            report: beyond,
        },
    ];
    for message in hostile {
        let mut core = Core::new(0, NODES);
        assert_eq!(
            core.handle_frame(1, &frame(std::slice::from_ref(&message))),
            HERALD_CORE_ERR_PROTOCOL,
            "{message:?}"
        );
        assert!(core.error().contains("outside"), "{}", core.error());
        let outputs = register_and_check_targets(&mut core, b"after");
        assert!(
            outputs
                .iter()
                .any(|o| matches!(o, Out::PeerDown { node: 1, by: 0, .. })),
            "{message:?}: its sender is declared down: {outputs:?}"
        );
        assert_eq!(
            core.launch(NODES, "t", b"", None),
            Err(HERALD_CORE_ERR_INVALID)
        );
    }
}

#[test]
fn lengths_no_buffer_has_are_refused_without_reading() {
    let mut core = Core::new(0, 2);
    let one = [7u8; 1];
    let p = one.as_ptr().cast();
    for len in [usize::MAX, isize::MAX as usize + 1] {
        // SAFETY: the lengths are refused before `p` is read past its one byte.
        unsafe {
            assert_eq!(length_codes(&core, p, len), [HERALD_CORE_ERR_INVALID; 3]);
            assert_eq!(
                herald_core_handle_frame(core.0, 1, p, len),
                HERALD_CORE_ERR_INVALID
            );
            assert_eq!(
                herald_core_task_finished(core.0, 1, 0, p, len, ptr::null()),
                HERALD_CORE_ERR_INVALID
            );
        }
        assert!(core.error().contains("no buffer"), "{}", core.error());
    }
    // Lengths a buffer might have but no frame does: too large, not copied.
    for len in [isize::MAX as usize, 1 << 40] {
        // SAFETY: refused on the length alone, before `p` is read.
        let codes = unsafe { length_codes(&core, p, len) };
        assert_eq!(codes, [HERALD_CORE_ERR_TOO_LARGE; 3]);
    }
    // Not a bug of herald's: the core still works, and no peer was declared down.
    let outputs = core.drain();
    assert!(outputs.is_empty(), "{outputs:?}");
    core.register(b"c", b"", None, None).expect("still usable");
}

/// What `core` answers to `len` bytes at `p` as a registration's code, as its
/// arguments, and as a launch's arguments.
///
/// # Safety
///
/// `p` points to at least one readable byte; the calls may read `len` of them.
unsafe fn length_codes(core: &Core, p: *const std::ffi::c_void, len: usize) -> [i32; 3] {
    // SAFETY: as the caller vouched.
    unsafe {
        [
            herald_core_register(
                core.0,
                p,
                len,
                ptr::null(),
                0,
                ptr::null(),
                HERALD_CORE_NO_PARENT,
                ptr::null_mut(),
            ),
            herald_core_register(
                core.0,
                p,
                1,
                p,
                len,
                ptr::null(),
                HERALD_CORE_NO_PARENT,
                ptr::null_mut(),
            ),
            herald_core_launch(
                core.0,
                1,
                c"t".as_ptr(),
                p,
                len,
                HERALD_CORE_NO_PARENT,
                ptr::null_mut(),
            ),
        ]
    }
}

#[test]
fn a_result_larger_than_any_frame_fails_the_task_without_being_copied() {
    let (mut a, mut b) = (Core::new(0, 2), Core::new(1, 2));
    let launch = a.launch(1, "t", b"", None).expect("launched");
    deliver(&mut a, 0, &mut b);
    let (origin, launched) = b
        .drain()
        .into_iter()
        .find_map(|out| match out {
            Out::RunTask { origin, launch, .. } => Some((origin, launch)),
            _ => None,
        })
        .expect("the task runs on node 1");
    let one = [7u8; 1];
    let p = one.as_ptr().cast();
    for len in [usize::MAX, isize::MAX as usize + 1] {
        // SAFETY: refused on the length alone; the task keeps running.
        let code = unsafe { herald_core_task_finished(b.0, origin, launched, p, len, ptr::null()) };
        assert_eq!(code, HERALD_CORE_ERR_INVALID);
    }
    // SAFETY: refused on the length alone, before the one byte is read past.
    let code = unsafe {
        herald_core_task_finished(b.0, origin, launched, p, isize::MAX as usize, ptr::null())
    };
    assert_eq!(code, HERALD_CORE_OK, "{}", b.error());
    deliver(&mut b, 1, &mut a);
    let answer = a
        .drain()
        .into_iter()
        .find_map(|out| match out {
            Out::TaskCompleted {
                launch: l,
                status,
                error,
                ..
            } if l == launch => Some((status, error)),
            _ => None,
        })
        .expect("answered");
    assert_eq!(answer.0, HERALD_CORE_TASK_FAILED);
    assert!(answer.1.contains("exceeds the frame limit"), "{}", answer.1);
}

/// Hands every frame `from` (node `me`) has for `to` over to it.
fn deliver(from: &mut Core, me: u32, to: &mut Core) {
    for out in from.drain() {
        if let Out::Transmit { frame, .. } = out {
            assert_eq!(
                to.handle_frame(me, &frame),
                HERALD_CORE_OK,
                "{}",
                to.error()
            );
        }
    }
}

#[test]
fn a_job_larger_than_the_core_accepts_is_refused_at_creation() {
    // Node ids from MAX_NODES up are refused as senders: such a job could not work.
    let error = Core::with(0, herald_core::MAX_NODES + 1, 0, 0)
        .err()
        .expect("refused");
    assert!(error.contains("1048576"), "{error}");
    assert!(Core::with(0, u32::MAX, 0, 0).is_err());
    assert!(Core::with(herald_core::MAX_NODES - 1, herald_core::MAX_NODES, 0, 0).is_ok());
}

/// A frame repeating one small `Fetch` (a correct node asks a launcher once per
/// key) is answered with the registration once, not once per copy: through the C
/// API each copy was a `Supply` carrying the registration's 64 KiB of arguments,
/// all encoded at the next poll (a 34 KB frame made 65 MB of frames, an 8 MiB
/// one would make 16 GB). The core stays usable.
#[test]
fn a_frame_repeating_a_small_fetch_is_answered_once() {
    let mut core = Core::new(0, 2);
    let args = vec![7u8; 64 << 10];
    core.register(b"code", &args, None, None)
        .expect("registered");
    for out in core.drain() {
        if let Out::Invoke { invocation, .. } = out {
            assert_eq!(core.invocation_finished(invocation, None), HERALD_CORE_OK);
        }
    }
    core.drain();
    let key = herald_core::Registration::new(b"code".to_vec(), args).key();
    let repeated = frame(&vec![Message::Fetch { keys: vec![key] }; 1000]);
    assert_eq!(
        core.handle_frame(1, &repeated),
        HERALD_CORE_OK,
        "{}",
        core.error()
    );
    let answered: usize = core
        .drain()
        .iter()
        .map(|out| match out {
            Out::Transmit { frame, .. } => frame.len(),
            _ => 0,
        })
        .sum();
    assert!(
        answered > 64 << 10 && answered < 2 * (64 << 10),
        "a {}-byte frame answered with {answered} bytes",
        repeated.len()
    );
    let outputs = register_and_check_targets(&mut core, b"after");
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Out::Transmit { to: 1, .. })),
        "the core goes on: {outputs:?}"
    );
}

/// Valid messages before one naming a node outside the job are handled, once;
/// nothing after it is; the sender is declared down once. The same frame handed
/// over again (a caller retrying) handles nothing twice.
#[test]
fn messages_before_an_invalid_one_are_handled_once_and_none_after() {
    let registration = |code: &[u8]| herald_core::Registration::new(code.to_vec(), Vec::new());
    let request = |code: &[u8]| Message::Request {
        key: registration(code).key(),
        registration: registration(code),
        offer: None,
    };
    let hostile = frame(&[
        request(b"before"),
        Message::Down {
            node: NodeId(1000),
            by: NodeId(1),
            reason: "x".into(),
        },
        request(b"after"),
    ]);
    let mut core = Core::new(0, NODES);
    let mut outputs = Vec::new();
    for _ in 0..2 {
        assert_eq!(core.handle_frame(1, &hostile), HERALD_CORE_ERR_PROTOCOL);
        assert!(core.error().contains("outside"), "{}", core.error());
        outputs.extend(core.drain());
    }
    let invoked: Vec<&[u8]> = outputs
        .iter()
        .filter_map(|o| match o {
            Out::Invoke { code, .. } => Some(code.as_slice()),
            _ => None,
        })
        .collect();
    assert_eq!(invoked, [b"before".as_slice()], "{outputs:?}");
    let downs = outputs
        .iter()
        .filter(|o| matches!(o, Out::PeerDown { node: 1, .. }))
        .count();
    assert_eq!(downs, 1, "{outputs:?}");
    let after = register_and_check_targets(&mut core, b"later");
    assert!(
        after.iter().any(|o| matches!(o, Out::Invoke { .. })),
        "the core goes on: {after:?}"
    );
}
