//! A frame is handled one message at a time: however many tiny messages it packs
//! (an empty `Fetch` is 2 bytes on the wire and over a hundred decoded), handling
//! it never holds them all decoded at once. Measured with a counting allocator,
//! in a test binary of its own so that nothing else allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use herald_core::{Config, Message, Node, NodeId, decode_frame, encode_frames};

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
