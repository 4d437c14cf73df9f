//! The C API of the core driven as a C caller would drive it: a job of cores
//! exchanging encoded frames, nesting, failures, launches, misuse.

mod common;

use common::{Core, Job, Out};
use herald_core_c::*;

#[test]
fn a_registration_from_one_node_runs_once_on_every_node() {
    let mut job = Job::new(4);
    let request = job.cores[0]
        .register(b"callback", b"args", None, None)
        .expect("registered");
    job.run(|_, _, _| None);
    for node in 0..4 {
        assert_eq!(job.invocations(node), 1, "node {node} ran it once");
    }
    let completed = job.completions(0);
    assert_eq!(completed.len(), 1);
    let Out::Completed {
        request: answered,
        global,
        ok,
        failures,
        unreachable,
        summary,
        ..
    } = &completed[0]
    else {
        unreachable!()
    };
    assert_eq!(*answered, request);
    assert!(*global && *ok && failures.is_empty() && unreachable.is_empty());
    assert!(summary.contains("succeeded"), "{summary}");
    let invoked: Vec<&Out> = job
        .seen
        .iter()
        .filter(|(_, o)| matches!(o, Out::Invoke { .. }))
        .map(|(_, o)| o)
        .collect();
    for out in invoked {
        let Out::Invoke {
            code,
            args,
            tag,
            parent,
            ..
        } = out
        else {
            unreachable!()
        };
        assert_eq!(
            (code.as_slice(), args.as_slice(), tag, parent),
            (&b"callback"[..], &b"args"[..], &None, &None)
        );
    }
}

#[test]
fn replicated_requests_are_one_registration() {
    let mut job = Job::new(4);
    for node in 0..4 {
        job.cores[node]
            .register(b"callback", b"same", Some("tag-1"), None)
            .expect("registered");
    }
    job.run(|_, _, _| None);
    for node in 0..4 {
        assert_eq!(job.invocations(node), 1, "node {node} ran it once");
        let completed = job.completions(node);
        assert_eq!(completed.len(), 1, "node {node} got its answer");
        assert!(matches!(
            &completed[0],
            Out::Completed {
                ok: true,
                global: true,
                ..
            }
        ));
    }
}

#[test]
fn nested_registration_runs_locally_and_holds_the_enclosing_one() {
    let mut job = Job::new(3);
    job.cores[1]
        .register(b"outer", b"", None, None)
        .expect("registered");
    job.run(|core, _, out| {
        let Out::Invoke {
            invocation, code, ..
        } = out
        else {
            unreachable!()
        };
        if code == b"outer" {
            core.register(b"inner", b"", None, Some(*invocation))
                .expect("nested");
        }
        None
    });
    for node in 0..3 {
        assert_eq!(job.invocations(node), 2, "node {node} ran outer and inner");
        let local: Vec<Out> = job
            .completions(node)
            .into_iter()
            .filter(|o| matches!(o, Out::Completed { global: false, .. }))
            .collect();
        assert_eq!(
            local.len(),
            1,
            "node {node}: the nested request is answered locally"
        );
    }
    let global: Vec<Out> = job
        .completions(1)
        .into_iter()
        .filter(|o| matches!(o, Out::Completed { global: true, .. }))
        .collect();
    assert!(matches!(&global[..], [Out::Completed { ok: true, .. }]));
}

#[test]
fn a_failure_is_reported_with_its_node_and_text() {
    let mut job = Job::new(4);
    job.cores[0]
        .register(b"callback", b"", None, None)
        .expect("registered");
    job.run(|_, node, _| (node == 3).then(|| "boom on three".to_owned()));
    let completed = job.completions(0);
    let [
        Out::Completed {
            ok,
            failures,
            summary,
            ..
        },
    ] = &completed[..]
    else {
        panic!("{completed:?}")
    };
    assert!(!ok);
    assert_eq!(failures, &vec![(3, "boom on three".to_owned())]);
    assert!(summary.contains("node 3: boom on three"), "{summary}");
}

#[test]
fn launches_run_after_the_registrations_before_them() {
    let mut job = Job::new(4);
    job.cores[0]
        .register(b"callback", b"", None, None)
        .expect("registered");
    let launches: Vec<u64> = (0..4)
        .map(|to| {
            job.cores[0]
                .launch(to, "reverse", b"abc", None)
                .expect("launched")
        })
        .collect();
    job.run(|_, _, _| None);
    for (to, launch) in launches.iter().enumerate() {
        let answer = job.seen.iter().find_map(|(n, o)| match o {
            Out::TaskCompleted {
                launch: l,
                node,
                status,
                result,
                ..
            } if *n == 0 && l == launch => Some((*node, *status, result.clone())),
            _ => None,
        });
        assert_eq!(
            answer,
            Some((to as u32, HERALD_CORE_TASK_OK, b"cba".to_vec()))
        );
    }
    // On every node the task ran only after the registration's invocation.
    for node in 0..4u32 {
        let order: Vec<&str> = job
            .seen
            .iter()
            .filter(|(n, _)| *n == node)
            .filter_map(|(_, o)| match o {
                Out::Invoke { .. } => Some("invoke"),
                Out::RunTask { .. } => Some("task"),
                _ => None,
            })
            .collect();
        assert_eq!(order, ["invoke", "task"], "node {node}");
    }
}

#[test]
fn a_launch_to_a_dead_node_is_unreachable() {
    let mut job = Job::new(3);
    let launch = job.cores[0].launch(2, "t", b"", None).expect("launched");
    assert_eq!(job.cores[0].peer_down(2), HERALD_CORE_OK);
    job.wire.clear();
    job.run(|_, _, _| None);
    let answer = job.seen.iter().find_map(|(_, o)| match o {
        Out::TaskCompleted {
            launch: l,
            status,
            node,
            error,
            ..
        } if *l == launch => Some((*status, *node, error.clone())),
        _ => None,
    });
    let (status, node, error) = answer.expect("answered");
    assert_eq!((status, node), (HERALD_CORE_TASK_UNREACHABLE, 2));
    assert!(error.contains("unreachable"), "{error}");
}

#[test]
fn misuse_is_an_error_code_with_a_reason() {
    let error = Core::with(4, 4, 0, 0)
        .err()
        .expect("rank 4 of 4 is refused");
    assert!(error.contains('4'), "{error}");
    assert!(Core::with(0, 0, 0, 0).is_err());
    let mut core = Core::new(0, 2);
    assert_eq!(core.invocation_finished(42, None), HERALD_CORE_ERR_UNKNOWN);
    assert!(core.error().contains("invocation 42"), "{}", core.error());
    assert_eq!(core.task_finished(1, 7, Ok(b"x")), HERALD_CORE_ERR_UNKNOWN);
    assert_eq!(
        core.register(b"c", b"", None, Some(9)),
        Err(HERALD_CORE_ERR_UNKNOWN)
    );
    assert_eq!(core.launch(5, "t", b"", None), Err(HERALD_CORE_ERR_INVALID));
    assert_eq!(
        core.peer_down(0),
        HERALD_CORE_ERR_INVALID,
        "a node cannot report itself"
    );
    assert_eq!(
        core.handle_frame(1, b"\x01garbage"),
        HERALD_CORE_ERR_PROTOCOL
    );
    assert!(
        core.error().contains("frame from node 1"),
        "{}",
        core.error()
    );
    assert_eq!(
        core.handle_frame(0, b"\x01"),
        HERALD_CORE_ERR_PROTOCOL,
        "a node never messages itself"
    );
    // NULL pointers.
    // SAFETY: NULL is allowed and refused.
    unsafe {
        assert_eq!(
            herald_core_handle_frame(std::ptr::null_mut(), 0, std::ptr::null(), 0),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_poll(std::ptr::null_mut(), std::ptr::null_mut()),
            HERALD_CORE_NONE
        );
        assert_eq!(
            herald_core_handle_frame(core.0, 1, std::ptr::null(), 3),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_launch(
                core.0,
                1,
                std::ptr::null(),
                std::ptr::null(),
                0,
                HERALD_CORE_NO_PARENT,
                std::ptr::null_mut()
            ),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_poll(core.0, std::ptr::null_mut()),
            HERALD_CORE_NONE
        );
        herald_core_free(std::ptr::null_mut());
    }
    // Still usable after every refusal.
    core.register(b"c", b"", None, None).expect("registered");
    assert!(core.drain().iter().any(|o| matches!(o, Out::Invoke { .. })));
}

#[test]
fn too_large_is_refused_at_the_input() {
    let mut core = Core::with(0, 2, 0, 4096).expect("config");
    assert_eq!(
        core.register(&vec![7; 8192], b"", None, None),
        Err(HERALD_CORE_ERR_TOO_LARGE)
    );
    assert_eq!(
        core.launch(1, "t", &vec![7; 8192], None),
        Err(HERALD_CORE_ERR_TOO_LARGE)
    );
}

#[test]
fn a_peer_down_reaches_every_node_and_fences_the_declared_one() {
    let mut job = Job::new(4);
    assert_eq!(job.cores[1].peer_down(3), HERALD_CORE_OK);
    job.run(|_, _, _| None);
    for node in [0, 1, 2] {
        let down: Vec<&Out> = job
            .seen
            .iter()
            .filter(|(n, _)| *n == node)
            .map(|(_, o)| o)
            .collect();
        assert!(
            matches!(&down[..], [Out::PeerDown { node: 3, by: 1, reason }] if reason == "test"),
            "node {node}: {down:?}"
        );
    }
    let fenced: Vec<&Out> = job
        .seen
        .iter()
        .filter(|(n, _)| *n == 3)
        .map(|(_, o)| o)
        .collect();
    assert!(
        matches!(&fenced[..], [Out::Fenced { by: 1, .. }]),
        "{fenced:?}"
    );
    assert_eq!(
        job.cores[3].register(b"c", b"", None, None),
        Err(HERALD_CORE_ERR_FENCED)
    );
    assert!(
        job.cores[3].error().contains("declared down by node 1"),
        "{}",
        job.cores[3].error()
    );
}

#[test]
fn an_invalid_frame_makes_its_sender_down() {
    let mut core = Core::new(0, 3);
    assert_eq!(
        core.handle_frame(2, b"\x01\xff\xff\xff"),
        HERALD_CORE_ERR_PROTOCOL
    );
    let outputs = core.drain();
    assert!(
        outputs.iter().any(|o| matches!(o, Out::PeerDown { node: 2, by: 0, reason } if reason.contains("invalid frame"))),
        "{outputs:?}"
    );
}
