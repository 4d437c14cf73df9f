//! Runtimes of one process over real herald-tcp meshes: frames are handled on the
//! mesh's I/O thread (its event hook), and a program that hands the runtime its
//! frames through a channel of its own (no hook reaches it) is still served.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;
use herald_host::{CodeRef, Executor, HostConfig, Runtime};
use herald_tcp::{Mesh, MeshConfig, MeshEvent, Secret};

const GUARD: Duration = Duration::from_secs(30);

/// Counts its invocations.
#[derive(Default)]
struct Counter(AtomicU32);

impl Executor for Counter {
    fn invoke(&self, _payload: &[u8], _args: &[u8]) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn run_task(&self, _payload: &[u8], _args: &[u8]) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
}

/// Two ranks' meshes, formed in this process.
fn meshes() -> [(Mesh, Receiver<MeshEvent>); 2] {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let coordinator = listener.local_addr().expect("address");
    let secret = Secret::random();
    let config = |rank| {
        let mut config = MeshConfig::new(rank, 2, coordinator, secret.clone());
        HostConfig::default().agree_on(&mut config);
        config
    };
    let one = std::thread::spawn({
        let config = config(1);
        move || Mesh::establish(config).expect("rank 1 joins")
    });
    let zero = Mesh::establish_with_listener(config(0), listener).expect("rank 0 forms");
    [zero, one.join().expect("rank 1")]
}

/// Registers ten no-op registrations from rank 0 and checks that each ran once
/// on both ranks.
fn registrations_run_everywhere(runtimes: &[Runtime], counters: &[Arc<Counter>]) {
    for round in 0..10u32 {
        let code = CodeRef::Custom {
            kind: "count".into(),
            payload: Vec::new(),
        };
        let result = runtimes[0]
            .register_global(code, round.to_le_bytes().to_vec(), None)
            .wait_timeout(GUARD)
            .expect("the registration completes");
        assert!(result.is_ok(), "{result:?}");
    }
    for counter in counters {
        assert_eq!(counter.0.load(Ordering::SeqCst), 10);
    }
}

fn start(mesh: Mesh, events: Receiver<MeshEvent>) -> (Runtime, Arc<Counter>) {
    let runtime = Runtime::start(mesh, events, HostConfig::default()).expect("runtime");
    let counter = Arc::new(Counter::default());
    runtime.register_executor("count", Arc::clone(&counter) as Arc<dyn Executor>);
    (runtime, counter)
}

#[test]
fn frames_are_handled_on_the_mesh_thread() {
    let [(mesh0, events0), (mesh1, events1)] = meshes();
    let (zero, count0) = start(mesh0, events0);
    let (one, count1) = start(mesh1, events1);
    registrations_run_everywhere(&[zero.clone(), one.clone()], &[count0, count1]);
    one.shutdown();
    zero.shutdown();
}

/// The mesh's hook fires for its own channel; rank 1's runtime reads another
/// one, which a thread fills from the mesh's. Its event loop thread looks at
/// that channel regularly, so the job still works (slower), instead of hanging.
#[test]
fn frames_forwarded_through_another_channel_are_still_handled() {
    let [(mesh0, events0), (mesh1, events1)] = meshes();
    let (forward, forwarded) = crossbeam_channel::unbounded();
    let forwarder = std::thread::spawn(move || {
        for event in events1 {
            if forward.send(event).is_err() {
                break;
            }
        }
    });
    let (zero, count0) = start(mesh0, events0);
    let (one, count1) = start(mesh1, forwarded);
    registrations_run_everywhere(&[zero.clone(), one.clone()], &[count0, count1]);
    one.shutdown();
    zero.shutdown();
    forwarder.join().expect("forwarder");
}

/// Many threads on both ranks register at once while frames arrive: the event
/// loop is run by callers, workers and both I/O threads in turn, and every
/// registration completes, each invoked exactly once on each rank.
#[test]
fn concurrent_registrations_from_both_ranks_all_complete() {
    const THREADS: u32 = 4;
    const EACH: u32 = 50;
    let [(mesh0, events0), (mesh1, events1)] = meshes();
    let (zero, count0) = start(mesh0, events0);
    let (one, count1) = start(mesh1, events1);
    let callers: Vec<_> = [zero.clone(), one.clone()]
        .into_iter()
        .enumerate()
        .flat_map(|(rank, runtime)| {
            (0..THREADS).map(move |thread| {
                let runtime = runtime.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        // Both ranks ask for the same keys: each runs once per rank.
                        let args = [thread, i].map(u32::to_le_bytes).concat();
                        let code = CodeRef::Custom {
                            kind: "count".into(),
                            payload: Vec::new(),
                        };
                        let handle = runtime.register_global(code, args, None);
                        let result = handle.wait_timeout(GUARD);
                        assert!(
                            matches!(&result, Ok(r) if r.is_ok()),
                            "rank {rank} thread {thread} registration {i}: {result:?}"
                        );
                    }
                })
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("a caller failed");
    }
    for counter in [count0, count1] {
        assert_eq!(counter.0.load(Ordering::SeqCst), THREADS * EACH);
    }
    one.shutdown();
    zero.shutdown();
}
