//! The fast probe: `sysgenid_generation`, `sysgenid_generation_id` and the `sysgenid_probe`
//! type for explicit paths.

use std::ffi::{c_char, c_int};
use std::ptr::NonNull;

use sysgenid::{GenerationId, Paths, Probe};

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

/// The size in bytes of a generation ID, as `sysgenid_generation_id` writes it.
pub const SYSGENID_ID_SIZE: usize = 16;

/// Reads the current generation into `*generation` and its random ID into the
/// `SYSGENID_ID_SIZE` (16) bytes at `id`, a consistent pair, from the process-wide mapping of
/// `sysgenid_generation` (no syscall after the first call). Two clones of one snapshot read
/// the same generation and different IDs; print an ID as 32 hex digits, bytes in order.
///
/// Returns 0, or `-EINVAL` (an argument NULL), `-ENODATA` (the page holds no ID: a daemon older
/// than the ID, a kernel driver, or a page left mid-update by a daemon that died), or the
/// errors of `sysgenid_generation`; nothing is written unless it returns 0.
///
/// # Safety
///
/// `generation` must be NULL or valid for writing a `uint32_t`; `id` must be NULL or valid for
/// writing `SYSGENID_ID_SIZE` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_generation_id(generation: *mut u32, id: *mut u8) -> c_int {
    boundary(|| {
        let (generation_out, id_out) = (out_param(generation)?, out_param(id)?);
        let pair = sysgenid::generation_with_id().map_err(|e| code_of(&e))?;
        // SAFETY: both are valid for writes by this function's contract.
        unsafe { write_pair(generation_out, id_out, pair) }
    })
}

/// Writes a generation and its ID through checked out-parameters, or `-ENODATA` without one.
///
/// # Safety
///
/// `generation` must be valid for writing a `uint32_t`, `id` for `SYSGENID_ID_SIZE` bytes.
unsafe fn write_pair(
    generation: NonNull<u32>,
    id: NonNull<u8>,
    pair: Option<(u32, GenerationId)>,
) -> Result<(), c_int> {
    let (value, drawn) = pair.ok_or(-libc::ENODATA)?;
    // SAFETY: valid for writes by this function's contract.
    unsafe {
        write_out(generation, value);
        std::ptr::copy_nonoverlapping(drawn.0.as_ptr(), id.as_ptr(), SYSGENID_ID_SIZE);
    }
    Ok(())
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

/// Reads the current generation of `probe` into `*generation` and its random ID into the
/// `SYSGENID_ID_SIZE` (16) bytes at `id`: a consistent pair, read by the page's sequence rule
/// with no syscall. Any number of threads may call it on the same probe at once.
///
/// Returns 0, or `-EINVAL` if an argument is NULL, or `-ENODATA` if the page holds no ID (see
/// `sysgenid_generation_id`); nothing is written unless it returns 0.
///
/// # Safety
///
/// `probe` must be NULL or a probe from `sysgenid_probe_open*` not yet freed; `generation`
/// must be NULL or valid for writing a `uint32_t`; `id` must be NULL or valid for writing
/// `SYSGENID_ID_SIZE` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sysgenid_probe_generation_id(
    probe: *const sysgenid_probe,
    generation: *mut u32,
    id: *mut u8,
) -> c_int {
    boundary(|| {
        let probe = NonNull::new(probe.cast_mut()).ok_or(EINVAL)?;
        let (generation_out, id_out) = (out_param(generation)?, out_param(id)?);
        // SAFETY: a non-null `probe` is a live probe by this function's contract, and we only
        // read through it (a `Probe` is `Sync`).
        let pair = unsafe { probe.as_ref() }.inner.generation_with_id();
        // SAFETY: both are valid for writes by this function's contract.
        unsafe { write_pair(generation_out, id_out, pair) }
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
