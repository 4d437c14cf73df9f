//! Where a transport's events go: a channel, and an optional hook called on the
//! transport's own thread after each event, so that the runtime can handle a
//! frame on the thread that read it instead of waking one of its own.

use std::sync::{Arc, OnceLock};

use crossbeam_channel::Sender;

use crate::MeshEvent;

/// Called after each event a transport puts in its channel, on the thread that
/// put it there. It must not block: it runs on the transport's I/O thread.
pub type EventHook = Arc<dyn Fn() + Send + Sync>;

/// Asked by a transport's thread before each poll while it polls for the next
/// event: false makes it sleep until woken instead (the owner's own threads are
/// busy running user code, which polling would take the cores from).
pub type PollGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// The sending side of a transport's event channel, with the hook (set at most
/// once) that is called after every event.
#[derive(Clone)]
pub struct EventSender {
    channel: Sender<MeshEvent>,
    hook: Arc<OnceLock<EventHook>>,
}

impl EventSender {
    /// Events go to `channel`; no hook until [`EventSender::set_hook`].
    pub fn new(channel: Sender<MeshEvent>) -> EventSender {
        EventSender {
            channel,
            hook: Arc::new(OnceLock::new()),
        }
    }

    /// Puts `event` in the channel, then calls the hook (if any). An event for a
    /// receiver that is gone is dropped: nobody listens any more.
    pub fn send(&self, event: MeshEvent) {
        let _ = self.channel.send(event);
        if let Some(hook) = self.hook.get() {
            hook();
        }
    }

    /// Sets the hook for every clone of this sender. Returns false (and keeps the
    /// first) if one was set already.
    pub fn set_hook(&self, hook: EventHook) -> bool {
        self.hook.set(hook).is_ok()
    }
}
