//! The program's `MPI_Finalize` while herald still runs on its MPI (it should
//! have called `herald_finalize` first). MPI_Finalize first deletes the
//! attributes of `MPI_COMM_SELF`, calling their delete callbacks while MPI still
//! works; herald's callback makes the progress thread stop calling MPI before
//! MPI goes away, instead of crashing in MPI_Iprobe afterwards.

use std::ffi::c_void;
use std::os::raw::c_int;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use mpi::ffi;

use crate::progress::Command;
use crate::raw::check;

/// What the callback shares with the progress thread.
struct Watch {
    commands: Sender<Command>,
    /// The progress thread left MPI itself: the callback has nothing to do.
    left: AtomicBool,
}

/// An attribute on `MPI_COMM_SELF` whose deletion (by MPI_Finalize) stops the
/// progress thread.
pub(crate) struct FinalizeWatch {
    keyval: c_int,
    watch: Arc<Watch>,
}

impl FinalizeWatch {
    /// Starts watching (on the progress thread, after joining MPI).
    pub(crate) fn start(commands: Sender<Command>) -> Result<FinalizeWatch, String> {
        let watch = Arc::new(Watch {
            commands,
            left: AtomicBool::new(false),
        });
        let mut keyval = 0;
        // SAFETY: both callbacks match MPI's types; `keyval` is written.
        check("MPI_Comm_create_keyval", unsafe {
            ffi::MPI_Comm_create_keyval(
                Some(never_copy),
                Some(on_delete),
                &mut keyval,
                std::ptr::null_mut(),
            )
        })?;
        // The attribute holds one reference, released by `on_delete`.
        let value = Arc::into_raw(Arc::clone(&watch)) as *mut c_void;
        // SAFETY: a keyval just made; MPI_COMM_SELF is valid once MPI is.
        let set = check("MPI_Comm_set_attr", unsafe {
            ffi::MPI_Comm_set_attr(ffi::RSMPI_COMM_SELF, keyval, value)
        });
        if let Err(error) = set {
            // SAFETY: MPI did not take the reference: it is released here, once.
            drop(unsafe { Arc::from_raw(value as *const Watch) });
            // SAFETY: the keyval made above, freed once.
            unsafe { ffi::MPI_Comm_free_keyval(&mut keyval) };
            return Err(error);
        }
        Ok(FinalizeWatch { keyval, watch })
    }

    /// The progress thread leaves MPI on its own (before herald finalises MPI,
    /// which would call the callback on this very thread): removes the attribute.
    pub(crate) fn stop(mut self) {
        self.watch.left.store(true, Ordering::SeqCst);
        // SAFETY: the attribute set in `start`; its callback returns at once now.
        let deleted = unsafe { ffi::MPI_Comm_delete_attr(ffi::RSMPI_COMM_SELF, self.keyval) };
        // SAFETY: the keyval made in `start`, freed once.
        let freed = unsafe { ffi::MPI_Comm_free_keyval(&mut self.keyval) };
        if let Err(error) = check("MPI_Comm_delete_attr", deleted)
            .and_then(|()| check("MPI_Comm_free_keyval", freed))
        {
            tracing::debug!(%error, "herald-mpi");
        }
    }
}

/// Attribute copy callback: herald's attribute is never copied to a duplicate.
unsafe extern "C" fn never_copy(
    _comm: ffi::MPI_Comm,
    _keyval: c_int,
    _extra: *mut c_void,
    _value_in: *mut c_void,
    _value_out: *mut c_void,
    flag: *mut c_int,
) -> c_int {
    if !flag.is_null() {
        // SAFETY: MPI passes a valid flag to write.
        unsafe { *flag = 0 };
    }
    ffi::MPI_SUCCESS as c_int
}

/// Attribute delete callback: MPI_Finalize began (or `stop` removed the
/// attribute). Asks the progress thread to stop calling MPI and waits until it
/// has (or has ended).
unsafe extern "C" fn on_delete(
    _comm: ffi::MPI_Comm,
    _keyval: c_int,
    value: *mut c_void,
    _extra: *mut c_void,
) -> c_int {
    // SAFETY: `value` is the reference `start` gave the attribute, taken back once.
    let watch = unsafe { Arc::from_raw(value as *const Watch) };
    if !watch.left.load(Ordering::SeqCst) {
        let (done, stopped) = crossbeam_channel::bounded(1);
        if watch.commands.send(Command::MpiFinalizing { done }).is_ok() {
            // Ends when the progress thread answers or ends (dropping `done`).
            let _ = stopped.recv();
        }
    }
    ffi::MPI_SUCCESS as c_int
}
