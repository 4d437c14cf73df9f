//! A careless caller's handles: a core freed twice, used after it was freed, or
//! never made by herald_core_new. Each call is refused with HERALD_CORE_ERR_INVALID
//! (poll: HERALD_CORE_NONE) instead of touching memory that is not a core, also
//! once more cores were made (a handle is never reused).

use std::ffi::CStr;
use std::ptr;

use herald_core_c::*;

fn new_core() -> *mut HeraldCore {
    // SAFETY: no error buffer.
    let core = unsafe { herald_core_new(0, 2, 0, 0, ptr::null_mut(), 0) };
    assert!(!core.is_null());
    core
}

/// Every entry point on `core`, which is not a live core.
fn every_call_refused(core: *mut HeraldCore) {
    let mut output = std::mem::MaybeUninit::<herald_core_output>::uninit();
    // SAFETY: `core` is not live: each call must refuse it without reading it.
    unsafe {
        assert_eq!(
            herald_core_register(
                core,
                c"c".as_ptr().cast(),
                1,
                ptr::null(),
                0,
                ptr::null(),
                HERALD_CORE_NO_PARENT,
                ptr::null_mut()
            ),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_handle_frame(core, 1, c"\x04".as_ptr().cast(), 1),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_invocation_finished(core, 0, ptr::null()),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_peer_down(core, 1, ptr::null()),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_launch(
                core,
                1,
                c"t".as_ptr(),
                ptr::null(),
                0,
                HERALD_CORE_NO_PARENT,
                ptr::null_mut()
            ),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_task_finished(core, 1, 0, ptr::null(), 0, ptr::null()),
            HERALD_CORE_ERR_INVALID
        );
        assert_eq!(
            herald_core_poll(core, output.as_mut_ptr()),
            HERALD_CORE_NONE
        );
        let why = CStr::from_ptr(herald_core_error(core)).to_string_lossy();
        assert!(why.contains("not a live herald_core"), "{why}");
        // Freeing it (again) does nothing.
        herald_core_free(core);
    }
}

#[test]
fn freed_and_never_made_cores_are_refused() {
    let kept = new_core();
    let freed = new_core();
    // SAFETY: made by herald_core_new; freeing it twice is the misuse under test.
    unsafe { herald_core_free(freed) };
    every_call_refused(freed);
    // Cores made since (the allocator may reuse the freed memory) are not it.
    let later: Vec<*mut HeraldCore> = (0..64).map(|_| new_core()).collect();
    assert!(!later.contains(&freed));
    every_call_refused(freed);
    for core in later {
        // SAFETY: made by herald_core_new, freed once.
        unsafe { herald_core_free(core) };
    }
    // Memory that never was a core (readable, so a check that reads would not crash).
    let mut fake = [0u64; 64];
    every_call_refused(fake.as_mut_ptr().cast());
    // The live core was not disturbed.
    // SAFETY: a live core; the tag is a C string.
    unsafe {
        assert_eq!(
            herald_core_register(
                kept,
                c"c".as_ptr().cast(),
                1,
                ptr::null(),
                0,
                ptr::null(),
                HERALD_CORE_NO_PARENT,
                ptr::null_mut()
            ),
            HERALD_CORE_OK
        );
        herald_core_free(kept);
    }
}
