//! The MPI calls herald makes, as safe functions over raw handles. Every call
//! here runs on the progress thread (or, during setup, on the thread that waits
//! for it), on a communicator whose error handler returns errors: a failure is an
//! `Err` naming the call, never an abort of the job by herald itself.

use std::os::raw::{c_char, c_int};

use mpi::ffi;

use crate::error::MpiError;

/// A communicator handle. Handles are plain identifiers, valid from any thread of
/// the process that MPI allows to call it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Comm(pub(crate) ffi::MPI_Comm);

// SAFETY: the handle is an opaque identifier; moving it to another thread does not
// touch the object. Which threads may *call* MPI with it is checked separately
// (the thread level, see `setup`).
unsafe impl Send for Comm {}

/// A message waiting to be received: who sent it, with which tag, how long it is.
pub(crate) struct Probed {
    pub(crate) source: u32,
    pub(crate) tag: c_int,
    pub(crate) len: usize,
}

/// MPI_COMM_WORLD.
pub(crate) fn world() -> Comm {
    // SAFETY: reading an initialised constant of the MPI library.
    Comm(unsafe { ffi::RSMPI_COMM_WORLD })
}

/// `comm` if it is an intracommunicator herald can run on: not
/// `MPI_COMM_NULL` (what MPI_Comm_split gives a rank left out), not an
/// intercommunicator (whose ranks name the remote group).
pub(crate) fn check_intracomm(comm: Comm) -> Result<Comm, MpiError> {
    // SAFETY: reading an initialised constant of the MPI library.
    if comm.0 == unsafe { ffi::RSMPI_COMM_NULL } {
        return Err(MpiError::NullComm);
    }
    let mut inter = 0;
    // SAFETY: `comm` is not null and the caller vouched for it; `inter` is written.
    check("MPI_Comm_test_inter", unsafe {
        ffi::MPI_Comm_test_inter(comm.0, &mut inter)
    })
    .map_err(MpiError::Mpi)?;
    if inter != 0 {
        return Err(MpiError::InterComm);
    }
    Ok(comm)
}

/// Duplicates `base` (collective over it) and makes the copy return errors
/// instead of aborting.
pub(crate) fn dup(base: Comm) -> Result<Comm, String> {
    let mut new = base.0;
    // SAFETY: `base` is a communicator the caller vouched for; `new` is written.
    check("MPI_Comm_dup", unsafe {
        ffi::MPI_Comm_dup(base.0, &mut new)
    })?;
    let errors_return = {
        // SAFETY: reading an initialised constant of the MPI library.
        unsafe { ffi::RSMPI_ERRORS_RETURN }
    };
    // SAFETY: `new` was just created.
    check("MPI_Comm_set_errhandler", unsafe {
        ffi::MPI_Comm_set_errhandler(new, errors_return)
    })?;
    Ok(Comm(new))
}

/// Frees a communicator made by [`dup`].
pub(crate) fn free(comm: Comm) {
    let mut handle = comm.0;
    // SAFETY: `comm` came from `dup` and is freed once.
    let code = unsafe { ffi::MPI_Comm_free(&mut handle) };
    if let Err(error) = check("MPI_Comm_free", code) {
        tracing::debug!(%error, "herald-mpi");
    }
}

/// This process's rank in `comm`, and the size of `comm`.
pub(crate) fn rank_and_size(comm: Comm) -> Result<(u32, u32), String> {
    let (mut rank, mut size) = (0, 0);
    // SAFETY: valid communicator; the outputs are written.
    check("MPI_Comm_rank", unsafe {
        ffi::MPI_Comm_rank(comm.0, &mut rank)
    })?;
    // SAFETY: as above.
    check("MPI_Comm_size", unsafe {
        ffi::MPI_Comm_size(comm.0, &mut size)
    })?;
    Ok((rank as u32, size as u32))
}

/// Every rank's `values`, in rank order (collective).
pub(crate) fn all_gather(comm: Comm, values: &[u64], size: u32) -> Result<Vec<u64>, String> {
    let mut all = vec![0u64; values.len() * size as usize];
    // SAFETY: reading an initialised constant of the MPI library.
    let u64_type = unsafe { ffi::RSMPI_UINT64_T };
    // SAFETY: `values` holds `values.len()` u64s, `all` room for `size` times as many.
    check("MPI_Allgather", unsafe {
        ffi::MPI_Allgather(
            values.as_ptr().cast(),
            values.len() as c_int,
            u64_type,
            all.as_mut_ptr().cast(),
            values.len() as c_int,
            u64_type,
            comm.0,
        )
    })?;
    Ok(all)
}

/// The next message waiting on `comm`, from anyone, with any tag.
pub(crate) fn probe(comm: Comm) -> Result<Option<Probed>, String> {
    let mut flag = 0;
    let mut status = std::mem::MaybeUninit::<ffi::MPI_Status>::zeroed();
    // SAFETY: reading initialised constants of the MPI library.
    let (any_source, any_tag) = unsafe { (ffi::RSMPI_ANY_SOURCE, ffi::RSMPI_ANY_TAG) };
    // SAFETY: valid communicator; `flag` and `status` are written.
    check("MPI_Iprobe", unsafe {
        ffi::MPI_Iprobe(any_source, any_tag, comm.0, &mut flag, status.as_mut_ptr())
    })?;
    if flag == 0 {
        return Ok(None);
    }
    // SAFETY: MPI_Iprobe filled the status since it found a message.
    let status = unsafe { status.assume_init() };
    let mut count = 0;
    // SAFETY: a status from MPI_Iprobe; `count` is written.
    check("MPI_Get_count", unsafe {
        ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count)
    })?;
    Ok(Some(Probed {
        source: status.MPI_SOURCE as u32,
        tag: status.MPI_TAG,
        len: count.max(0) as usize,
    }))
}

/// Receives the message [`probe`] found (only the progress thread receives on
/// this communicator, so the next message from `source` with `tag` is that one).
pub(crate) fn receive(comm: Comm, probed: &Probed) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; probed.len];
    // SAFETY: `bytes` has room for `probed.len` bytes; valid communicator.
    check("MPI_Recv", unsafe {
        ffi::MPI_Recv(
            bytes.as_mut_ptr().cast(),
            probed.len as c_int,
            ffi::RSMPI_UINT8_T,
            probed.source as c_int,
            probed.tag,
            comm.0,
            ffi::RSMPI_STATUS_IGNORE,
        )
    })?;
    Ok(bytes)
}

/// Starts sending `bytes` to `to`. The caller keeps `bytes` alive and unmoved
/// (a `Vec`'s heap buffer does not move with the `Vec`) until the request
/// completes.
pub(crate) fn start_send(
    comm: Comm,
    to: u32,
    tag: c_int,
    bytes: &[u8],
) -> Result<ffi::MPI_Request, String> {
    // SAFETY: reading an initialised constant of the MPI library.
    let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
    // SAFETY: `bytes` outlives the request (the caller's contract); valid communicator.
    check("MPI_Isend", unsafe {
        ffi::MPI_Isend(
            bytes.as_ptr().cast(),
            bytes.len() as c_int,
            ffi::RSMPI_UINT8_T,
            to as c_int,
            tag,
            comm.0,
            &mut request,
        )
    })?;
    Ok(request)
}

/// Which of `requests` completed (their slots become `MPI_REQUEST_NULL`).
pub(crate) fn completed(requests: &mut [ffi::MPI_Request]) -> Result<Vec<usize>, String> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let mut indices = vec![0 as c_int; requests.len()];
    let mut count = 0;
    // SAFETY: `requests` are active or null requests; `indices` has room for all.
    check("MPI_Testsome", unsafe {
        ffi::MPI_Testsome(
            requests.len() as c_int,
            requests.as_mut_ptr(),
            &mut count,
            indices.as_mut_ptr(),
            ffi::RSMPI_STATUSES_IGNORE,
        )
    })?;
    // SAFETY: reading an initialised constant of the MPI library.
    let undefined = unsafe { ffi::RSMPI_UNDEFINED };
    if count == undefined || count <= 0 {
        return Ok(Vec::new());
    }
    indices.truncate(count as usize);
    Ok(indices.into_iter().map(|i| i as usize).collect())
}

/// `Ok` for `MPI_SUCCESS`, else the MPI library's text for the code.
pub(crate) fn check(call: &str, code: c_int) -> Result<(), String> {
    if code == ffi::MPI_SUCCESS as c_int {
        return Ok(());
    }
    let mut text = vec![0 as c_char; 512];
    let mut len = 0;
    // SAFETY: `text` has room for MPI_MAX_ERROR_STRING (256 in every known MPI).
    let described = unsafe { ffi::MPI_Error_string(code, text.as_mut_ptr(), &mut len) };
    let text: Vec<u8> = text[..len.clamp(0, 512) as usize]
        .iter()
        .map(|&c| c as u8)
        .collect();
    if described == ffi::MPI_SUCCESS as c_int && !text.is_empty() {
        Err(format!("{call} failed: {}", String::from_utf8_lossy(&text)))
    } else {
        Err(format!("{call} failed with MPI error code {code}"))
    }
}
