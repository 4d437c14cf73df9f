//! Passing SIGINT and SIGTERM from `herald run` on to its ranks.
//!
//! The signals are blocked in the launching thread, so every thread started after
//! it has them blocked too, and one thread takes them with `sigwait`: no signal
//! handler runs, so nothing async-signal-unsafe can happen. Ranks start with an
//! empty signal mask ([`unblock_in_child`]; `std::process::Command` keeps the
//! parent's), each in a process group of its own, and a signal goes to the rank's
//! whole group.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Forwards SIGINT and SIGTERM to the ranks registered with it.
///
/// The first signal is passed on as it is; a second one kills every rank left
/// with SIGKILL, for ranks that do not stop.
#[derive(Clone)]
pub struct Forwarder {
    state: Arc<Mutex<State>>,
}

impl Forwarder {
    /// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it
    /// starts afterwards) and starts the thread that forwards them. Call it before
    /// starting other threads: one that does not block them would die by them.
    pub fn install() -> std::io::Result<Forwarder> {
        let set = signal_set()?;
        // SAFETY: `set` is an initialised sigset_t; this changes only this thread's mask.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        let forwarder = Forwarder {
            state: Arc::default(),
        };
        let state = Arc::clone(&forwarder.state);
        std::thread::Builder::new()
            .name("herald-signals".into())
            .spawn(move || forward(&set, &state))?;
        Ok(forwarder)
    }

    /// Registers the pid of a rank just started as the leader of its own process
    /// group. If a signal already came, the rank gets it now.
    pub fn add(&self, pid: u32) {
        let mut state = self.lock();
        let pid = pid as libc::pid_t;
        if let Some(signal) = state.received {
            send(pid, signal);
        }
        state.pids.push(Some(pid));
    }

    /// Runs `reap` (which must reap rank `index`, the `index`-th registered) with
    /// no signal being sent meanwhile, then forgets its pid, which the system may
    /// give to another process from then on.
    pub fn reap<T>(&self, index: usize, reap: impl FnOnce() -> T) -> T {
        let mut state = self.lock();
        let result = reap();
        if let Some(pid) = state.pids.get_mut(index) {
            *pid = None;
        }
        result
    }

    /// Kills rank `index`'s whole process group with SIGKILL, unless it has been
    /// reaped: the rank and whatever it started (a wrapper script's program), so
    /// that nothing of a job stopped after a failure lives on holding its pipes.
    pub fn kill_group(&self, index: usize) {
        let state = self.lock();
        if let Some(Some(pid)) = state.pids.get(index) {
            send(*pid, libc::SIGKILL);
        }
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<i32> {
        self.lock().received
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Empties the signal mask; for `CommandExt::pre_exec`, in the child between
/// fork and exec, where only async-signal-safe calls are allowed (this makes one).
pub fn unblock_in_child() -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use;
    // sigemptyset and sigprocmask are async-signal-safe.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Ends this process by `signal` with its default action, so that whoever started
/// `herald run` sees it die of the signal it was sent. Returns only if that failed.
pub fn die_by(signal: i32) {
    let Ok(set) = signal_set() else { return };
    // SAFETY: restores the default action of a signal herald never handles, then
    // unblocks SIGINT/SIGTERM in this thread and sends `signal` to this thread; the
    // default action of both is to end the process.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// The name of a signal herald forwards, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        _ => "a signal",
    }
}

#[derive(Default)]
struct State {
    /// Pid of each registered rank, `None` once reaped.
    pids: Vec<Option<libc::pid_t>>,
    received: Option<i32>,
    count: u32,
}

fn forward(set: &libc::sigset_t, state: &Mutex<State>) {
    loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: `set` is initialised and blocked in this thread (inherited).
        if unsafe { libc::sigwait(set, &mut signal) } != 0 {
            continue;
        }
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.count += 1;
        let first = *state.received.get_or_insert(signal);
        let (sent, what) = if state.count == 1 {
            (first, name(first))
        } else {
            (libc::SIGKILL, "SIGKILL")
        };
        let live: Vec<_> = state.pids.iter().flatten().copied().collect();
        eprintln!(
            "herald run: got {}; sending {what} to {} rank(s){}",
            name(signal),
            live.len(),
            if state.count == 1 {
                " (send it again to kill them)"
            } else {
                ""
            }
        );
        for pid in live {
            send(pid, sent);
            // A stopped rank (SIGSTOP, a debugger's detach) only receives the
            // signal once continued, as a shell does for its stopped jobs.
            send(pid, libc::SIGCONT);
        }
    }
}

fn send(pid: libc::pid_t, signal: i32) {
    // SAFETY: `pid` is a child not yet reaped (the caller holds the state lock,
    // under which reaping happens) that leads its own process group, so neither
    // its pid nor its group id can have been given to anything else.
    unsafe { libc::kill(-pid, signal) };
}

fn signal_set() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` points to a valid sigset_t.
    let ok = unsafe {
        libc::sigemptyset(&mut set) == 0
            && libc::sigaddset(&mut set, libc::SIGINT) == 0
            && libc::sigaddset(&mut set, libc::SIGTERM) == 0
    };
    if ok {
        Ok(set)
    } else {
        Err(std::io::Error::last_os_error())
    }
}
