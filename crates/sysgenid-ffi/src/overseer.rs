//! The overseer's calls: wait until every tracked watcher has acknowledged, and trigger a bump.

use std::ffi::{c_char, c_int};
use std::time::Duration;

use sysgenid::Paths;

use crate::boundary::{Outcome, boundary, path_param};
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
        let (device, state_dir) = unsafe { (path_param(device)?, path_param(state_dir)?) };
        wait(&Paths::new(device, state_dir), timeout_ms)
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
        let (device, state_dir) = unsafe { (path_param(device)?, path_param(state_dir)?) };
        trigger(&Paths::new(device, state_dir), min)
    })
}

fn trigger(paths: &Paths, min: u32) -> Outcome {
    sysgenid::trigger_at(paths, Some(min)).map_err(|e| code_of(&e))
}
