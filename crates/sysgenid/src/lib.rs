//! Client library for the Linux System Generation ID: probe, watch, acknowledge, wait, trigger.
//!
//! The System Generation ID is a `u32` counter that goes up whenever the system is restored
//! from a snapshot or cloned. Code that keeps state which must not be shared between copies
//! (random seeds, UUIDs, keys, leases, transaction ids) watches it and renews that state when
//! it changes.
//!
//! This crate reaches the device only through its file ABI (`open`, `read`, `write`, `poll`,
//! `ioctl`, `mmap` of `/dev/sysgenid`), plus the page file and the control socket of the
//! `sysgenidd` daemon for what the ABI lacks. So everything built on [`Watcher`] works the same
//! against `sysgenidd` and against a kernel driver with the same ABI.
//!
//! | you want | use |
//! |---|---|
//! | the current generation, in a hot path | [`generation()`] or a [`Probe`]: one load, no syscall |
//! | which clone this is: the generation's random ID | [`generation_with_id()`], [`Probe::generation_id`]: a consistent pair, no syscall |
//! | to be told of changes | [`Watcher::next_change`], [`Watcher::try_read`], the fd in your poll loop, or `AsyncWatcher::changed` (feature `tokio`) |
//! | to say you have adjusted | [`Watcher::ack`] |
//! | to be waited for by an overseer | [`Watcher::set_tracking`] |
//! | (overseer) to wait for everyone | [`wait_watchers()`] |
//! | (overseer, after a restore) to bump | [`trigger_if()`] (only if nothing else bumped since the snapshot), [`trigger()`] |
//! | who is lagging, is the daemon healthy | [`status()`] |
//!
//! # Paths
//!
//! The device is `SYSGENID_DEVICE`, else `/dev/sysgenid`; the state directory is
//! `SYSGENID_STATE_DIR`, else `/run/sysgenid`, holding the page file `generation` and the
//! control socket `control.sock`. The free functions read the environment
//! ([`Paths::from_env`]); each has an `_at` twin, and each type a constructor, that takes
//! explicit [`Paths`].
//!
//! # What the counter tells, and how fresh it is
//!
//! A change means "this system was restored (or cloned) since you last looked", not "this
//! system is unique": two clones restored from one snapshot both see N+1, and must each renew
//! their state.
//!
//! The counter can be no fresher than the bump. A restored system runs from the instant it
//! resumes, but the bump lands a little later: when a hardware backend notices the restore, or
//! when an overseer calls [`trigger()`]. In that window every reader still sees the old value.
//! Two ways to live with it:
//!
//! - **Check again after the work, and undo on change** (below). This narrows the window to
//!   the time between the work and the re-read, but cannot close it: a restore whose bump has
//!   not landed yet is invisible.
//! - **The overseer workflow** closes it: quiesce the workload before the snapshot; after the
//!   restore, [`trigger_if()`] (which bumps unless a backend already did), [`wait_watchers()`]
//!   until every tracked watcher has acknowledged, and only then let work resume. The
//!   `sysgenid overseer` command does all of it.
//!
//! # The transaction-retry pattern
//!
//! Read the generation, do the work, read it again; if it moved, a restore happened meanwhile,
//! so undo the work and do it again. With the real device use [`generation()`]; this example
//! maps a page file made by hand, so it runs anywhere:
//!
//! ```
//! # use std::io::Write;
//! # let dir = tempfile::tempdir()?;
//! # let mut page = vec![0u8; 4096];
//! # page[..4].copy_from_slice(&3u32.to_ne_bytes());
//! # std::fs::File::create(dir.path().join("generation"))?.write_all(&page)?;
//! # let paths = sysgenid::Paths::new(dir.path().join("device"), dir.path());
//! let probe = sysgenid::Probe::open(&paths)?; // or sysgenid::generation()
//! # let submit = |_: u32| -> u64 { 42 };
//! # let revert = |_: u64| {};
//! let mut generation = probe.generation();
//! let transaction = loop {
//!     let before = generation;
//!     let transaction = submit(before);
//!     generation = probe.generation();
//!     if generation == before {
//!         break transaction;
//!     }
//!     // Restored (or cloned) while submitting: another copy may submit it too.
//!     revert(transaction);
//! };
//! # assert_eq!(transaction, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Watching
//!
//! ```no_run
//! use sysgenid::{Paths, Watcher, WatcherOptions};
//!
//! // Tracked: an overseer's wait_watchers() waits until we acknowledge.
//! let mut watcher = Watcher::open_with(&Paths::from_env(), WatcherOptions::new().tracking(true))?;
//! loop {
//!     let change = watcher.next_change()?;
//!     println!("restored: generation {}", change.generation);
//!     // ... renew random seeds, UUIDs, leases ...
//!     watcher.ack(change.generation)?;
//! }
//! # Ok::<(), sysgenid::Error>(())
//! ```
//!
//! In your own poll loop, wait for the fd to be readable, then drain with
//! [`Watcher::try_read`]:
//!
//! ```no_run
//! use rustix::event::{PollFd, PollFlags, poll};
//!
//! let mut watcher = sysgenid::Watcher::open(&sysgenid::Paths::from_env())?;
//! loop {
//!     let mut fds = [PollFd::new(&watcher, PollFlags::IN)];
//!     poll(&mut fds, None)?;
//!     while let Some(change) = watcher.try_read()? {
//!         watcher.ack(change.generation)?;
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The overseer
//!
//! ```no_run
//! use std::time::Duration;
//!
//! // Before the snapshot, with the workload quiesced:
//! let before = sysgenid::generation()?;
//! // After restoring it, before letting traffic in: bump, unless a hardware backend already
//! // did (exactly one bump either way). Needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN.
//! sysgenid::trigger_if(before, None)?;
//! match sysgenid::wait_watchers(Some(Duration::from_secs(30))) {
//!     Ok(()) => println!("everyone has adjusted"),
//!     Err(sysgenid::Error::Timeout { .. }) => {
//!         for file in sysgenid::status()?.outdated_files {
//!             eprintln!("still lagging: pid {} {:?}", file.pid, file.command);
//!         }
//!     }
//!     Err(e) => return Err(e),
//! }
//! # Ok::<(), sysgenid::Error>(())
//! ```
//!
//! # Daemon restarts
//!
//! The page file survives restarts, so [`generation()`] keeps working. Open files get
//! `ENOTCONN`; a [`Watcher`] reopens the device, re-applies tracking, reports `reopened: true`
//! in its next [`Change`] (and logs it through `log`), and reports a bump that happened while
//! it was disconnected as a change. See [`Watcher`].
//!
//! # Errors
//!
//! Every errno of the device becomes an [`Error`] variant whose message says what to do, such
//! as "is sysgenidd running?" for a missing device; [`Error::raw_os_error`] keeps the errno.
#![deny(missing_docs)]

#[cfg(feature = "tokio")]
mod async_watcher;
mod control;
mod error;
mod paths;
mod probe;
mod status;
mod trust;
mod watcher;

#[cfg(feature = "tokio")]
pub use async_watcher::AsyncWatcher;
pub use control::{ConditionalBump, trigger_if, trigger_if_at};
pub use error::{Error, Op, Result};
pub use paths::Paths;
pub use probe::{Probe, ProbeSource};
pub use status::{
    Backend, BumpSource, DaemonInfo, LastBump, LastFailure, OutdatedFile, STATUS_VERSION, Status,
    status, status_at,
};
pub use sysgenid_abi::GenerationId;
pub use trust::Distrust;
pub use watcher::{
    Change, DEFAULT_REOPEN_TIMEOUT, Watcher, WatcherOptions, trigger, trigger_at, wait_watchers,
    wait_watchers_at,
};

/// The current generation, from a process-wide mapping of the page file of
/// [`Paths::from_env`] (or of the device where no page file exists), made on first use.
///
/// After the first call this is one atomic load with no syscall. See [`Probe`] for what the
/// value tells and for daemon restarts.
///
/// ```no_run
/// let generation = sysgenid::generation()?;
/// println!("generation {generation}");
/// # Ok::<(), sysgenid::Error>(())
/// ```
#[inline]
pub fn generation() -> Result<u32> {
    Ok(Probe::global()?.generation())
}

/// The current generation and its random ID, a consistent pair, from the process-wide probe of
/// [`generation()`] with no syscall after the first call: two clones of one snapshot read the
/// same generation and different IDs. `Ok(None)` where the page holds no ID (see
/// [`Probe::generation_with_id`]).
///
/// ```no_run
/// if let Some((generation, id)) = sysgenid::generation_with_id()? {
///     println!("generation {generation}, ID {id}");
/// }
/// # Ok::<(), sysgenid::Error>(())
/// ```
pub fn generation_with_id() -> Result<Option<(u32, GenerationId)>> {
    Ok(Probe::global()?.generation_with_id())
}
