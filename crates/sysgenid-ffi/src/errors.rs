//! Result codes: a Rust [`sysgenid::Error`] as a negative errno, `sysgenid_strerror`, and
//! `sysgenid_version`.

use std::ffi::{CStr, c_char, c_int};

use crate::boundary::boundary_str;

/// Returned when a Rust panic was caught at the C boundary: a bug in libsysgenid. Its value is
/// -4096.
///
/// It lies outside the kernel's errno range (1 to 4095), so it never collides with `-errno`.
/// A watcher whose call returned it is unusable from then on (every later call returns it
/// again): free it and open a new one. Built with `panic = "abort"`, the library aborts the
/// process on a panic instead, and never returns this.
// Written as a subtraction so that cbindgen parenthesizes the C macro: `(0 - 4096)`.
pub const SYSGENID_E_PANIC: c_int = 0 - 4096;

/// The code an exported function returns for `err`: its errno, negated.
///
/// [`sysgenid::Error::raw_os_error`] gives the errno; an unserved device (the empty mountpoint
/// a stopped daemon leaves), which has none, becomes `-ENOTCONN` like a daemon that is gone;
/// any other error without an errno becomes `-EIO`.
pub(crate) fn code_of(err: &sysgenid::Error) -> c_int {
    let errno = match err {
        sysgenid::Error::NotServed { .. } => libc::ENOTCONN,
        err => match err.raw_os_error() {
            Some(errno) if (1..4096).contains(&errno) => errno,
            _ => libc::EIO,
        },
    };
    -errno
}

/// A static, NUL-terminated message for a code this library returns (`-errno`, `0`, or
/// `SYSGENID_E_PANIC`; a positive errno is taken as its negation): what happened and what to
/// do. Never NULL; do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn sysgenid_strerror(err: c_int) -> *const c_char {
    boundary_str(UNKNOWN, || message(err))
}

/// The message for an errno this library does not document.
const UNKNOWN: &CStr = c"an error that libsysgenid does not document: a system error not \
    specific to sysgenid (strerror(3) of the same number without its minus sign names it)";

/// The message of [`sysgenid_strerror`].
fn message(err: c_int) -> &'static CStr {
    if err == SYSGENID_E_PANIC {
        return PANIC;
    }
    let Some(errno) = err.checked_abs() else {
        return UNKNOWN;
    };
    match errno {
        0 => c"success",
        libc::ENOENT => ENOENT,
        libc::ENOTCONN => ENOTCONN,
        libc::EACCES => EACCES,
        libc::EBADF => EBADF,
        libc::EINVAL => EINVAL,
        libc::EAGAIN => EAGAIN,
        libc::ENOBUFS => ENOBUFS,
        libc::EINTR => EINTR,
        libc::ETIME => ETIME,
        libc::EOVERFLOW => EOVERFLOW,
        libc::EIO => EIO,
        libc::ENODEV => ENODEV,
        _ => UNKNOWN,
    }
}

const PANIC: &CStr = c"a bug in libsysgenid (SYSGENID_E_PANIC): a Rust panic was caught at \
    the C boundary, and its message went to stderr; the watcher involved is unusable: free it \
    and open a new one, and please report the bug";
const ENOENT: &CStr = c"no such device file (ENOENT): is sysgenidd running? Start it, or set \
    SYSGENID_DEVICE (and SYSGENID_STATE_DIR) to the device and state directory it serves";
const ENOTCONN: &CStr = c"the device is not served (ENOTCONN): sysgenidd stopped or crashed, \
    or left an empty mountpoint; start it again, then reopen the device (a watcher reopens by \
    itself for 30 s unless opened with SYSGENID_NO_REOPEN)";
const EACCES: &CStr = c"permission denied (EACCES): acknowledging and tracking need a watcher \
    open for writing, which needs root or membership in the `sysgenid` group (or open it with \
    SYSGENID_READ_ONLY); a trigger needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the user \
    namespace that owns the device; a refused read-only open means the device is likely the \
    mode-0000 mountpoint a stopped daemon leaves: is sysgenidd running?";
const EBADF: &CStr = c"refused (EBADF): this watcher was opened read-only \
    (SYSGENID_READ_ONLY); acknowledging and tracking need a watcher open for writing (root or \
    the `sysgenid` group)";
const EINVAL: &CStr = c"invalid argument (EINVAL): a NULL or misaligned pointer, an unknown \
    flag, or an ack of a generation that is not the current one (read the current one with \
    sysgenid_watcher_next_change or sysgenid_watcher_try_read and ack that)";
const EAGAIN: &CStr = c"no change (EAGAIN): the watcher is up to date; wait until its fd \
    (sysgenid_watcher_fd) polls readable, or block in sysgenid_watcher_next_change";
const ENOBUFS: &CStr = c"ack refused (ENOBUFS): an acknowledgement must be exactly 4 bytes; \
    libsysgenid always writes 4, so the device does not follow the ABI";
const EINTR: &CStr = c"interrupted (EINTR): a signal ended the call, or the caller's own \
    file is outdated (read and ack the new generation first); call it again";
const ETIME: &CStr = c"wait_watchers timed out (ETIME): tracked watchers are still outdated; \
    the daemon's status document (`sysgenid status`, or the control socket in its state \
    directory) names the lagging processes";
const EOVERFLOW: &CStr = c"trigger refused (EOVERFLOW): the generation is already UINT32_MAX \
    and can never change again; nothing changed";
const EIO: &CStr = c"I/O error (EIO): a trigger failed because the daemon could not persist \
    the new generation (nothing changed and it reports itself degraded: check the disk of its \
    state directory and its status document, then retry), or a file did not behave as the ABI \
    says";
const ENODEV: &CStr = c"the device cannot be mapped (ENODEV: sysgenidd runs with \
    --device-mmap off, or the kernel is older than 6.6) and there is no page file; set \
    SYSGENID_STATE_DIR to the daemon's state directory";

/// The library's version as `MAJOR.MINOR.PATCH`: a static, NUL-terminated string (do not free
/// it). The SONAME is `libsysgenid.so.MAJOR`.
#[unsafe(no_mangle)]
pub extern "C" fn sysgenid_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(version) => version,
            Err(_) => panic!("the package version contains a NUL byte"),
        };
    boundary_str(VERSION, || VERSION)
}
