//! A frame is handled one message at a time: however many tiny messages it packs
//! (an empty `Fetch` is 2 bytes on the wire and over a hundred decoded), handling
//! it never holds them all decoded at once. Measured with a counting allocator,
//! in a test binary of its own so that nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use herald_core::{Config, Key, Message, Node, NodeId, Registration, decode_frame, encode_frames};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the counters
// only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `work`, beyond what was live before it.
fn peak_during(work: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    work();
    PEAK.load(Ordering::SeqCst) - before
}

#[test]
fn a_frame_of_tiny_messages_is_handled_in_little_more_than_its_own_size() {
    let limit = 8 << 20;
    let tiny = Message::Fetch { keys: Vec::new() };
    let messages = vec![tiny; (limit - 1) / 2];
    let frame = encode_frames(&messages, limit).expect("encodes").remove(0);
    drop(messages);
    assert!(
        frame.len() > limit - 16,
        "one full frame: {} bytes",
        frame.len()
    );
    let config = Config::new(NodeId(0), 2)
        .and_then(|c| c.with_max_frame_bytes(limit))
        .expect("config");
    let mut node = Node::new(config);

    let handling = peak_during(|| node.handle_frame(NodeId(1), &frame).expect("valid frame"));
    assert!(
        handling < frame.len() / 4,
        "handling a {}-byte frame took {handling} bytes more",
        frame.len()
    );
    // What the old whole-frame decode took, and what it would still take.
    let decoding = peak_during(|| drop(decode_frame(&frame, limit).expect("decodes")));
    println!(
        "a {}-byte frame of empty fetches: {handling} bytes to handle, {decoding} to decode whole",
        frame.len()
    );
    assert!(
        decoding > 10 * frame.len(),
        "decoded whole: {decoding} bytes (the measure has teeth)"
    );
}

/// `messages` in one frame under `node`'s limit, as a peer would send them.
fn one_frame(node: &Node, messages: &[Message]) -> Vec<u8> {
    let frames = encode_frames(messages, node.config().max_frame_bytes()).expect("encodes");
    assert_eq!(frames.len(), 1, "the messages fit one frame");
    frames.into_iter().next().unwrap_or_default()
}

/// The messages `node` answers a frame with: every `Transmit` drained, encoded
/// as the host would send them. Returns (messages of `kind`, encoded bytes).
fn answer_to(node: &mut Node, kind: &str) -> (usize, usize) {
    let (mut count, mut bytes) = (0, 0);
    while let Some(output) = node.poll_output() {
        if let herald_core::Output::Transmit { messages, .. } = output {
            count += messages.iter().filter(|m| m.kind() == kind).count();
            let limit = node.config().max_frame_bytes();
            bytes += encode_frames(&messages, limit)
                .expect("encodes")
                .iter()
                .map(Vec::len)
                .sum::<usize>();
        }
    }
    (count, bytes)
}

/// A node with one registration done here (top-level, as coordinator and
/// launcher): `args` argument bytes, and a job-wide result naming node 1 failed
/// with an error text of 4 KiB, so both its `Supply` and its `Complete` are large.
fn node_holding(args: usize) -> (Node, Key, Registration) {
    let config = Config::new(NodeId(0), 2).expect("config");
    let mut node = Node::new(config);
    // Coordinated here: its home is node 0.
    let registration = (0u8..)
        .map(|code| Registration::new(vec![code], vec![7u8; args]))
        .find(|r| r.key().home(2) == NodeId(0))
        .expect("some code is homed at node 0");
    let key = registration.key();
    node.register(registration.clone(), None)
        .expect("registered");
    while let Some(output) = node.poll_output() {
        if let herald_core::Output::Invoke(invocation) = output {
            node.invocation_finished(invocation.id, Ok(()))
                .expect("finished");
        }
    }
    let failed = Message::Ack {
        key,
        root: NodeId(0),
        report: {
            let mut report = herald_core::Report::default();
            report.add_failure(
                NodeId(1),
                &"e".repeat(4096),
                herald_core::Limits::for_frame(herald_core::DEFAULT_MAX_FRAME_BYTES),
            );
            report
        },
    };
    node.handle_message(NodeId(1), failed)
        .expect("node 1's ack");
    while node.poll_output().is_some() {}
    (node, key, registration)
}

/// A correct node asks a launcher for a key once (`Fetch`, once per key and
/// launcher) and a coordinator for a key once (`Request`, once per key and
/// coordinator). A frame repeating a small `Fetch` or `Request` must not be
/// answered once per copy: each answer (`Supply` with the registration, a
/// `Complete` with the report) can be thousands of times larger than what asked
/// for it, so a 64 KiB frame would take gigabytes to answer.
#[test]
fn a_frame_repeating_a_small_question_is_answered_once() {
    let copies = 1000;
    let (mut node, key, _) = node_holding(64 << 10);
    let fetches = vec![Message::Fetch { keys: vec![key] }; copies];
    let frame = one_frame(&node, &fetches);
    node.handle_frame(NodeId(1), &frame).expect("valid frame");
    let (supplies, bytes) = answer_to(&mut node, "supply");
    assert_eq!(
        supplies,
        1,
        "a {}-byte frame of fetches answered with {bytes} bytes",
        frame.len()
    );
    let one_fetch = vec![Message::Fetch {
        keys: vec![key; copies],
    }];
    let frame = one_frame(&node, &one_fetch);
    node.handle_frame(NodeId(1), &frame).expect("valid frame");
    assert_eq!(answer_to(&mut node, "supply").0, 0, "already supplied");

    let (mut node, key, small) = node_holding(0);
    let requests = vec![
        Message::Request {
            key,
            registration: small,
            offer: None,
        };
        copies
    ];
    let frame = one_frame(&node, &requests);
    node.handle_frame(NodeId(1), &frame).expect("valid frame");
    let (completes, bytes) = answer_to(&mut node, "complete");
    assert_eq!(
        completes,
        1,
        "a {}-byte frame of requests answered with {bytes} bytes",
        frame.len()
    );
    assert!(
        bytes > 4096,
        "the answer carries node 1's error text: {bytes} bytes"
    );
}
