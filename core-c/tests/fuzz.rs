//! Untrusted bytes and arbitrary call sequences through the C entry points: the
//! core answers with error codes, never panics (which would show as
//! HERALD_CORE_ERR_BROKEN), and every output it hands out stays well-formed.

mod common;

use common::{Core, Job, Out};
use herald_core_c::*;
use proptest::prelude::*;

const NODES: u32 = 4;

/// Valid frames of every message kind, from a job with a registration (one
/// node failing it), a nested one, and launches.
fn corpus() -> Vec<(u32, u32, Vec<u8>)> {
    let mut job = Job::new(NODES);
    job.cores[1]
        .register(b"lib:callback", b"args", Some("tag"), None)
        .expect("registered");
    job.cores[2]
        .register(b"lib:other", b"", None, None)
        .expect("registered");
    for to in 0..NODES {
        job.cores[3]
            .launch(to, "task", b"xyz", None)
            .expect("launched");
    }
    job.run(|core, node, out| {
        let Out::Invoke {
            invocation, code, ..
        } = out
        else {
            unreachable!()
        };
        if code == b"lib:callback" {
            core.register(b"lib:nested", b"", None, Some(*invocation))
                .expect("nested");
        }
        (node == 2).then(|| "failed here".to_owned())
    });
    assert!(job.sent.len() > 10, "the corpus covers the exchange");
    job.sent
}

fn check(code: i32, core: &Core) {
    assert_ne!(
        code,
        HERALD_CORE_ERR_BROKEN,
        "the core broke: {}",
        core.error()
    );
}

/// Drains every output (each copied and checked by `poll`).
fn drain_all(core: &mut Core) {
    for out in core.drain() {
        if let Out::Invoke { invocation, .. } = out {
            check(core.invocation_finished(invocation, None), core);
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
}

fn mutate(mut frame: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        match *mutation {
            Mutation::Set(at, byte) if !frame.is_empty() => {
                let at = at % frame.len();
                frame[at] = byte;
            }
            Mutation::Truncate(len) => frame.truncate(len),
            Mutation::Insert(at, byte) => {
                let at = at % (frame.len() + 1);
                frame.insert(at, byte);
            }
            Mutation::Set(..) => {}
        }
    }
    frame
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        (0usize..64).prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Insert(a, b)),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Register {
        code: u8,
        parent: Option<u64>,
        tag: bool,
    },
    Finished {
        invocation: u64,
        failed: bool,
    },
    TaskFinished {
        origin: u32,
        launch: u64,
    },
    Launch {
        to: u32,
        parent: Option<u64>,
    },
    Down {
        node: u32,
    },
    Frame {
        from: u32,
        pick: usize,
        mutations: Vec<Mutation>,
    },
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<u8>(), proptest::option::of(0u64..4), any::<bool>())
            .prop_map(|(code, parent, tag)| Op::Register { code, parent, tag }),
        (0u64..6, any::<bool>())
            .prop_map(|(invocation, failed)| Op::Finished { invocation, failed }),
        (0u32..5, 0u64..4).prop_map(|(origin, launch)| Op::TaskFinished { origin, launch }),
        (0u32..5, proptest::option::of(0u64..4)).prop_map(|(to, parent)| Op::Launch { to, parent }),
        (0u32..5).prop_map(|node| Op::Down { node }),
        (
            0u32..5,
            any::<usize>(),
            proptest::collection::vec(mutation(), 0..3)
        )
            .prop_map(|(from, pick, mutations)| Op::Frame {
                from,
                pick,
                mutations
            }),
        Just(Op::Poll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused_not_fatal(from in 0u32..6, bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut core = Core::new(0, NODES);
        let code = core.handle_frame(from, &bytes);
        check(code, &core);
        if from < NODES {
            prop_assert!([HERALD_CORE_OK, HERALD_CORE_ERR_PROTOCOL].contains(&code), "code {code}");
        } else {
            prop_assert_eq!(code, HERALD_CORE_ERR_INVALID, "node {} is outside the job", from);
        }
        drain_all(&mut core);
        // Still working.
        prop_assert!(core.register(b"after", b"", None, None).is_ok());
        let invoked = core.drain().iter().any(|o| matches!(o, Out::Invoke { .. }));
        prop_assert!(invoked);
    }

    #[test]
    fn mutated_frames_are_refused_not_fatal(pick in any::<usize>(), mutations in proptest::collection::vec(mutation(), 1..4)) {
        let corpus = corpus();
        let (from, to, frame) = corpus[pick % corpus.len()].clone();
        let mut core = Core::new(to, NODES);
        let code = core.handle_frame(from, &mutate(frame, &mutations));
        check(code, &core);
        drain_all(&mut core);
    }

    #[test]
    fn arbitrary_call_sequences_never_break_the_core(me in 0u32..NODES, ops in proptest::collection::vec(op(), 1..40)) {
        let corpus = corpus();
        let mut core = Core::new(me, NODES);
        for op in ops {
            let code = match op {
                Op::Register { code, parent, tag } => core
                    .register(&[code], b"", tag.then_some("t"), parent)
                    .map_or_else(|e| e, |_| HERALD_CORE_OK),
                Op::Finished { invocation, failed } => core.invocation_finished(invocation, failed.then_some("no")),
                Op::TaskFinished { origin, launch } => core.task_finished(origin, launch, Ok(b"r")),
                Op::Launch { to, parent } => core.launch(to, "t", b"a", parent).map_or_else(|e| e, |_| HERALD_CORE_OK),
                Op::Down { node } => core.peer_down(node),
                Op::Frame { from, pick, mutations } => {
                    let (_, _, frame) = &corpus[pick % corpus.len()];
                    core.handle_frame(from, &mutate(frame.clone(), &mutations))
                }
                Op::Poll => {
                    core.poll();
                    HERALD_CORE_OK
                }
            };
            check(code, &core);
        }
        drain_all(&mut core);
    }
}
