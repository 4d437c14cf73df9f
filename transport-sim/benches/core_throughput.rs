//! How many messages per second one herald core handles, with no network at all:
//! pre-built messages (and pre-encoded frames) fed to one `Node`, every output
//! drained. Run: `cargo bench -p herald-sim --bench core_throughput`.
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use herald_core::{
    Config, DEFAULT_MAX_FRAME_BYTES, Key, Message, Node, NodeId, Output, Registration, Report,
    encode_frames,
};

/// Keys in flight at once in the root and interior benchmarks.
const KEYS: u64 = 2_000;
/// Children of the root in the acknowledgement benchmark.
const CHILDREN: u32 = 1_024;
/// Repetitions of each measurement; the best is reported.
const ROUNDS: usize = 5;

fn main() {
    // `cargo bench --bench core_throughput -- WORD` runs the benchmarks named with WORD.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let report = |name: &str, bench: &dyn Fn() -> (u64, Duration)| {
        if filter
            .as_ref()
            .is_none_or(|word| name.contains(word.as_str()))
        {
            report(name, bench);
        }
    };
    println!("herald-core message handling, one thread, best of {ROUNDS}:");
    report("root receiving acks (handle_message)", &|| {
        root_receiving_acks(false)
    });
    report("root receiving acks (handle_frame, decoded)", &|| {
        root_receiving_acks(true)
    });
    report(
        "interior node receiving disseminates (handle_message)",
        &|| interior_receiving_disseminates(false),
    );
    report(
        "interior node receiving disseminates (handle_frame)",
        &|| interior_receiving_disseminates(true),
    );
    report(
        "interior node, whole round per key (1 disseminate + 4 acks)",
        &interior_whole_rounds,
    );
    report(
        "whole registration, 10,000 in-memory nodes",
        &whole_registration,
    );
}

/// Best messages/s over [`ROUNDS`] runs of `bench`, which returns (messages, time).
fn report(name: &str, bench: &dyn Fn() -> (u64, Duration)) {
    let best = (0..ROUNDS)
        .map(|_| bench())
        .map(|(messages, time)| messages as f64 / time.as_secs_f64())
        .fold(0.0, f64::max);
    println!("  {name:<62} {:>6.2} M msgs/s", best / 1e6);
}

/// Node 0 coordinates [`KEYS`] registrations for a requester, then receives every
/// child's acknowledgement of every key: child by child, as frames would arrive.
fn root_receiving_acks(framed: bool) -> (u64, Duration) {
    let nodes = CHILDREN + 1;
    let config = Config::new(NodeId(0), nodes)
        .and_then(|c| c.with_fanout(CHILDREN))
        .expect("config");
    let mut root = Node::new(config);
    let keys: Vec<Key> = (0..KEYS)
        .map(|i| coordinate(&mut root, registration(i)))
        .collect();
    let acks: Vec<Message> = keys
        .iter()
        .map(|&key| Message::Ack {
            key,
            root: NodeId(0),
            report: Report::default(),
        })
        .collect();
    let mut elapsed = Duration::ZERO;
    for child in 1..nodes {
        let messages = acks.clone();
        let from = NodeId(child);
        if framed {
            let frames = encode_frames(&messages, DEFAULT_MAX_FRAME_BYTES).expect("encodes");
            let start = Instant::now();
            for frame in &frames {
                root.handle_frame(from, frame).expect("valid frame");
                drain(&mut root);
            }
            elapsed += start.elapsed();
        } else {
            let start = Instant::now();
            for message in messages {
                root.handle_message(from, message).expect("valid message");
                drain(&mut root);
            }
            elapsed += start.elapsed();
        }
    }
    (KEYS * u64::from(CHILDREN), elapsed)
}

/// Node 1, an interior node with 4 children in a tree rooted at 0, receives the
/// dissemination of [`KEYS`] new registrations from its parent: each is verified
/// against its key, invoked, and forwarded to the 4 children.
fn interior_receiving_disseminates(framed: bool) -> (u64, Duration) {
    let nodes = 1 + 4 + 16;
    let mut node = Node::new(
        Config::new(NodeId(1), nodes)
            .and_then(|c| c.with_fanout(4))
            .expect("config"),
    );
    let messages: Vec<Message> = (0..KEYS)
        .map(registration)
        .map(|registration| Message::Disseminate {
            key: registration.key(),
            root: NodeId(0),
            view: nodes,
            registration,
        })
        .collect();
    let start;
    if framed {
        let frames = encode_frames(&messages, 64 * 1024).expect("encodes");
        start = Instant::now();
        for frame in &frames {
            node.handle_frame(NodeId(0), frame).expect("valid frame");
            drain(&mut node);
        }
    } else {
        start = Instant::now();
        for message in messages {
            node.handle_message(NodeId(0), message)
                .expect("valid message");
            drain(&mut node);
        }
    }
    (KEYS, start.elapsed())
}

/// What an interior node of the tree handles for each registration: the
/// disseminate from its parent (verified, invoked, forwarded to 4 children), its
/// invocation finishing, and the 4 children's acknowledgements (the last one sends
/// its own ack up). [`KEYS`] registrations, frames of one message each.
fn interior_whole_rounds() -> (u64, Duration) {
    let nodes = 1 + 4 + 16;
    let mut node = Node::new(
        Config::new(NodeId(1), nodes)
            .and_then(|c| c.with_fanout(4))
            .expect("config"),
    );
    let children: Vec<NodeId> = herald_core::Tree::new(nodes, 4, NodeId(0))
        .children(NodeId(1))
        .collect();
    let rounds: Vec<(Message, Vec<Message>)> = (0..KEYS)
        .map(registration)
        .map(|registration| {
            let key = registration.key();
            let acks = children
                .iter()
                .map(|_| Message::Ack {
                    key,
                    root: NodeId(0),
                    report: Report::default(),
                })
                .collect();
            let disseminate = Message::Disseminate {
                key,
                root: NodeId(0),
                view: node.view().size,
                registration,
            };
            (disseminate, acks)
        })
        .collect();
    let start = Instant::now();
    for (disseminate, acks) in rounds {
        node.handle_message(NodeId(0), disseminate)
            .expect("valid message");
        while let Some(output) = node.poll_output() {
            if let Output::Invoke(invocation) = output {
                node.invocation_finished(invocation.id, Ok(()))
                    .expect("running");
            } else {
                let _ = black_box(output);
            }
        }
        for (child, ack) in children.iter().zip(acks) {
            node.handle_message(*child, ack).expect("valid message");
            drain(&mut node);
        }
    }
    (KEYS * (1 + children.len() as u64), start.elapsed())
}

/// One registration on 10,000 nodes driven by a plain in-memory queue: every
/// message of the protocol handled by its node, invocations finished at once.
fn whole_registration() -> (u64, Duration) {
    let nodes = 10_000;
    let mut all: Vec<Node> = (0..nodes)
        .map(|i| Node::new(Config::new(NodeId(i), nodes).expect("config")))
        .collect();
    let mut queue: VecDeque<(NodeId, NodeId, Message)> = VecDeque::new();
    let mut handled = 0u64;
    let start = Instant::now();
    all[7].register(registration(0), None).expect("registers");
    let mut ready = VecDeque::from([NodeId(7)]);
    loop {
        while let Some(at) = ready.pop_front() {
            let node = &mut all[at.0 as usize];
            while let Some(output) = node.poll_output() {
                match output {
                    Output::Transmit { to, messages } => {
                        queue.extend(messages.into_iter().map(|m| (at, to, m)))
                    }
                    Output::Invoke(invocation) => node
                        .invocation_finished(invocation.id, Ok(()))
                        .expect("running"),
                    other => drop(black_box(other)),
                }
            }
        }
        let Some((from, to, message)) = queue.pop_front() else {
            break;
        };
        all[to.0 as usize]
            .handle_message(from, message)
            .expect("valid message");
        handled += 1;
        ready.push_back(to);
    }
    (handled, start.elapsed())
}

/// Has `node` coordinate `registration` for requester node 1; returns its key.
fn coordinate(node: &mut Node, registration: Registration) -> Key {
    let key = registration.key();
    node.handle_message(
        NodeId(1),
        Message::Request {
            key,
            registration,
            offer: None,
        },
    )
    .expect("valid request");
    while let Some(output) = node.poll_output() {
        if let Output::Invoke(invocation) = output {
            node.invocation_finished(invocation.id, Ok(()))
                .expect("running");
        }
    }
    key
}

fn registration(i: u64) -> Registration {
    Registration::new(format!("libbench.so:register_{i}").into_bytes(), Vec::new())
}

fn drain(node: &mut Node) {
    while let Some(output) = node.poll_output() {
        let _ = black_box(output);
    }
}
