//! Trace export in Chrome Trace Event JSON (opens in Perfetto and chrome://tracing),
//! hashed with SHA-256 as it is written so that determinism is checked for free.

use herald_core::NodeId;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What a run keeps of its trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TraceMode {
    /// No trace and no hash (exhaustive exploration).
    Off,
    /// The SHA-256 of the trace only.
    #[default]
    Hash,
    /// The hash and the trace's bytes, to write to a file.
    Keep,
}

/// Whether a frame event is its sending or its arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TraceKind {
    Send,
    Receive,
}

/// A trace being written: one JSON object, `{"traceEvents":[...]}`, one event per
/// line, with every node a thread of one process.
#[derive(Clone)]
pub(crate) struct Trace {
    mode: TraceMode,
    hasher: Sha256,
    bytes: Vec<u8>,
    line: Vec<u8>,
    events: u64,
}

#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    cat: &'static str,
    ph: &'static str,
    ts: f64,
    pid: u32,
    tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bp: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    args: serde_json::Value,
}

impl<'a> Event<'a> {
    /// An event on thread `tid` (a node) of the one process, with no duration, flow
    /// id, binding point, scope or arguments: each kind of event adds its own.
    fn new(name: &'a str, cat: &'static str, ph: &'static str, ts: f64, tid: u32) -> Self {
        Self {
            name,
            cat,
            ph,
            ts,
            pid: 0,
            tid,
            dur: None,
            id: None,
            bp: None,
            s: None,
            args: serde_json::Value::Null,
        }
    }
}

/// Length of the slice drawn for a send or a receive, so flow arrows bind to it.
const FRAME_SLICE_US: f64 = 0.01;

impl Trace {
    pub(crate) fn new(mode: TraceMode, nodes: u32, protocol: &str) -> Self {
        let mut trace = Self {
            mode,
            hasher: Sha256::new(),
            bytes: Vec::new(),
            line: Vec::new(),
            events: 0,
        };
        if mode != TraceMode::Off {
            trace.write_raw(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
            let name = format!("herald sim ({protocol}, {nodes} nodes)");
            trace.metadata("process_name", 0, &name);
            for node in 0..nodes {
                trace.metadata("thread_name", node, &format!("node {node}"));
            }
        }
        trace
    }

    /// Whether events are recorded at all.
    pub(crate) fn enabled(&self) -> bool {
        self.mode != TraceMode::Off
    }

    /// A frame sent or received, with a flow arrow from its sending to its arrival.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn frame(
        &mut self,
        kind: TraceKind,
        at_ns: u64,
        from: NodeId,
        to: NodeId,
        id: u64,
        label: &str,
        len: usize,
    ) {
        if !self.enabled() {
            return;
        }
        let (tid, name, args, ph, bp) = match kind {
            TraceKind::Send => (
                from,
                format!("send {label}"),
                serde_json::json!({ "to": to.0, "bytes": len, "frame": id }),
                "s",
                None,
            ),
            TraceKind::Receive => (
                to,
                format!("recv {label}"),
                serde_json::json!({ "from": from.0, "bytes": len, "frame": id }),
                "f",
                Some("e"),
            ),
        };
        let ts = micros(at_ns);
        self.event(&Event {
            dur: Some(FRAME_SLICE_US),
            args,
            ..Event::new(&name, "message", "X", ts, tid.0)
        });
        self.event(&Event {
            id: Some(id),
            bp,
            ..Event::new("frame", "message", ph, ts, tid.0)
        });
    }

    /// A span of work on a node, such as an invocation.
    pub(crate) fn span(
        &mut self,
        start_ns: u64,
        end_ns: u64,
        node: NodeId,
        name: &str,
        args: serde_json::Value,
    ) {
        if !self.enabled() {
            return;
        }
        self.event(&Event {
            dur: Some(micros(end_ns.saturating_sub(start_ns))),
            args,
            ..Event::new(name, "invocation", "X", micros(start_ns), node.0)
        });
    }

    /// A moment on a node: a request made, a completion, a crash, a failure noticed.
    pub(crate) fn instant(
        &mut self,
        at_ns: u64,
        node: NodeId,
        name: &str,
        args: serde_json::Value,
    ) {
        if !self.enabled() {
            return;
        }
        self.event(&Event {
            s: Some("t"),
            args,
            ..Event::new(name, "event", "i", micros(at_ns), node.0)
        });
    }

    /// Closes the JSON document; returns the SHA-256 (hex, empty when off) and, in
    /// [`TraceMode::Keep`], the document.
    pub(crate) fn finish(&mut self) -> (String, Option<Vec<u8>>) {
        if !self.enabled() {
            return (String::new(), None);
        }
        self.write_raw(b"\n]}\n");
        let digest = std::mem::take(&mut self.hasher).finalize();
        let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        let bytes = (self.mode == TraceMode::Keep).then(|| std::mem::take(&mut self.bytes));
        self.mode = TraceMode::Off;
        (hex, bytes)
    }

    fn metadata(&mut self, name: &str, tid: u32, value: &str) {
        self.event(&Event {
            args: serde_json::json!({ "name": value }),
            ..Event::new(name, "__metadata", "M", 0.0, tid)
        });
    }

    fn event(&mut self, event: &Event<'_>) {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        if self.events > 0 {
            line.extend_from_slice(b",\n");
        }
        serde_json::to_writer(&mut line, event).expect("a trace event always serializes");
        self.events += 1;
        self.write_raw(&line);
        self.line = line;
    }

    fn write_raw(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        if self.mode == TraceMode::Keep {
            self.bytes.extend_from_slice(bytes);
        }
    }
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}
