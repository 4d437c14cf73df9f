//! The job's fixed membership. A core made with `herald_core_new` never joins
//! nor admits anyone, so every node id a frame names lies below the job's size;
//! the Rust core accepts larger ids (nodes that joined since), and would grow its
//! view, and send to nodes the caller's network does not have, if a buggy or
//! hostile peer named one.

use herald_core::{Message, NodeId, Report};

/// Why `message` names a node outside a job of `nodes` nodes, if it does.
pub(crate) fn outside_the_job(message: &Message, nodes: u32) -> Option<String> {
    let beyond = |node: NodeId| (node.0 >= nodes).then_some(node.0);
    let view = |view: u32| (view > nodes).then_some(view);
    let found = match message {
        Message::Disseminate { root, view: v, .. } => beyond(*root).or(view(*v)),
        Message::Ack { root, report, .. } => beyond(*root).or(in_report(report, nodes)),
        Message::Complete {
            view: v, report, ..
        } => view(*v).or(in_report(report, nodes)),
        Message::Down { node, by, .. } => beyond(*node).or(beyond(*by)),
        // A welcome is ignored by a node that is not joining (none here); the
        // others name no node (a task result's node is not used to route).
        Message::Ran { view: v, .. } => view(*v),
        Message::Request { offer, .. } => offer.and_then(view),
        Message::Launch { .. }
        | Message::TaskResult { .. }
        | Message::Welcome { .. }
        | Message::Fetch { .. }
        | Message::Supply { .. } => None,
    }?;
    Some(format!(
        "a {} message names node {found}, outside this job of {nodes}",
        message.kind()
    ))
}

fn in_report(report: &Report, nodes: u32) -> Option<u32> {
    [report.failed.max(), report.unreachable.max()]
        .into_iter()
        .flatten()
        .chain(report.failures.keys().copied())
        .map(|node| node.0)
        .find(|&node| node >= nodes)
}
