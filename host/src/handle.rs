//! Handles returned by non-blocking calls: wait on them when the result matters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::RegistrationResult;

use crate::error::HostError;
use crate::shared::Shared;

/// A registration in progress. Waiting is refused (with
/// [`HostError::WouldDeadlock`]) where it could never end: inside a library load,
/// inside the invocation the registration waits for, or where invocations
/// running at once on this node would wait for each other in a cycle (the wait
/// that would close it is refused; a wait already blocked is woken with the
/// refusal if a nested registration closes a cycle through it later).
pub struct RegistrationHandle {
    shared: Arc<Shared>,
    id: u64,
}

/// A launched task in progress.
pub struct TaskHandle {
    shared: Arc<Shared>,
    id: u64,
}

impl RegistrationHandle {
    pub(crate) fn new(shared: Arc<Shared>, id: u64) -> Self {
        Self { shared, id }
    }

    /// The handle's id (the C ABI's `herald_handle`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Blocks until the registration completes. `Ok` when every node ran it;
    /// [`HostError::Registration`] names the nodes that failed or were unreachable.
    pub fn wait(&self) -> Result<RegistrationResult, HostError> {
        self.shared.wait_registration(self.id, None)
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<RegistrationResult, HostError> {
        self.shared
            .wait_registration(self.id, Some(Instant::now() + timeout))
    }

    /// The outcome if it is there, without blocking: what [`wait`](Self::wait)
    /// would return (a registration that failed on some node is
    /// [`HostError::Registration`]; a stopped runtime is [`HostError::Stopped`]),
    /// or `None` while it is in progress.
    pub fn try_result(&self) -> Option<Result<RegistrationResult, HostError>> {
        self.shared.try_registration(self.id)
    }

    /// Gives up ownership without releasing: the id stays valid until passed to
    /// [`release_raw`](Self::release_raw) (the C ABI's `herald_release`).
    pub fn into_raw(self) -> u64 {
        let id = self.id;
        std::mem::forget(self);
        id
    }

    /// Releases a handle given up with [`into_raw`](Self::into_raw).
    pub fn release_raw(runtime: &crate::Runtime, id: u64) {
        runtime.shared().release_registration(id);
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        self.shared.release_registration(self.id);
    }
}

impl TaskHandle {
    pub(crate) fn new(shared: Arc<Shared>, id: u64) -> Self {
        Self { shared, id }
    }

    /// The handle's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Blocks until the task's result bytes are back, or why there are none
    /// ([`HostError::Task`]: not registered there, failed, node unreachable).
    pub fn wait(&self) -> Result<Vec<u8>, HostError> {
        self.shared.wait_task(self.id, None)
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Vec<u8>, HostError> {
        self.shared
            .wait_task(self.id, Some(Instant::now() + timeout))
    }

    /// The outcome if it is there, without blocking: what [`wait`](Self::wait)
    /// would return, or `None` while the task is pending.
    pub fn try_result(&self) -> Option<Result<Vec<u8>, HostError>> {
        self.shared.try_task(self.id)
    }

    /// Gives up ownership without releasing (see [`RegistrationHandle::into_raw`]).
    pub fn into_raw(self) -> u64 {
        let id = self.id;
        std::mem::forget(self);
        id
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.shared.release_task(self.id);
    }
}

impl std::fmt::Debug for RegistrationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistrationHandle({})", self.id)
    }
}

impl std::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskHandle({})", self.id)
    }
}
