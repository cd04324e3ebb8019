//! The `sysgenid_watcher` type: open, wait for changes, acknowledge, track.

use std::ffi::{c_char, c_int, c_uint};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use sysgenid::{Paths, Watcher, WatcherOptions};

use crate::boundary::{
    EINVAL, Outcome, boundary, boundary_void, out_param, paths_param, write_out,
};
use crate::errors::{SYSGENID_E_PANIC, code_of};

/// Flag of `sysgenid_watcher_open`: turn tracking on at open, so that an overseer's
/// `sysgenid_wait_watchers` waits until this watcher acknowledges each change.
pub const SYSGENID_TRACK: c_uint = 1;
/// Flag of `sysgenid_watcher_open`: open the device read-only. Anyone may, but such a watcher
/// can neither acknowledge (`-EBADF`) nor be tracked (`-EBADF`), so it stays outdated after a
/// change.
pub const SYSGENID_READ_ONLY: c_uint = 2;
/// Flag of `sysgenid_watcher_open`: never reopen the device after the daemon is gone; calls
/// fail with `-ENOTCONN` instead. Without it a watcher reopens for up to 30 seconds.
pub const SYSGENID_NO_REOPEN: c_uint = 4;

const ALL_FLAGS: c_uint = SYSGENID_TRACK | SYSGENID_READ_ONLY | SYSGENID_NO_REOPEN;

/// One open file of the device: wait for changes, acknowledge them, be tracked.
///
/// A watcher may be moved between threads, but must be used by one thread at a time.
///
/// After a daemon restart a watcher reopens the device (unless opened with
/// `SYSGENID_NO_REOPEN`), keeps the same descriptor number, turns tracking back on, and reports
/// a bump that happened meanwhile as a change; `sysgenid_watcher_reopen_count` goes up. An
/// epoll registration of the old file is lost then: register the fd again.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct sysgenid_watcher {
    inner: Watcher,
    /// A call panicked: the watcher may be inconsistent, so every later call refuses.
    poisoned: bool,
}

/// Opens the device named by `SYSGENID_DEVICE` (default `/dev/sysgenid`), with the page file in
/// `SYSGENID_STATE_DIR` (default `/run/sysgenid`); see `sysgenid_watcher_open_at`.
///
/// # Safety
///
/// `out` must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_open(
    flags: c_uint,
    out: *mut *mut sysgenid_watcher,
) -> c_int {
    boundary(|| {
        let out = out_param(out)?;
        let watcher = open(&Paths::from_env(), flags)?;
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, watcher) };
        Ok(())
    })
}

/// Opens the device `device` (with the page file in `state_dir`) into `*out`. `flags` is 0 or
/// a combination of `SYSGENID_TRACK`, `SYSGENID_READ_ONLY` and `SYSGENID_NO_REOPEN`. Without
/// `SYSGENID_READ_ONLY` the device is opened for writing (root or the `sysgenid` group). The
/// new watcher has acknowledged the current generation. Free it with `sysgenid_watcher_free`.
///
/// Returns 0, or `-EINVAL` (a NULL argument or an unknown flag), `-ENOENT` (no device: is
/// sysgenidd running?), `-ENOTCONN` (not served), `-EACCES` (no write access), `-EBADF`
/// (`SYSGENID_TRACK` with `SYSGENID_READ_ONLY`); `*out` is written only on success.
///
/// # Safety
///
/// `device` and `state_dir` must each be NULL or a NUL-terminated string; `out` must be NULL
/// or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_open_at(
    device: *const c_char,
    state_dir: *const c_char,
    flags: c_uint,
    out: *mut *mut sysgenid_watcher,
) -> c_int {
    boundary(|| {
        // SAFETY: both are NULL or NUL-terminated strings, by this function's contract.
        let paths = unsafe { paths_param(device, state_dir)? };
        let out = out_param(out)?;
        let watcher = open(&paths, flags)?;
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, watcher) };
        Ok(())
    })
}

/// Opens a watcher on the heap for C to own.
fn open(paths: &Paths, flags: c_uint) -> Result<*mut sysgenid_watcher, c_int> {
    if flags & !ALL_FLAGS != 0 {
        return Err(EINVAL);
    }
    let mut options = WatcherOptions::new().tracking(flags & SYSGENID_TRACK != 0);
    if flags & SYSGENID_READ_ONLY != 0 {
        options = options.read_only();
    }
    if flags & SYSGENID_NO_REOPEN != 0 {
        options = options.reopen_timeout(None);
    }
    let inner = Watcher::open_with(paths, options).map_err(|e| code_of(&e))?;
    Ok(Box::into_raw(Box::new(sysgenid_watcher {
        inner,
        poisoned: false,
    })))
}

/// Closes the device and frees `watcher`. NULL is ignored. If it was tracked and outdated, it
/// stops counting, which may complete waits.
///
/// # Safety
///
/// `watcher` must be NULL or a watcher from `sysgenid_watcher_open*` not yet freed, which no
/// other thread is using; it must not be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_free(watcher: *mut sysgenid_watcher) {
    boundary_void(|| {
        if !watcher.is_null() {
            // SAFETY: a non-null `watcher` came from `Box::into_raw` in `open` and is freed
            // only once, by this function's contract.
            drop(unsafe { Box::from_raw(watcher) });
        }
    })
}

/// Runs `body` on the watcher behind `watcher`: `-EINVAL` if it is NULL, `SYSGENID_E_PANIC`
/// if an earlier call panicked, and on a panic now marks it so.
///
/// # Safety
///
/// `watcher` must be NULL or a live watcher that no other thread is using.
unsafe fn with_watcher(
    watcher: *mut sysgenid_watcher,
    body: impl FnOnce(&mut Watcher) -> Outcome,
) -> c_int {
    let Some(mut watcher) = NonNull::new(watcher) else {
        return EINVAL;
    };
    // SAFETY: a non-null `watcher` is live and used by this thread only, by the contract.
    let watcher = unsafe { watcher.as_mut() };
    if watcher.poisoned {
        return SYSGENID_E_PANIC;
    }
    let code = boundary(|| body(&mut watcher.inner));
    if code == SYSGENID_E_PANIC {
        watcher.poisoned = true;
    }
    code
}

/// Writes the watcher's file descriptor into `*out`, for a poll loop: it polls readable
/// (`POLLIN`) while a change is unacknowledged. Read it with `sysgenid_watcher_try_read`; do not
/// read, write or close it yourself. It keeps its number across a reopen.
///
/// Returns 0, or `-EINVAL` if an argument is NULL.
///
/// # Safety
///
/// `watcher` must be NULL or a live watcher; `out` must be NULL or valid for writing an `int`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_fd(
    watcher: *const sysgenid_watcher,
    out: *mut c_int,
) -> c_int {
    boundary(|| {
        let watcher = NonNull::new(watcher.cast_mut()).ok_or(EINVAL)?;
        let out = out_param(out)?;
        // SAFETY: a non-null `watcher` is live by this function's contract; we only read it.
        let fd = unsafe { watcher.as_ref() }.inner.as_raw_fd();
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, fd) };
        Ok(())
    })
}

/// Blocks until the generation differs from the one this watcher acknowledged, and writes the
/// new one into `*out`. While a change is unacknowledged it returns at once, every time.
/// Signals do not end the wait (`EINTR` is retried): to stay interruptible, poll the fd and
/// call `sysgenid_watcher_try_read`.
///
/// Returns 0, or `-EINVAL` (a NULL argument), `-ENOTCONN` (the daemon is gone and did not come
/// back), or another negative errno; `*out` is written only on success.
///
/// # Safety
///
/// `watcher` must be NULL or a live watcher that no other thread is using; `out` must be NULL
/// or valid for writing a `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_next_change(
    watcher: *mut sysgenid_watcher,
    out: *mut u32,
) -> c_int {
    let body = |w: &mut Watcher| {
        let out = out_param(out)?;
        let change = w.next_change().map_err(|e| code_of(&e))?;
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, change.generation) };
        Ok(())
    };
    // SAFETY: the caller's contract for `watcher` is the one `with_watcher` needs.
    unsafe { with_watcher(watcher, body) }
}

/// Writes the new generation into `*out` if this watcher is outdated; never blocks (except to
/// reopen after a daemon restart).
///
/// Returns 0, `-EAGAIN` when the watcher is up to date, or `-EINVAL` (a NULL argument),
/// `-ENOTCONN` or another negative errno; `*out` is written only on success.
///
/// # Safety
///
/// `watcher` must be NULL or a live watcher that no other thread is using; `out` must be NULL
/// or valid for writing a `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_try_read(
    watcher: *mut sysgenid_watcher,
    out: *mut u32,
) -> c_int {
    let body = |w: &mut Watcher| {
        let out = out_param(out)?;
        let change = w.try_read().map_err(|e| code_of(&e))?;
        let change = change.ok_or(-libc::EAGAIN)?;
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, change.generation) };
        Ok(())
    };
    // SAFETY: the caller's contract for `watcher` is the one `with_watcher` needs.
    unsafe { with_watcher(watcher, body) }
}

/// Acknowledges `generation`, which must be the current one: say so once you have renewed
/// what must not be shared between copies of the system. A tracked watcher then stops holding
/// `sysgenid_wait_watchers`.
///
/// Returns 0, or `-EINVAL` (NULL, or `generation` is not the current one: read it again and
/// ack that), `-EBADF` (a read-only watcher), `-ENOTCONN`.
///
/// # Safety
///
/// `watcher` must be NULL or a live watcher that no other thread is using.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_ack(
    watcher: *mut sysgenid_watcher,
    generation: u32,
) -> c_int {
    // SAFETY: the caller's contract for `watcher` is the one `with_watcher` needs.
    unsafe { with_watcher(watcher, |w| w.ack(generation).map_err(|e| code_of(&e))) }
}

/// Turns tracking on or off (both idempotent). A tracked watcher counts as outdated for
/// `sysgenid_wait_watchers` until it acknowledges a change. Tracking is turned on again after a
/// reopen.
///
/// Returns 0, or `-EINVAL` (NULL), `-EBADF` (turning it on for a read-only watcher),
/// `-ENOTCONN`.
///
/// # Safety
///
/// `watcher` must be NULL or a live watcher that no other thread is using.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_set_tracking(
    watcher: *mut sysgenid_watcher,
    on: bool,
) -> c_int {
    // SAFETY: the caller's contract for `watcher` is the one `with_watcher` needs.
    unsafe { with_watcher(watcher, |w| w.set_tracking(on).map_err(|e| code_of(&e))) }
}

/// Writes into `*out` how many times this watcher has reopened the device after a daemon
/// restart. When it moves, register the fd again in any epoll set, and call
/// `sysgenid_watcher_try_read` once: a change found at reopen waits there.
///
/// Returns 0, or `-EINVAL` if an argument is NULL.
///
/// # Safety
///
/// `watcher` must be NULL or a live watcher; `out` must be NULL or valid for writing a
/// `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_watcher_reopen_count(
    watcher: *const sysgenid_watcher,
    out: *mut u64,
) -> c_int {
    boundary(|| {
        let watcher = NonNull::new(watcher.cast_mut()).ok_or(EINVAL)?;
        let out = out_param(out)?;
        // SAFETY: a non-null `watcher` is live by this function's contract; we only read it.
        let count = unsafe { watcher.as_ref() }.inner.reopen_count();
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, count) };
        Ok(())
    })
}
