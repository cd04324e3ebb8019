//! The panic boundary and the argument checks that every exported function goes through.

use std::ffi::{CStr, OsStr, c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr::NonNull;

use sysgenid::Paths;

use crate::errors::SYSGENID_E_PANIC;

/// What the body of an exported function gives back: `Err` holds the negative code to return.
pub(crate) type Outcome = Result<(), c_int>;

/// `-EINVAL`, for a NULL or misaligned pointer and for unknown flags.
pub(crate) const EINVAL: c_int = -libc::EINVAL;

#[cfg(feature = "test-hooks")]
thread_local! {
    /// Set by [`sysgenid_private_inject_panic`]: the next [`boundary`] on this thread panics.
    static INJECT_PANIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs the body of an exported function: `0` on success, its negative code on failure, and
/// [`SYSGENID_E_PANIC`] if it panicked. No unwind ever leaves this function.
///
/// With `panic = "abort"` a panic ends the process before `catch_unwind` can see it, so the
/// function never returns [`SYSGENID_E_PANIC`] then; nothing unwinds across the C boundary in
/// either case.
pub(crate) fn boundary(body: impl FnOnce() -> Outcome) -> c_int {
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        #[cfg(feature = "test-hooks")]
        if INJECT_PANIC.with(|armed| armed.replace(false)) {
            panic!("sysgenid_private_inject_panic: a test asked for a panic inside the boundary");
        }
        body()
    }));
    match caught {
        Ok(Ok(())) => 0,
        Ok(Err(code)) => code,
        Err(_) => SYSGENID_E_PANIC,
    }
}

/// Runs `body`, which returns a static string, catching a panic into `fallback`.
pub(crate) fn boundary_str(
    fallback: &'static CStr,
    body: impl FnOnce() -> &'static CStr,
) -> *const c_char {
    panic::catch_unwind(AssertUnwindSafe(body))
        .unwrap_or(fallback)
        .as_ptr()
}

/// Runs `body` for its side effect, swallowing a panic (for the `_free` functions, which
/// return nothing).
pub(crate) fn boundary_void(body: impl FnOnce()) {
    let _ = panic::catch_unwind(AssertUnwindSafe(body));
}

/// Test-only hook (feature `test-hooks`, never in a release build), not part of the API and not
/// in the header: arms one panic inside the next exported call made on the calling thread, so
/// that tests can show the boundary catches it.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
#[unsafe(no_mangle)]
pub extern "C" fn sysgenid_private_inject_panic() {
    INJECT_PANIC.with(|armed| armed.set(true));
}

/// An out-parameter, checked: `-EINVAL` if it is NULL or not aligned for `T`.
pub(crate) fn out_param<T>(ptr: *mut T) -> Result<NonNull<T>, c_int> {
    match NonNull::new(ptr) {
        Some(ptr) if ptr.is_aligned() => Ok(ptr),
        _ => Err(EINVAL),
    }
}

/// Writes `value` through a checked out-parameter.
///
/// # Safety
///
/// `out` must be valid for a write of `T` (the caller's contract for the out-parameter).
pub(crate) unsafe fn write_out<T: Copy>(out: NonNull<T>, value: T) {
    // SAFETY: `out` is non-null and aligned (checked by `out_param`), and valid for writes by
    // this function's contract; `T: Copy`, so nothing is dropped in the old value.
    unsafe { out.as_ptr().write(value) }
}

/// A path argument: a NUL-terminated string, taken as bytes (no UTF-8 needed). `-EINVAL` if
/// it is NULL.
///
/// # Safety
///
/// A non-null `ptr` must point to a NUL-terminated string valid for reads for this call.
unsafe fn path_param(ptr: *const c_char) -> Result<PathBuf, c_int> {
    if ptr.is_null() {
        return Err(EINVAL);
    }
    // SAFETY: `ptr` is non-null and, by this function's contract, points to a NUL-terminated
    // string that stays valid while we copy it.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    Ok(PathBuf::from(OsStr::from_bytes(bytes)))
}

/// The `device` and `state_dir` arguments of an `_at` function, as [`Paths`]. `-EINVAL` if
/// either is NULL.
///
/// # Safety
///
/// Each must be NULL or point to a NUL-terminated string valid for reads for this call.
pub(crate) unsafe fn paths_param(
    device: *const c_char,
    state_dir: *const c_char,
) -> Result<Paths, c_int> {
    // SAFETY: both are NULL or NUL-terminated strings, by this function's contract.
    let (device, state_dir) = unsafe { (path_param(device)?, path_param(state_dir)?) };
    Ok(Paths::new(device, state_dir))
}
