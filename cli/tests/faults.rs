//! Real faults on real processes: a rank stopped (SIGSTOP) past the peer timeout,
//! a peer that stalls in the middle of a frame, a peer that sends an invalid
//! frame (the one-sided down of old), a 70 MiB error text, ranks started with
//! different fan-outs, a rank cut off by its network (network namespaces), a
//! requester's coordinator killed while the requester's own run (`Ran`) is due,
//! and the warning about a held registration when silence is not detected.
//! Timeouts are short (heartbeat 200 ms, peer timeout 3 s) so each test takes
//! seconds; the harness's guard only bounds a broken run.

mod common;

use std::ffi::OsString;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::netns::Netns;
use common::{Job, RankSetup, args, build_c, herald_run};
use herald_core::{Message, NodeId, Registration, decode_frame};
use herald_host::HostConfig;
use herald_tcp::{Mesh, MeshConfig, RawLink, RawReceiver, Secret};

// Short enough to keep each test to seconds, long enough (15 missed heartbeats)
// that a rank starved of CPU on a busy 2-core machine is not suspected falsely.
const HEARTBEAT_MS: u64 = 200;
const PEER_TIMEOUT_MS: u64 = 3000;
/// `herald node`'s exit code when another node declared it down.
const FENCED_EXIT: i32 = 88;

/// Flags every rank of these tests gets: short liveness timing.
fn timing() -> Vec<OsString> {
    args([
        &"--heartbeat-ms",
        &HEARTBEAT_MS.to_string(),
        &"--peer-timeout-ms",
        &PEER_TIMEOUT_MS.to_string(),
    ])
}

/// `--load LIB --main LIB:main --library-path DIR` plus the short timing.
fn main_args(dir: &Path, library: &Path, main: &str) -> Vec<OsString> {
    let mut all = main_args_default_timing(dir, library, main);
    all.extend(timing());
    all
}

/// `--load LIB --main LIB:main --library-path DIR`, with herald's default timing
/// (for tests where nobody should be declared down).
fn main_args_default_timing(dir: &Path, library: &Path, main: &str) -> Vec<OsString> {
    let main = format!("{}:{main}", library.display());
    args([
        &"--load",
        &library,
        &"--main",
        &main,
        &"--library-path",
        &dir,
    ])
}

/// The seconds in a "has waited N s" warning.
fn waited_s(text: &str) -> Option<f64> {
    let rest = text.split_once("has waited ")?.1;
    rest.split_once(" s")?.0.parse().ok()
}

/// Rank 2 is stopped in the middle of a registration for longer than the peer
/// timeout: a warning names the waiting registration, the others declare rank 2
/// down, name it unreachable and finish. Continued later, rank 2 learns it was
/// declared down and exits with a message naming who did it and why.
#[test]
fn a_stopped_rank_is_named_then_fenced_when_it_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = build_c(dir.path(), "faults", "faults", "");
    let mut job = Job::start(4, |_| RankSetup {
        args: main_args(dir.path(), &faults, "main_stall"),
        env: vec![],
    });
    job.expect_line(|l| l.rank == 2 && l.text.contains("node 2: stalling"));
    job.signal(2, libc::SIGSTOP);
    job.wait_ranks(&[0, 1, 3]);
    job.expect_line(|l| {
        l.rank == 0
            && l.text.contains("stall registration: rc=1")
            && l.text.contains("unreachable nodes: 2")
    });
    // Named while it waited, before the peer timeout ran out.
    let warning = job.expect_line(|l| {
        l.rank == 0
            && l.text.contains("herald: registration ")
            && waited_s(&l.text).is_some_and(|s| s < PEER_TIMEOUT_MS as f64 / 1000.0)
    });
    assert!(
        warning
            .text
            .contains("declared down after the peer timeout (3s)"),
        "{}",
        warning.text
    );
    job.expect_line(|l| l.text.contains("rank 2 sent nothing for"));
    job.signal(2, libc::SIGCONT);
    let statuses = job.wait();
    let transcript = job.transcript();
    for rank in [0, 1, 3] {
        assert!(statuses[rank].success(), "rank {rank}\n{transcript}");
    }
    assert_eq!(statuses[2].code(), Some(FENCED_EXIT), "{transcript}");
    assert!(
        transcript.contains("[2 err] herald node: rank 2 was declared down by node"),
        "{transcript}"
    );
}

/// With no heartbeats (so no peer timeout: silence is not detected, as over
/// MPI), nothing declares a silent rank down: the warning about a registration
/// held by rank 2's callback says so, instead of pointing to a peer timeout.
#[test]
fn without_a_peer_timeout_the_warning_says_silence_is_not_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = build_c(dir.path(), "faults", "faults", "");
    let mut job = Job::start(3, |_| {
        let mut setup = main_args_default_timing(dir.path(), &faults, "main_stall");
        setup.extend(args([&"--heartbeat-ms", &"0"]));
        RankSetup {
            args: setup,
            env: vec![],
        }
    });
    job.expect_line(|l| l.rank == 2 && l.text.contains("node 2: stalling"));
    // herald's default: the first warning after 10 s.
    let warning = job.expect_line(|l| l.rank == 0 && l.text.contains("herald: registration "));
    assert!(
        warning.text.contains(
            "this transport does not detect a node that stopped answering (MPI, or a peer \
             timeout of 0)"
        ),
        "{}",
        warning.text
    );
    assert!(
        !warning.text.contains("after the peer timeout"),
        "{}",
        warning.text
    );
}

/// A 70 MiB error text from node 1's callback: the registration completes on
/// every node, and the result names node 1 with its error cut and marked.
#[test]
fn a_huge_error_text_is_cut_and_the_registration_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = build_c(dir.path(), "faults", "faults", "");
    let mut job = Job::start(3, |_| RankSetup {
        args: main_args_default_timing(dir.path(), &faults, "main_huge_error"),
        env: vec![],
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert!(
        transcript.contains("names node 1: yes; marked cut: yes"),
        "{transcript}"
    );
    assert!(!transcript.contains("messages dropped"), "{transcript}");
}

/// Rank 1 is started with another fan-out: the mesh refuses to form, and both
/// ranks say which values differ and what to do.
#[test]
fn a_fanout_mismatch_refuses_to_form_naming_both_values() {
    let mut job = Job::start(2, |rank| {
        let mut setup = args([&"--establish-timeout", &"10"]);
        if rank == 1 {
            setup.extend(args([&"--fanout", &"8"]));
        }
        RankSetup {
            args: setup,
            env: vec![],
        }
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| !s.success()), "{transcript}");
    assert!(
        transcript.contains(
            "node 1 uses fan-out 8, this node 4: start every rank with the same --fanout"
        ),
        "{transcript}"
    );
    assert!(
        transcript.contains("node 0 uses fan-out 4, this node 8"),
        "{transcript}"
    );
}

/// Rank 2 is played by this test: it joins the mesh, then sends rank 0 half a
/// frame and stalls (while still sending heartbeats to rank 1). Rank 0 declares
/// it down after the peer timeout; the job's view follows: rank 1 tells rank 2
/// and closes its link too, and the registration names 2 unreachable.
#[test]
fn a_peer_stalled_in_the_middle_of_a_frame_is_declared_down_by_everyone() {
    // A record announcing 100 bytes, then only 10 of them.
    let mut torn = 100u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[7u8; 10]);
    let transcript = fake_rank_two(|zero| zero.write_raw(&torn));
    assert!(
        transcript.contains("in the middle of a frame (14 of 104 bytes received)"),
        "{transcript}"
    );
}

/// Rank 2 (played by this test) sends rank 0 a frame that does not decode. Rank 0
/// no longer just marks it down on its own (the one-sided down, which left rank 1
/// waiting for it and rank 2 unaware): it declares it down to everyone, rank 1
/// passes the news on, and both close their links to it for good.
#[test]
fn an_invalid_frame_makes_a_down_everyone_agrees_on() {
    // Sealed with the right keys, so it reaches the protocol, which cannot decode it.
    let transcript = fake_rank_two(|zero| zero.send_frame(&[0xee; 8]));
    assert!(transcript.contains("sent an invalid frame"), "{transcript}");
}

/// Runs a job of 3 where ranks 0 and 1 are `herald node` (rank 0 runs
/// `main_stall_hold`) and rank 2 is this process: it does `to_rank_zero` on its
/// link to rank 0 and then sends nothing there, while heartbeating to rank 1. Checks
/// that both links to rank 2 carry `Down { node 2, by 0 }` and then close while
/// ranks 0 and 1 still run, and that they finish with 2 named unreachable.
/// Returns the job's transcript.
fn fake_rank_two(to_rank_zero: impl FnOnce(&mut RawLink) -> std::io::Result<()>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = build_c(dir.path(), "faults", "faults", "");
    let coordinator = common::free_port();
    let secret = Secret::random();
    let mut job = Job::start_with(
        2,
        coordinator,
        &secret.to_hex(),
        |_| Vec::new(),
        |rank| {
            let mut all = main_args(dir.path(), &faults, "main_stall_hold");
            all.extend(args([&"--rank", &rank.to_string(), &"--size", &"3"]));
            RankSetup {
                args: all,
                env: vec![],
            }
        },
    );
    let mut config = MeshConfig::new(2, 3, coordinator, secret);
    config.heartbeat = Duration::from_millis(HEARTBEAT_MS);
    config.peer_timeout = Duration::from_millis(PEER_TIMEOUT_MS);
    config.establish_timeout = Duration::from_secs(20);
    HostConfig::default().agree_on(&mut config);
    let mut streams = Mesh::establish_raw(config).expect("the fake rank joins");
    let mut zero = streams[0].take().expect("link to rank 0");
    let one = streams[1].take().expect("link to rank 1");
    to_rank_zero(&mut zero).expect("write to rank 0");
    let stop = Arc::new(AtomicBool::new(false));
    let (mut one_sender, one) = one.split();
    let (_zero_sender, zero) = zero.split();
    let heartbeats = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            while !stop.load(Ordering::Relaxed) && one_sender.send_heartbeat().is_ok() {
                std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
            }
        }
    });
    let readers = [zero, one].map(|link| std::thread::spawn(move || read_until_closed(link)));
    job.expect_line(|l| l.rank == 0 && l.text.contains("stall registration:"));
    for (rank, reader) in readers.into_iter().enumerate() {
        let frames = reader.join().expect("reader");
        let downs: Vec<(NodeId, NodeId)> = frames
            .iter()
            .filter_map(|f| decode_frame(f, herald_core::DEFAULT_MAX_FRAME_BYTES).ok())
            .flatten()
            .filter_map(|m| match m {
                Message::Down { node, by, .. } => Some((node, by)),
                _ => None,
            })
            .collect();
        assert_eq!(
            downs,
            vec![(NodeId(2), NodeId(0))],
            "link from rank {rank}\n{}",
            job.transcript()
        );
    }
    // Both links closed while ranks 0 and 1 still run (rank 0 waits on stdin).
    stop.store(true, Ordering::Relaxed);
    let _ = heartbeats.join();
    job.write_stdin(0, "go\n");
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert!(transcript.contains("unreachable nodes: 2"), "{transcript}");
    transcript
}

/// The frames a rank sends on `link` (heartbeats skipped) until it closes the
/// connection; panics if it stays open past the guard.
fn read_until_closed(mut link: RawReceiver) -> Vec<Vec<u8>> {
    link.set_read_timeout(Some(common::GUARD))
        .expect("read timeout");
    let mut frames = Vec::new();
    loop {
        match link.recv_frame() {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return frames,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return frames,
            Err(e) => panic!("the link stayed open (or failed): {e}"),
        }
    }
}

/// A real link failure: three ranks, each in a network namespace of its own on
/// one bridge; rank 2's veth goes down while it runs a registration. Ranks 0 and
/// 1 hear nothing from it for the peer timeout, declare it down, name it
/// unreachable and finish. Rank 2, cut off, hears nothing from either: it
/// declares them down itself, and since rank 0 (which runs the job) is gone in
/// its view it stops, saying why (the news that it was declared down cannot
/// reach it).
#[test]
fn a_rank_cut_off_by_its_network_is_named_and_stops() {
    let Some(net) = Netns::for_test("a_rank_cut_off_by_its_network_is_named_and_stops", 3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = build_c(dir.path(), "faults", "faults", "");
    let mut job = start_in_namespaces(&net, 3, dir.path(), &faults, "main_stall", &[]);
    job.expect_line(|l| l.rank == 2 && l.text.contains("node 2: stalling"));
    net.cut(2);
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses[0].success(), "{transcript}");
    assert!(statuses[1].success(), "{transcript}");
    assert!(transcript.contains("unreachable nodes: 2"), "{transcript}");
    assert!(!statuses[2].success(), "{transcript}");
    assert!(
        transcript.contains("[2 err] herald node: rank 0 went down before ending the job")
            && transcript.contains("rank 0 sent nothing for"),
        "{transcript}"
    );
    drop(job);
    drop(net);
}

/// A callback that does not return holds its registration on every node, and
/// the rank it runs on is alive and heartbeating, so nobody is declared down.
/// The job must still say where it is stuck: rank 2 (neither the requester nor
/// the coordinator) names the callback running there and for how long, and once
/// the callback returns the registration completes everywhere.
#[test]
fn a_callback_that_does_not_return_is_named_on_its_own_rank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let global = build_c(dir.path(), "global", "global", "");
    let go = dir.path().join("go");
    let env = [
        ("HERALD_TEST_TAG".to_owned(), tag_coordinated_by(1, 3)),
        ("HERALD_TEST_STALL_NODE".to_owned(), "2".to_owned()),
        (
            "HERALD_TEST_STALL_FILE".to_owned(),
            go.display().to_string(),
        ),
    ];
    let mut job = Job::start(3, |_| RankSetup {
        args: main_args(dir.path(), &global, "global_main"),
        env: env.to_vec(),
    });
    let warning = job.expect_line(|l| {
        l.rank == 2 && l.stderr && l.text.contains("has been running on this node")
    });
    assert!(
        warning.text.contains("global_noop") && warning.text.contains("callback"),
        "the warning names the callback: {}",
        warning.text
    );
    std::fs::write(&go, b"").expect("let the callback return");
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert_eq!(job.count("registration: ok on 3 nodes"), 1, "{transcript}");
    assert!(!transcript.contains("in the job's view"), "{transcript}");
}

/// The requester's own run (`Ran`): rank 0 requests a key that rank 1
/// coordinates (at N = 3 rank 0 is a childless child of rank 1, so it reports its
/// own run instead of being sent the registration) and is still in its callback
/// when rank 1 is killed. Rank 0 asks the next live node, rank 2, which already
/// ran it in rank 1's round, and reports its run there once the callback returns:
/// the registration completes naming rank 1 unreachable, and every rank ran it
/// once.
#[test]
fn a_requesters_coordinator_killed_before_its_run_is_done_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let global = build_c(dir.path(), "global", "global", "");
    let go = dir.path().join("go");
    let env = [
        ("HERALD_TEST_TAG".to_owned(), tag_coordinated_by(1, 3)),
        ("HERALD_TEST_STALL_NODE".to_owned(), "0".to_owned()),
        (
            "HERALD_TEST_STALL_FILE".to_owned(),
            go.display().to_string(),
        ),
    ];
    let mut job = Job::start(3, |_| RankSetup {
        args: main_args(dir.path(), &global, "global_main"),
        env: env.to_vec(),
    });
    job.expect_line(|l| l.rank == 0 && l.text.contains("node 0: in the callback"));
    job.expect_line(|l| l.rank == 2 && l.text == "node 2: ran");
    job.kill(1);
    job.expect_line(|l| l.rank == 0 && l.text.contains("node 1 is down in the job's view"));
    std::fs::write(&go, b"").expect("let the callback return");
    let statuses = job.wait();
    let transcript = job.transcript();
    assert_eq!(
        job.count_lines(|l| l.rank == 0
            && l.text.contains("registration: rc=")
            && l.text.contains("unreachable nodes: 1")),
        1,
        "{transcript}"
    );
    assert_eq!(
        statuses[0].code(),
        Some(3),
        "failed naming a node\n{transcript}"
    );
    assert!(statuses[2].success(), "{transcript}");
    for rank in [0, 2] {
        assert_eq!(ran(&job, rank), 1, "{transcript}");
    }
}

/// A callback or task that throws (a C++ exception, here raised with the
/// unwinder from C) cannot be caught by herald: the rank aborts, but first
/// says which callback or task threw and what to do instead.
#[test]
fn an_exception_escaping_a_callback_or_task_is_named_before_the_abort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = build_c(dir.path(), "throws", "throws", "");
    for (mode, named) in [
        (
            "callback",
            "an exception escaped callback throws_callback in ",
        ),
        (
            "task",
            "an exception escaped task 'throws.task' (throws_task in ",
        ),
    ] {
        let output = herald_run(
            2,
            &main_args(dir.path(), &library, "throws_main"),
            &[("HERALD_TEST_THROW", mode.to_owned())],
            common::GUARD,
        );
        let transcript = format!("{}{}", output.stdout, output.stderr);
        assert!(!output.status.success(), "{transcript}");
        assert!(
            transcript.contains(&format!("[1] herald: {named}")),
            "rank 1 names the {mode} that threw:\n{transcript}"
        );
        // Rank 0 ends too once it loses rank 1; whichever exit `herald run`
        // sees first, rank 1's abort is named.
        assert!(
            transcript
                .lines()
                .any(|line| line.starts_with("herald run: rank 1 ") && line.contains("SIGABRT")),
            "{transcript}"
        );
        assert!(!transcript.contains("was not caught"), "{transcript}");
    }
}

/// The normal end of a job is not a failure: ranks leave only once rank 0 has
/// closed its links (after every rank acknowledged the end), so no rank sees
/// another leave while it has not heard of the end, and nobody is declared down.
#[test]
fn a_normal_end_declares_nobody_down() {
    let mut job = Job::start(6, |_| RankSetup {
        args: timing(),
        env: vec![],
    });
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert!(!transcript.contains("in the job's view"), "{transcript}");
    assert!(!transcript.contains("lost"), "{transcript}");
}

/// Several hosts on one machine: 4 ranks, each in a network namespace of its own
/// on one bridge, each listening on its own address (`--bind`) with rank 0's as
/// the coordinator. The job forms over those addresses, the registration runs on
/// every rank, and the job ends cleanly.
#[test]
fn netns_four_hosts() {
    let Some(net) = Netns::for_test("netns_four_hosts", 4) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let global = build_c(dir.path(), "global", "global", "");
    let mut job = start_in_namespaces(&net, 4, dir.path(), &global, "global_main", &[]);
    let statuses = job.wait();
    let transcript = job.transcript();
    assert!(statuses.iter().all(|s| s.success()), "{transcript}");
    assert_eq!(job.count("registration: ok on 4 nodes"), 1, "{transcript}");
    for rank in 0..4 {
        assert_eq!(ran(&job, rank), 1, "{transcript}");
    }
    drop(job);
    drop(net);
}

/// The same 4 hosts, where ranks 1 and 2 reach each other over a link of their
/// own, which goes down (`ip link set ... down`) in the middle of a registration
/// that rank 1 coordinates, while rank 2 is still in its callback: rank 2's
/// acknowledgement cannot reach rank 1, and each of the two declares the other
/// down. The agreed-view rule (README, Limitations): one or both of them are
/// fenced; the result names only them (at least one), everyone it does not name
/// ran the registration, every named rank learns it was declared down and stops,
/// and nothing hangs.
#[test]
fn netns_four_hosts_one_link_cut() {
    let Some(net) = Netns::for_test("netns_four_hosts_one_link_cut", 4) else {
        return;
    };
    let (mut job, _dir, go) = start_with_node_2_in_its_callback(&net, 1);
    net.cut_direct(1, 2);
    std::fs::write(&go, b"").expect("open the gate");
    let statuses = job.wait();
    let transcript = job.transcript();
    let outcome = job
        .expect_line(|l| l.rank == 0 && l.text.starts_with("registration: "))
        .text;
    let named: Vec<u32> = outcome
        .split_once("unreachable nodes: ")
        .map(|(_, list)| {
            list.split(", ")
                .map(|n| n.trim().parse().expect("a node number"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !named.is_empty() && named.iter().all(|n| [1, 2].contains(n)),
        "the result must name rank 1, rank 2 or both: {outcome}\n{transcript}"
    );
    // main returns 3 for a registration that failed naming nodes.
    assert_eq!(statuses[0].code(), Some(3), "{transcript}");
    assert!(statuses[3].success(), "{transcript}");
    for rank in 0..4u32 {
        let status = statuses[rank as usize];
        if named.contains(&rank) {
            assert_eq!(
                status.code(),
                Some(FENCED_EXIT),
                "rank {rank}\n{transcript}"
            );
            assert!(
                transcript.contains(&format!(
                    "[{rank} err] herald node: rank {rank} was declared down by node"
                )),
                "rank {rank}\n{transcript}"
            );
        } else {
            assert_eq!(
                ran(&job, rank),
                1,
                "rank {rank} is not named, so it ran the registration\n{transcript}"
            );
            // Fenced without being named (both ends were declared down, and the
            // result was complete before the second news) or not fenced at all.
            assert!(
                status.success() || status.code() == Some(FENCED_EXIT) || rank == 0,
                "rank {rank}\n{transcript}"
            );
        }
    }
    drop(job);
    drop(net);
}

/// The link between rank 0 and rank 2 breaks in the middle of a registration,
/// and rank 2's links to the other ranks fall silent (packets dropped, nothing
/// closed) until both ends have declared each other down: rank 0's news reaches
/// ranks 1 and 3 first, so the job's verdict is that rank 2 is down, while rank
/// 2 has already applied its own news that rank 0 is down and hears the verdict
/// only once its links carry traffic again. Rank 2 must still end as a rank the
/// job declared down (status 88, which `herald run` lets the rest survive), not
/// as one that lost rank 0 (status 1, which makes `herald run` stop every rank).
#[test]
fn netns_a_rank_cut_from_rank_0_learns_the_verdict_after_its_own() {
    let Some(net) = Netns::for_test(
        "netns_a_rank_cut_from_rank_0_learns_the_verdict_after_its_own",
        4,
    ) else {
        return;
    };
    // Rank 1 coordinates, so it holds a link to rank 2 to send the verdict on.
    let (mut job, _dir, _go) = start_with_node_2_in_its_callback(&net, 0);
    net.cut_direct(0, 2);
    // Fault timing, not synchronisation: ranks 0 and 2 declare each other down
    // about one peer timeout after the cut; rank 2's other links fall silent
    // shortly before, for much less than a peer timeout in all.
    std::thread::sleep(Duration::from_millis(PEER_TIMEOUT_MS - 700));
    net.block(2, 1);
    net.block(2, 3);
    job.expect_line(|l| {
        l.rank == 2
            && l.text
                .contains("node 0 is down in the job's view (declared by node 2")
    });
    job.expect_line(|l| {
        l.rank == 0
            && l.text
                .contains("node 2 is down in the job's view (declared by node 0")
    });
    net.unblock(2, 1);
    net.unblock(2, 3);
    let statuses = job.wait();
    let transcript = job.transcript();
    let outcome = job
        .expect_line(|l| l.rank == 0 && l.text.starts_with("registration: "))
        .text;
    assert!(
        outcome.ends_with("unreachable nodes: 2"),
        "the job goes on without rank 2: {outcome}\n{transcript}"
    );
    assert_eq!(statuses[0].code(), Some(3), "{transcript}");
    assert!(
        statuses[1].success() && statuses[3].success(),
        "{transcript}"
    );
    assert_eq!(
        statuses[2].code(),
        Some(FENCED_EXIT),
        "rank 2 was declared down by the job, after it declared rank 0 down\n{transcript}"
    );
    assert!(
        transcript.contains("[2 err] herald node: rank 2 was declared down by node 0"),
        "{transcript}"
    );
    drop(job);
    drop(net);
}

/// Four ranks of `global_main` (cli/tests/c/global.c), one per namespace of
/// `net`, with a direct link between rank `linked` and rank 2, registering a key
/// that rank 1 coordinates; returns once node 2 is inside its callback, where it
/// stays until the returned file exists (with the directory that holds it).
fn start_with_node_2_in_its_callback(
    net: &Netns,
    linked: u32,
) -> (Job, tempfile::TempDir, std::path::PathBuf) {
    net.direct_link(linked, 2).expect("a direct link to rank 2");
    let dir = tempfile::tempdir().expect("tempdir");
    let global = build_c(dir.path(), "global", "global", "");
    let go = dir.path().join("go");
    let env = [
        ("HERALD_TEST_TAG", tag_coordinated_by(1, 4)),
        ("HERALD_TEST_STALL_NODE", "2".to_owned()),
        ("HERALD_TEST_STALL_FILE", go.display().to_string()),
    ];
    let mut job = start_in_namespaces(net, 4, dir.path(), &global, "global_main", &env);
    job.expect_line(|l| l.rank == 2 && l.text.contains("node 2: in the callback"));
    (job, dir, go)
}

/// Starts `nodes` ranks of `main` from `library` (e.g. `global_main` of
/// cli/tests/c/global.c), one per namespace of `net`, each bound to its own
/// address, rank 0's as the coordinator, with the short liveness timing and `env`.
fn start_in_namespaces(
    net: &Netns,
    nodes: u32,
    dir: &Path,
    library: &Path,
    main: &str,
    env: &[(&str, String)],
) -> Job {
    let coordinator = SocketAddr::from((Netns::addr(0), 7700));
    Job::start_with(
        nodes,
        coordinator,
        &Secret::random().to_hex(),
        |rank| net.wrap(rank),
        |rank| {
            let mut all = main_args(dir, library, main);
            all.extend(args([
                &"--bind",
                &Netns::addr(rank).to_string(),
                &"--coordinator",
                &coordinator.to_string(),
            ]));
            RankSetup {
                args: all,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            }
        },
    )
}

/// How many times rank `rank`'s callback of `global_main` said it ran.
fn ran(job: &Job, rank: u32) -> usize {
    let line = format!("node {rank}: ran");
    job.count_lines(|l| l.rank == rank && !l.stderr && l.text == line)
}

/// A dedup tag whose key's home (its coordinator while every node is up) is
/// `node` in a job of `nodes`.
fn tag_coordinated_by(node: u32, nodes: u32) -> String {
    (0..)
        .map(|i| format!("cut-{i}"))
        .find(|tag| {
            Registration::new(Vec::new(), Vec::new())
                .with_tag(tag.clone())
                .key()
                .home(nodes)
                == NodeId(node)
        })
        .expect("some tag has that home")
}
