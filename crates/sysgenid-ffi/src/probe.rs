//! The fast probe: `sysgenid_generation` and the `sysgenid_probe` type for explicit paths.

use std::ffi::{c_char, c_int};
use std::ptr::NonNull;

use sysgenid::{Paths, Probe};

use crate::boundary::{EINVAL, boundary, boundary_void, out_param, paths_param, write_out};
use crate::errors::code_of;

/// A read-only mapping of the counter page, for reading the generation with no syscall.
///
/// Open it with `sysgenid_probe_open` or `sysgenid_probe_open_at`, read it with
/// `sysgenid_probe_generation` from any number of threads at once, and release it with
/// `sysgenid_probe_free`.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct sysgenid_probe {
    inner: Probe,
}

/// Reads the current generation into `*out`: one load from a process-wide mapping of the page
/// file `$SYSGENID_STATE_DIR/generation` (default `/run/sysgenid/generation`), or of the device
/// `$SYSGENID_DEVICE` (default `/dev/sysgenid`) where no page file exists, made on first use.
///
/// After the first successful call this makes no syscall; a failed first call is not
/// remembered, and the next one tries again. Safe to call from any thread.
///
/// Returns 0, or `-EINVAL` (`out` NULL), `-ENOENT` (no page file and no device: is sysgenidd
/// running?), `-ENOTCONN`, `-EACCES`, `-ENODEV` or `-EIO`; `*out` is written only on success.
///
/// # Safety
///
/// `out` must be NULL or valid for writing a `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_generation(out: *mut u32) -> c_int {
    boundary(|| {
        let out = out_param(out)?;
        let generation = sysgenid::generation().map_err(|e| code_of(&e))?;
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, generation) };
        Ok(())
    })
}

/// Opens a probe of the paths from `SYSGENID_DEVICE` and `SYSGENID_STATE_DIR` (defaults
/// `/dev/sysgenid` and `/run/sysgenid`) into `*out`; see `sysgenid_probe_open_at`.
///
/// # Safety
///
/// `out` must be NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_probe_open(out: *mut *mut sysgenid_probe) -> c_int {
    boundary(|| {
        let out = out_param(out)?;
        let probe = Probe::open(&Paths::from_env()).map_err(|e| code_of(&e))?;
        let probe = Box::into_raw(Box::new(sysgenid_probe { inner: probe }));
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, probe) };
        Ok(())
    })
}

/// Opens a probe into `*out`: maps the page file `<state_dir>/generation`, or the device
/// `device` where no page file exists. Free it with `sysgenid_probe_free`.
///
/// Returns 0, or `-EINVAL` (a NULL argument), `-ENOENT` (neither exists: is sysgenidd
/// running?), `-ENOTCONN`, `-EACCES`, `-ENODEV` or `-EIO`; `*out` is written only on success.
///
/// # Safety
///
/// `device` and `state_dir` must each be NULL or a NUL-terminated string; `out` must be NULL
/// or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_probe_open_at(
    device: *const c_char,
    state_dir: *const c_char,
    out: *mut *mut sysgenid_probe,
) -> c_int {
    boundary(|| {
        // SAFETY: both are NULL or NUL-terminated strings, by this function's contract.
        let paths = unsafe { paths_param(device, state_dir)? };
        let out = out_param(out)?;
        let probe = Probe::open(&paths).map_err(|e| code_of(&e))?;
        let probe = Box::into_raw(Box::new(sysgenid_probe { inner: probe }));
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, probe) };
        Ok(())
    })
}

/// Reads the current generation of `probe` into `*out`: one load, no syscall. Any number of
/// threads may call it on the same probe at once.
///
/// Returns 0, or `-EINVAL` if an argument is NULL.
///
/// # Safety
///
/// `probe` must be NULL or a probe from `sysgenid_probe_open*` not yet freed; `out` must be
/// NULL or valid for writing a `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_probe_generation(
    probe: *const sysgenid_probe,
    out: *mut u32,
) -> c_int {
    boundary(|| {
        let probe = NonNull::new(probe.cast_mut()).ok_or(EINVAL)?;
        let out = out_param(out)?;
        // SAFETY: a non-null `probe` is a live probe by this function's contract, and we only
        // read through it (a `Probe` is `Sync`).
        let generation = unsafe { probe.as_ref() }.inner.generation();
        // SAFETY: `out` is valid for writes by this function's contract.
        unsafe { write_out(out, generation) };
        Ok(())
    })
}

/// Unmaps and frees `probe`. NULL is ignored.
///
/// # Safety
///
/// `probe` must be NULL or a probe from `sysgenid_probe_open*` not yet freed, which no other
/// thread is using; it must not be used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_probe_free(probe: *mut sysgenid_probe) {
    boundary_void(|| {
        if !probe.is_null() {
            // SAFETY: a non-null `probe` came from `Box::into_raw` in `sysgenid_probe_open*`
            // and is freed only once, by this function's contract.
            drop(unsafe { Box::from_raw(probe) });
        }
    })
}
