//! Helpers shared by the integration tests: meshes formed in threads of this
//! process on loopback, event waits bounded by timeouts, and captured logs.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use herald_tcp::{Mesh, MeshConfig, MeshEvent, Secret};

/// Upper bound for anything a test waits for; never a synchronisation device.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A rank's configuration for tests: loopback, a unique cluster id, a bounded deadline.
pub fn config(
    rank: u32,
    size: u32,
    coordinator: SocketAddr,
    secret: &Secret,
    cluster: &str,
) -> MeshConfig {
    let mut config = MeshConfig::new(rank, size, coordinator, secret.clone());
    config.cluster_id = cluster.to_owned();
    config.establish_timeout = TIMEOUT;
    config
}

/// Forms a mesh of `size` ranks on threads; `tweak` adjusts each rank's config.
pub fn form(
    size: u32,
    cluster: &str,
    tweak: impl Fn(&mut MeshConfig) + Sync,
) -> Vec<(Mesh, Receiver<MeshEvent>)> {
    form_with(size, cluster, &Secret::random(), tweak)
}

/// Like [`form`], with a given secret.
pub fn form_with(
    size: u32,
    cluster: &str,
    secret: &Secret,
    tweak: impl Fn(&mut MeshConfig) + Sync,
) -> Vec<(Mesh, Receiver<MeshEvent>)> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let coordinator = listener.local_addr().expect("listener address");
    let secret = secret.clone();
    let make = |rank| {
        let mut config = config(rank, size, coordinator, &secret, cluster);
        tweak(&mut config);
        config
    };
    thread::scope(|scope| {
        let others: Vec<_> = (1..size)
            .map(|rank| {
                let config = make(rank);
                scope.spawn(move || Mesh::establish(config))
            })
            .collect();
        let zero = Mesh::establish_with_listener(make(0), listener);
        let mut meshes = vec![zero.unwrap_or_else(|err| panic!("rank 0: {err}"))];
        for (rank, handle) in (1..).zip(others) {
            let result = handle.join().expect("rank thread panicked");
            meshes.push(result.unwrap_or_else(|err| panic!("rank {rank}: {err}")));
        }
        meshes
    })
}

/// The next event, or a panic naming what was awaited.
pub fn recv(events: &Receiver<MeshEvent>, what: &str) -> MeshEvent {
    events
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|err| panic!("waiting for {what}: {err}"))
}

/// Receives one frame from `from`, skipping nothing: anything else is a failure.
pub fn expect_frame(events: &Receiver<MeshEvent>, from: u32, bytes: &[u8]) {
    match recv(events, "a frame") {
        MeshEvent::Frame { from: f, bytes: b } if f == from && b == bytes => {}
        other => panic!("expected frame {bytes:?} from {from}, got {other:?}"),
    }
}

/// Checks every pair of ranks can still exchange a frame both ways.
pub fn assert_all_pairs_work(meshes: &[(Mesh, Receiver<MeshEvent>)]) {
    for (a, (mesh_a, _)) in meshes.iter().enumerate() {
        for (b, (_, events_b)) in meshes.iter().enumerate() {
            if a != b {
                let tag = format!("probe {a}->{b}").into_bytes();
                mesh_a.send(b as u32, tag.clone());
                expect_frame(events_b, a as u32, &tag);
            }
        }
    }
}

/// Reads until the other side closes; fails if it is still open after `TIMEOUT`.
pub fn assert_closed_by_peer(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(TIMEOUT)).expect("set timeout");
    let mut sink = Vec::new();
    match stream.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
        Err(err) => panic!("connection was not closed by the mesh: {err}"),
    }
}

/// Opens a raw connection and writes `bytes` (a write error means it was already refused).
pub fn raw_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect to the mesh listener");
    let _ = stream.write_all(bytes);
    stream
}

/// Captured log lines of this test binary, with a condition variable to wait on.
struct Logs {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

static LOGS: OnceLock<&'static Logs> = OnceLock::new();

/// Installs the capturing subscriber once per test binary.
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let logs: &'static Logs = Box::leak(Box::new(Logs {
            lines: Mutex::new(Vec::new()),
            changed: Condvar::new(),
        }));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogWriter(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("install the log capture");
        logs
    });
}

/// Waits until a captured line contains every one of `needles`; panics (with
/// the captured logs) after `TIMEOUT`.
pub fn wait_for_log(needles: &[&str]) -> String {
    capture_logs();
    let logs = LOGS.get().expect("installed above");
    let deadline = Instant::now() + TIMEOUT;
    let mut lines = logs.lines.lock().expect("log lock");
    loop {
        if let Some(line) = lines
            .iter()
            .find(|line| needles.iter().all(|n| line.contains(n)))
        {
            return line.clone();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "no log line contains {needles:?}; captured:\n{}",
                lines.join("")
            );
        }
        lines = logs.changed.wait_timeout(lines, left).expect("log lock").0;
    }
}

struct LogWriter(&'static Logs);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer writes each event with one call.
        let mut lines = self
            .0
            .lines
            .lock()
            .map_err(|_| io::Error::other("log lock poisoned"))?;
        lines.push(String::from_utf8_lossy(buf).into_owned());
        self.0.changed.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
