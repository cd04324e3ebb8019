//! The overseer's calls: wait until every tracked watcher has acknowledged, trigger a bump, and
//! the conditional bump of the control socket.

use std::ffi::{c_char, c_int};
use std::time::Duration;

use sysgenid::Paths;

use crate::boundary::{Outcome, boundary, out_param, paths_param, write_out};
use crate::errors::code_of;

/// Waits until no tracked watcher of the device from `SYSGENID_DEVICE` (default
/// `/dev/sysgenid`) is outdated; see `sysgenid_wait_watchers_at`.
#[unsafe(no_mangle)]
pub extern "C" fn sysgenid_wait_watchers(timeout_ms: u64) -> c_int {
    boundary(|| wait(&Paths::from_env(), timeout_ms))
}

/// Waits until no tracked watcher of the device `device` is outdated, for at most
/// `timeout_ms` milliseconds (0: for ever): what an overseer calls after a restore before it
/// lets traffic in. It uses a file of its own and keeps it current, so it returns only once
/// every tracked watcher has acknowledged the latest generation. Signals do not end it.
///
/// Returns 0, or `-ETIME` when the time is up (the status document names who lags), `-EINVAL`
/// (a NULL argument), `-ENOENT`, `-ENOTCONN`.
///
/// # Safety
///
/// `device` and `state_dir` must each be NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_wait_watchers_at(
    device: *const c_char,
    state_dir: *const c_char,
    timeout_ms: u64,
) -> c_int {
    boundary(|| {
        // SAFETY: both are NULL or NUL-terminated strings, by this function's contract.
        let paths = unsafe { paths_param(device, state_dir)? };
        wait(&paths, timeout_ms)
    })
}

fn wait(paths: &Paths, timeout_ms: u64) -> Outcome {
    let timeout = (timeout_ms != 0).then(|| Duration::from_millis(timeout_ms));
    sysgenid::wait_watchers_at(paths, timeout).map_err(|e| code_of(&e))
}

/// Bumps the generation of the device from `SYSGENID_DEVICE` (default `/dev/sysgenid`); see
/// `sysgenid_trigger_at`.
#[unsafe(no_mangle)]
pub extern "C" fn sysgenid_trigger(min: u32) -> c_int {
    boundary(|| trigger(&Paths::from_env(), min))
}

/// Bumps the generation of the device `device` to the larger of `min` and the current one
/// plus 1 (so 0 means "plus 1"), and returns once the new value is durable and published.
/// Needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`.
///
/// Returns 0, or `-EACCES` (no capability), `-EOVERFLOW` (the generation is `UINT32_MAX`),
/// `-EIO` (the daemon could not persist it; nothing changed), `-EINVAL` (a NULL argument),
/// `-ENOENT`, `-ENOTCONN`.
///
/// # Safety
///
/// `device` and `state_dir` must each be NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_trigger_at(
    device: *const c_char,
    state_dir: *const c_char,
    min: u32,
) -> c_int {
    boundary(|| {
        // SAFETY: both are NULL or NUL-terminated strings, by this function's contract.
        let paths = unsafe { paths_param(device, state_dir)? };
        trigger(&paths, min)
    })
}

fn trigger(paths: &Paths, min: u32) -> Outcome {
    sysgenid::trigger_at(paths, Some(min)).map_err(|e| code_of(&e))
}

/// The conditional bump of the daemon whose state directory comes from `SYSGENID_STATE_DIR`
/// (default `/run/sysgenid`); see `sysgenid_trigger_if_at`.
///
/// # Safety
///
/// `out_generation` and `out_bumped` must each be NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_trigger_if(
    expect: u32,
    min: u32,
    out_generation: *mut u32,
    out_bumped: *mut bool,
) -> c_int {
    // SAFETY: valid or NULL, by this function's contract.
    boundary(|| unsafe { trigger_if(&Paths::from_env(), expect, min, out_generation, out_bumped) })
}

/// Bumps the generation (to the larger of `min` and the current one plus 1) only if it is
/// still `expect`, through the daemon's control socket `<state_dir>/control.sock`: what an
/// overseer calls after a restore, so that a hardware backend that already bumped for the
/// restore is not followed by a second bump. The check and the bump are one step in the daemon.
/// Needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`, held by the calling process since it
/// connected (not gained by exec'ing a setuid or file-capability program).
///
/// On success `*out_generation` is the generation now (the new one, or the current one that had
/// already moved past `expect`) and `*out_bumped` says whether this call bumped. Returns 0, or
/// `-EACCES`, `-EOVERFLOW`, `-EIO` (not persisted, or the daemon gave an answer this library
/// does not know), `-EINVAL` (a NULL argument), `-ENOENT` or `-ECONNREFUSED` (no daemon).
/// Out-parameters are written only on success.
///
/// # Safety
///
/// `device` and `state_dir` must each be NULL or a NUL-terminated string; `out_generation`
/// and `out_bumped` must each be NULL or valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_trigger_if_at(
    device: *const c_char,
    state_dir: *const c_char,
    expect: u32,
    min: u32,
    out_generation: *mut u32,
    out_bumped: *mut bool,
) -> c_int {
    boundary(|| {
        // SAFETY: both are NULL or NUL-terminated strings, by this function's contract.
        let paths = unsafe { paths_param(device, state_dir)? };
        // SAFETY: valid or NULL, by this function's contract.
        unsafe { trigger_if(&paths, expect, min, out_generation, out_bumped) }
    })
}

/// # Safety
///
/// The out-parameters must each be NULL or valid for one write.
unsafe fn trigger_if(
    paths: &Paths,
    expect: u32,
    min: u32,
    out_generation: *mut u32,
    out_bumped: *mut bool,
) -> Outcome {
    let out_generation = out_param(out_generation)?;
    let out_bumped = out_param(out_bumped)?;
    let outcome = sysgenid::trigger_if_at(paths, expect, Some(min)).map_err(|e| code_of(&e))?;
    // SAFETY: both are valid for writes by this function's contract.
    unsafe {
        write_out(out_generation, outcome.generation);
        write_out(out_bumped, outcome.bumped);
    }
    Ok(())
}
