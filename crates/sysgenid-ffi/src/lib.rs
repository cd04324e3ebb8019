//! libsysgenid: the C library of the Linux System Generation ID, over the `sysgenid` crate.
//!
//! Every function is `extern "C"`, named `sysgenid_*`, and declared in the checked-in header
//! `include/sysgenid/sysgenid.h`, which cbindgen generates from this crate (the test
//! `header_is_current` keeps it so). C programs include `<sysgenid/sysgenid.h>` and link with
//! `pkg-config --cflags --libs sysgenid`. `examples/c/watch.c` is a complete client.
//!
//! | C function | what it does | Rust |
//! |---|---|---|
//! | `sysgenid_generation` | the current generation, one load from a process-wide mapping | [`sysgenid::generation`] |
//! | `sysgenid_generation_id` | the current generation and its random ID (16 bytes), a consistent pair | [`sysgenid::generation_with_id`] |
//! | `sysgenid_probe_open`, `_open_at`, `_generation`, `_generation_id`, `_free` | a mapping of explicit paths | [`sysgenid::Probe`] |
//! | `sysgenid_watcher_open`, `_open_at`, `_free` | one open file of the device | [`sysgenid::Watcher`] |
//! | `sysgenid_watcher_fd` | its fd, for a poll loop | `AsRawFd` |
//! | `sysgenid_watcher_next_change`, `_try_read` | block for, or check for, a change | [`sysgenid::Watcher::next_change`], [`sysgenid::Watcher::try_read`] |
//! | `sysgenid_watcher_ack`, `_set_tracking`, `_reopen_count` | acknowledge, be tracked, count reopens | the `Watcher` methods |
//! | `sysgenid_wait_watchers`, `_at` | (overseer) wait until every tracked watcher acknowledged | [`sysgenid::wait_watchers_at`] |
//! | `sysgenid_trigger`, `_at` | (overseer) bump the generation | [`sysgenid::trigger_at`] |
//! | `sysgenid_trigger_if`, `_at` | (overseer) bump only if the generation is still the expected one | [`sysgenid::trigger_if_at`] |
//! | `sysgenid_strerror`, `sysgenid_version` | a message for a code; the library version | |
//!
//! With the feature `test-hooks` only, `sysgenid_private_inject_panic` arms a panic inside the
//! next call on its thread, for the tests of the panic boundary; it is not in the header.
//!
//! # Conventions
//!
//! - Every function that can fail returns `int`: `0` on success, otherwise a negative errno
//!   (`-ENOENT`, `-EINVAL`, ...) or [`SYSGENID_E_PANIC`]. The Rust [`sysgenid::Error`] becomes
//!   the negation of [`sysgenid::Error::raw_os_error`]; an unserved device (the empty
//!   mountpoint a stopped daemon leaves) becomes `-ENOTCONN`, and anything else without an
//!   errno `-EIO`. `sysgenid_strerror` says what each code means and what to do.
//! - Results go through out-parameters, written only on success: on any error the caller's
//!   variable keeps its value.
//! - Every pointer argument is checked: NULL (or, for an out-parameter, misaligned) gives
//!   `-EINVAL` before anything else happens. Other invalid pointers (dangling, freed) are the
//!   caller's responsibility, as each function's `# Safety` section says.
//! - Paths: the functions without `_at` use `SYSGENID_DEVICE` and `SYSGENID_STATE_DIR`
//!   (defaults `/dev/sysgenid` and `/run/sysgenid`, an empty variable counting as unset); the
//!   `_at` twins take both paths explicitly.
//!
//! # Threads
//!
//! `sysgenid_generation`, `sysgenid_generation_id`, `sysgenid_wait_watchers*`, `sysgenid_trigger*`, `sysgenid_strerror`
//! and `sysgenid_version` may be called from any thread at any time. A `sysgenid_probe` may be
//! read from many threads at once. A `sysgenid_watcher` may move between threads but must be
//! used by one thread at a time.
//!
//! # Panics
//!
//! No panic crosses the C boundary: the body of every exported function runs inside
//! [`std::panic::catch_unwind`]. A caught panic (a bug) returns [`SYSGENID_E_PANIC`]; its message
//! goes to stderr; a watcher whose call panicked refuses every later call with the same code
//! and should be freed. Functions that return a string return a generic one instead, and the
//! `_free` functions leak rather than unwind.
//!
//! Built with `panic = "abort"` (a profile setting of the final build, such as
//! `[profile.release] panic = "abort"`), a panic aborts the process at once instead: the
//! library then never returns [`SYSGENID_E_PANIC`], and still never unwinds into C. The
//! workspace builds with the default, `unwind`.
//!
//! # Building and installing: no cargo-c
//!
//! cargo-c would build this crate as a C library with a versioned name, a SONAME, a header and a
//! pkg-config file. We do not use it: its newest version that builds with our Rust takes about
//! 14 minutes to install on a 2-core machine, and Debian's packaged 0.9.14 is too old. A plain
//! cargo build plus three small pieces gives the same result, each tested:
//!
//! - the SONAME: `build.rs` passes `-Wl,-soname,libsysgenid.so.<MAJOR>` to the cdylib link, so
//!   programs record `NEEDED libsysgenid.so.<MAJOR>`;
//! - the names, the header copy and the pkg-config file: `scripts/install.sh` installs
//!   `target/<profile>/libsysgenid_ffi.so` as `libsysgenid.so.<VERSION>` with the links
//!   `libsysgenid.so.<MAJOR>` and `libsysgenid.so`, `libsysgenid_ffi.a` as `libsysgenid.a`,
//!   the header as `include/sysgenid/sysgenid.h`, and writes `lib/pkgconfig/sysgenid.pc`;
//! - the header: generated by cbindgen and checked in; regenerate it with
//!   `cargo test -p sysgenid-ffi -- --ignored regenerate_header`.
//!
//! `docs/c-library.md` describes it for C users.
#![deny(missing_docs)]

// The header lists the items of these modules in this order (each comment stops rustfmt from
// sorting them). The fast probe:
mod probe;
// Watching, acknowledging, tracking:
mod watcher;
// What an overseer calls:
mod overseer;
// Codes, messages, version:
mod errors;

mod boundary;

#[doc(hidden)]
#[cfg(feature = "test-hooks")]
pub use boundary::sysgenid_private_inject_panic;
pub use errors::{SYSGENID_E_PANIC, sysgenid_strerror, sysgenid_version};
pub use overseer::{
    sysgenid_trigger, sysgenid_trigger_at, sysgenid_trigger_if, sysgenid_trigger_if_at,
    sysgenid_wait_watchers, sysgenid_wait_watchers_at,
};
pub use probe::{
    SYSGENID_ID_SIZE, sysgenid_generation, sysgenid_generation_id, sysgenid_probe,
    sysgenid_probe_free, sysgenid_probe_generation, sysgenid_probe_generation_id,
    sysgenid_probe_open, sysgenid_probe_open_at,
};
pub use watcher::{
    SYSGENID_NO_REOPEN, SYSGENID_READ_ONLY, SYSGENID_TRACK, sysgenid_watcher, sysgenid_watcher_ack,
    sysgenid_watcher_fd, sysgenid_watcher_free, sysgenid_watcher_next_change,
    sysgenid_watcher_open, sysgenid_watcher_open_at, sysgenid_watcher_reopen_count,
    sysgenid_watcher_set_tracking, sysgenid_watcher_try_read,
};
