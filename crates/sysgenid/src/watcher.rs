//! `Watcher`: one open file of the device, with reopen after a daemon restart.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno as RawErrno;
use rustix::ioctl::{IntegerSetter, Opcode};
use sysgenid_abi::{
    SYSGENID_SET_WATCHER_TRACKING, SYSGENID_TRIGGER_GEN_UPDATE, SYSGENID_WAIT_WATCHERS,
};

use crate::error::{Call, Error, Result};
use crate::paths::Paths;
use crate::probe::{check_served, current_generation};

/// How long a watcher keeps trying to reopen the device after its daemon is gone, by default.
pub const DEFAULT_REOPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// First pause between reopen attempts; it doubles up to [`MAX_REOPEN_DELAY`].
const FIRST_REOPEN_DELAY: Duration = Duration::from_millis(10);
/// Longest pause between reopen attempts.
const MAX_REOPEN_DELAY: Duration = Duration::from_millis(500);

/// A change of generation, as a [`Watcher`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Change {
    /// The new generation. Acknowledge it with [`Watcher::ack`] once you have adjusted.
    pub generation: u32,
    /// Whether the watcher reopened the device (after a daemon restart) since the previous
    /// change it reported. If you registered the fd in an epoll set or a reactor, register it
    /// again: the descriptor number is kept, but the open file behind it is new.
    pub reopened: bool,
}

/// How to open a [`Watcher`].
///
/// ```
/// use std::time::Duration;
/// use sysgenid::WatcherOptions;
///
/// let options = WatcherOptions::new()
///     .tracking(true)
///     .reopen_timeout(Some(Duration::from_secs(5)));
/// assert!(options.is_writable());
/// assert!(!WatcherOptions::new().read_only().is_writable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherOptions {
    write: bool,
    tracking: bool,
    reopen_timeout: Option<Duration>,
}

impl Default for WatcherOptions {
    fn default() -> WatcherOptions {
        WatcherOptions::new()
    }
}

impl WatcherOptions {
    /// Read-write, not tracked, reopening for up to [`DEFAULT_REOPEN_TIMEOUT`].
    pub fn new() -> WatcherOptions {
        WatcherOptions {
            write: true,
            tracking: false,
            reopen_timeout: Some(DEFAULT_REOPEN_TIMEOUT),
        }
    }

    /// Opens read-only: anyone may, but such a watcher can neither acknowledge nor be tracked,
    /// so it stays outdated after a change.
    pub fn read_only(mut self) -> WatcherOptions {
        self.write = false;
        self
    }

    /// Turns tracking on at open (see [`Watcher::set_tracking`]).
    pub fn tracking(mut self, on: bool) -> WatcherOptions {
        self.tracking = on;
        self
    }

    /// How long to keep trying to reopen the device after its daemon is gone; `None` never
    /// reopens, so calls fail with [`Error::DaemonGone`].
    pub fn reopen_timeout(mut self, timeout: Option<Duration>) -> WatcherOptions {
        self.reopen_timeout = timeout;
        self
    }

    /// Whether the device is opened for writing.
    pub fn is_writable(&self) -> bool {
        self.write
    }
}

/// One open file of the device: wait for changes, acknowledge them, be tracked, wait for others,
/// trigger.
///
/// The file is opened `O_NONBLOCK | O_CLOEXEC`; [`Watcher::next_change`] waits in `poll(2)`.
/// The fd is exposed ([`AsFd`], [`AsRawFd`]) for any poll loop: it is readable while a change is
/// unacknowledged.
///
/// # Daemon restarts
///
/// When a call meets `ENOTCONN` (the daemon that served the file is gone), the watcher reopens
/// the device, retrying with a backoff of 10 ms doubling to 500 ms until a daemon serves again
/// or the reopen timeout ([`WatcherOptions::reopen_timeout`], 30 s by default) passes. It puts
/// the new file on the same descriptor number, turns tracking back on if it was on, and then
/// says so three ways:
///
/// - the next [`Change`] it returns has `reopened: true`;
/// - [`Watcher::reopen_count`] goes up;
/// - it logs through the `log` crate: a warning when the connection is lost, info on reopen.
///
/// A reopened file has acknowledged the current generation, so a bump that happened while the
/// watcher was disconnected would go unseen. The watcher compares the last generation it saw
/// with the page file after reopening; if it moved, the next [`Watcher::next_change`] or
/// [`Watcher::try_read`] reports it as a change (with `reopened: true`). A reopen made inside
/// [`Watcher::ack`] or [`Watcher::set_tracking`] keeps that change for the next read, so if you
/// wait on the fd yourself, call [`Watcher::try_read`] once when [`Watcher::reopen_count`] has
/// moved.
///
/// ```no_run
/// use sysgenid::{Paths, Watcher};
///
/// let mut watcher = Watcher::open(&Paths::from_env())?;
/// loop {
///     let change = watcher.next_change()?;
///     // ... renew random seeds, UUIDs, leases ...
///     watcher.ack(change.generation)?;
/// }
/// # Ok::<(), sysgenid::Error>(())
/// ```
#[derive(Debug)]
pub struct Watcher {
    fd: OwnedFd,
    paths: Paths,
    options: WatcherOptions,
    /// Whether tracking is on (re-applied after a reopen).
    tracking: bool,
    /// The last generation this watcher saw: at open, in a change, or in an ack.
    last_seen: Option<u32>,
    /// A change found at reopen, not yet reported.
    pending: Option<u32>,
    /// Reopened since the last reported change.
    reopened: bool,
    reopens: u64,
    /// The file's daemon is gone and it has not been reopened yet.
    pub(crate) disconnected: bool,
}

impl Watcher {
    /// Opens the device read-write (root or the `sysgenid` group), untracked.
    pub fn open(paths: &Paths) -> Result<Watcher> {
        Watcher::open_with(paths, WatcherOptions::new())
    }

    /// Opens the device with `options`.
    pub fn open_with(paths: &Paths, options: WatcherOptions) -> Result<Watcher> {
        let fd = open_device(paths.device(), options.write)?;
        if options.tracking {
            ioctl(&fd, Call::SetTracking, paths.device(), 1)?;
        }
        let last_seen = current_generation(paths);
        Ok(Watcher {
            fd,
            paths: paths.clone(),
            tracking: options.tracking,
            options,
            last_seen,
            pending: None,
            reopened: false,
            reopens: 0,
            disconnected: false,
        })
    }

    /// The paths this watcher uses.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Whether the device is open for writing (so this watcher can ack and be tracked).
    pub fn is_writable(&self) -> bool {
        self.options.write
    }

    /// Whether tracking is on.
    pub fn is_tracking(&self) -> bool {
        self.tracking
    }

    /// How many times this watcher has reopened the device after a daemon restart.
    pub fn reopen_count(&self) -> u64 {
        self.reopens
    }

    /// The last generation this watcher saw (at open from the page file, in a change, or in an
    /// ack); `None` if neither the page file nor a device mapping could tell at open.
    pub fn last_seen(&self) -> Option<u32> {
        self.last_seen
    }

    /// Blocks until the generation changes from the one this file acknowledged, and returns the
    /// new one. While the change is unacknowledged, every call returns it again at once.
    ///
    /// Signals do not end the wait: `EINTR` is retried.
    pub fn next_change(&mut self) -> Result<Change> {
        loop {
            if let Some(change) = self.try_read()? {
                return Ok(change);
            }
            self.wait_readable(None)?;
        }
    }

    /// The new generation if this file is outdated, `Ok(None)` if it is up to date. Never
    /// blocks, except to reopen after a daemon restart.
    pub fn try_read(&mut self) -> Result<Option<Change>> {
        self.with_reopen(Watcher::read_once)
    }

    /// Acknowledges `generation`, which must be the current one ([`Error::NotCurrent`]
    /// otherwise). Needs a file open for writing ([`Error::ReadOnly`]).
    pub fn ack(&mut self, generation: u32) -> Result<()> {
        self.with_reopen(|w| w.ack_once(generation))
    }

    /// Marks `generation`, a change this watcher reported, as handled, so that
    /// [`Watcher::next_change`] waits for the next one: on a file open for writing this is
    /// [`Watcher::ack`]. A read-only file cannot acknowledge and would stay outdated, so it is
    /// replaced, on the same descriptor number, by a fresh one, which starts current; a bump
    /// that came after `generation` is still reported by the next read. A daemon that is gone
    /// meanwhile is waited for as a reopen is.
    ///
    /// ```no_run
    /// use sysgenid::{Paths, Watcher, WatcherOptions};
    ///
    /// // Anyone may watch read-only.
    /// let mut watcher = Watcher::open_with(&Paths::from_env(), WatcherOptions::new().read_only())?;
    /// loop {
    ///     let change = watcher.next_change()?;
    ///     println!("generation {}", change.generation);
    ///     watcher.mark_handled(change.generation)?;
    /// }
    /// # Ok::<(), sysgenid::Error>(())
    /// ```
    pub fn mark_handled(&mut self, generation: u32) -> Result<()> {
        if self.options.write {
            return self.ack(generation);
        }
        self.pending = None;
        self.last_seen = Some(
            self.last_seen
                .map_or(generation, |last| last.max(generation)),
        );
        if !self.disconnected {
            match self.refresh_once(generation) {
                Err(e) if e.retry_reopen() && self.can_reopen() => self.disconnected = true,
                r => return r,
            }
        }
        self.reopen()
    }

    /// One fresh read-only file in place of this one, no reopen.
    fn refresh_once(&mut self, generation: u32) -> Result<()> {
        let device = self.paths.device();
        let fd = open_device(device, false)?;
        // The new file is current at open: a bump between `generation` and the open is not in
        // it, so look at the counter.
        let now = current_generation(&self.paths);
        replace_file(&mut self.fd, &fd, device)?;
        self.pending = now.filter(|&now| now > generation);
        Ok(())
    }

    /// Turns tracking on or off. A tracked watcher counts as outdated for
    /// [`Watcher::wait_watchers`] until it acknowledges a change. Turning it on needs a file
    /// open for writing ([`Error::ReadOnly`]). Tracking is turned on again after a reopen.
    pub fn set_tracking(&mut self, on: bool) -> Result<()> {
        self.with_reopen(|w| w.set_tracking_once(on))
    }

    /// Waits until no tracked watcher is outdated, for at most `timeout` (`None` waits for
    /// ever; a zero timeout waits 1 ms, since the ABI has no "do not wait").
    ///
    /// Fails with [`Error::WatcherOutdated`] if this watcher is itself outdated, or becomes so
    /// while waiting: read and ack first. Fails with [`Error::Timeout`] (naming how many are
    /// still outdated) when the time is up. Signals do not end the wait.
    pub fn wait_watchers(&mut self, timeout: Option<Duration>) -> Result<()> {
        let deadline = deadline(timeout);
        loop {
            if self.pending.is_some() {
                return Err(Error::WatcherOutdated);
            }
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ms = match remaining {
                None => 0,
                Some(r) => u64::try_from(r.as_nanos().div_ceil(1_000_000))
                    .unwrap_or(u64::MAX)
                    .max(1),
            };
            let call = Call::WaitWatchers(timeout.unwrap_or_default());
            let r = ioctl(&self.fd, call, self.paths.device(), ms);
            match self.note(r) {
                Ok(()) => return Ok(()),
                Err(Error::Timeout { timeout, .. }) => {
                    let outdated = crate::status::status_at(&self.paths)
                        .ok()
                        .map(|s| s.outdated);
                    return Err(Error::Timeout { timeout, outdated });
                }
                // EINTR: this file is outdated, or a signal came (then wait again).
                Err(Error::WatcherOutdated) if !self.is_readable()? => continue,
                Err(Error::DaemonGone { .. }) if self.can_reopen() => self.reopen()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Bumps the generation to `max(min, current + 1)` (`None`: current + 1) and returns once
    /// the new value is durable and published. Needs `CAP_CHECKPOINT_RESTORE` or
    /// `CAP_SYS_ADMIN` ([`Error::TriggerDenied`]).
    ///
    /// A trigger cut short by a daemon restart is sent again to the new daemon, so it may bump
    /// twice; a generation that moves more than needed is harmless.
    pub fn trigger(&mut self, min: Option<u32>) -> Result<()> {
        self.with_reopen(|w| {
            let r = ioctl(
                &w.fd,
                Call::Trigger,
                w.paths.device(),
                u64::from(min.unwrap_or(0)),
            );
            w.note(r)
        })
    }

    /// Takes a change found at reopen, if any.
    pub(crate) fn take_pending(&mut self) -> Option<Change> {
        let generation = self.pending.take()?;
        Some(self.change(generation))
    }

    /// One nonblocking read: a pending change, the new generation, or `None` when up to date.
    /// No reopen: `ENOTCONN` marks the watcher disconnected and fails.
    pub(crate) fn read_once(&mut self) -> Result<Option<Change>> {
        if let Some(change) = self.take_pending() {
            return Ok(Some(change));
        }
        let mut buf = [0u8; 4];
        let r = match rustix::io::read(&self.fd, &mut buf) {
            Ok(4) => Ok(Some(u32::from_ne_bytes(buf))),
            Ok(n) => Err(Error::Unexpected {
                path: self.paths.device().to_owned(),
                what: format!("read returned {n} bytes instead of a 4-byte generation"),
            }),
            Err(RawErrno::AGAIN) => Ok(None),
            Err(e) => Err(Error::from_errno(Call::Read, e, self.paths.device())),
        };
        Ok(self.note(r)?.map(|generation| self.change(generation)))
    }

    /// One acknowledgement, no reopen.
    pub(crate) fn ack_once(&mut self, generation: u32) -> Result<()> {
        let r = match rustix::io::write(&self.fd, &generation.to_ne_bytes()) {
            Ok(4) => Ok(()),
            Ok(n) => Err(Error::Unexpected {
                path: self.paths.device().to_owned(),
                what: format!("write took {n} bytes of a 4-byte acknowledgement"),
            }),
            Err(e) => Err(Error::from_errno(
                Call::Ack(generation),
                e,
                self.paths.device(),
            )),
        };
        self.note(r)?;
        // The ack succeeded, so `generation` is current and covers any pending change.
        self.pending = None;
        self.last_seen = Some(generation);
        Ok(())
    }

    /// One tracking change, no reopen.
    pub(crate) fn set_tracking_once(&mut self, on: bool) -> Result<()> {
        let r = ioctl(
            &self.fd,
            Call::SetTracking,
            self.paths.device(),
            u64::from(on),
        );
        self.note(r)?;
        self.tracking = on;
        Ok(())
    }

    /// Marks the watcher disconnected when `r` says the daemon is gone.
    fn note<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(Error::DaemonGone { .. }) = &r {
            if !self.disconnected {
                log::warn!(
                    "sysgenid: lost the daemon serving {} (ENOTCONN)",
                    self.paths.device().display()
                );
            }
            self.disconnected = true;
        }
        r
    }

    fn change(&mut self, generation: u32) -> Change {
        self.last_seen = Some(generation);
        Change {
            generation,
            reopened: std::mem::take(&mut self.reopened),
        }
    }

    /// Runs `op`, reopening and running it again each time it meets a gone daemon.
    fn with_reopen<T>(&mut self, mut op: impl FnMut(&mut Watcher) -> Result<T>) -> Result<T> {
        loop {
            if self.disconnected {
                self.reopen()?;
            }
            match op(self) {
                Err(Error::DaemonGone { .. }) if self.can_reopen() => continue,
                r => return r,
            }
        }
    }

    pub(crate) fn can_reopen(&self) -> bool {
        self.options.reopen_timeout.is_some()
    }

    /// The reopen deadline from now, or `None` if this watcher never reopens.
    pub(crate) fn reopen_backoff(&self) -> Option<Backoff> {
        self.options.reopen_timeout.map(Backoff::new)
    }

    /// Reopens the device, retrying with a backoff until the reopen timeout passes.
    fn reopen(&mut self) -> Result<()> {
        let Some(mut backoff) = self.reopen_backoff() else {
            return Err(Error::DaemonGone {
                path: self.paths.device().to_owned(),
            });
        };
        loop {
            match self.reopen_once() {
                Ok(()) => return Ok(()),
                Err(e) if e.retry_reopen() => match backoff.next_delay() {
                    Some(delay) => std::thread::sleep(delay),
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// One reopen attempt: open, re-apply tracking, put the new file on the same descriptor
    /// number, and look for a change that happened meanwhile.
    pub(crate) fn reopen_once(&mut self) -> Result<()> {
        let device = self.paths.device();
        let fd = open_device(device, self.options.write)?;
        if self.tracking {
            ioctl(&fd, Call::SetTracking, device, 1)?;
        }
        replace_file(&mut self.fd, &fd, device)?;
        drop(fd);
        self.disconnected = false;
        self.reopened = true;
        self.reopens += 1;
        let now = current_generation(&self.paths);
        match (self.last_seen, now) {
            (Some(last), Some(now)) if now > last => {
                log::warn!(
                    "sysgenid: reopened {}; the generation moved from {last} to {now} while \
                     disconnected, reporting it as a change",
                    device.display()
                );
                self.pending = Some(now);
            }
            (_, Some(now)) => log::info!(
                "sysgenid: reopened {} after a daemon restart; generation {now}",
                device.display()
            ),
            (_, None) => log::warn!(
                "sysgenid: reopened {} after a daemon restart, but cannot read the page file \
                 to tell whether the generation moved meanwhile",
                device.display()
            ),
        }
        if let Some(now) = now {
            self.last_seen = Some(self.last_seen.map_or(now, |last| last.max(now)));
        }
        Ok(())
    }

    /// Waits in `poll(2)` until the file is readable (outdated) or in error (daemon gone), or
    /// `timeout` passes. Signals are retried.
    pub(crate) fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        let forever = Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        };
        let ts = timeout.map(|t| Timespec::try_from(t).unwrap_or(forever));
        loop {
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN | PollFlags::RDNORM)];
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    let revents = fds[0].revents();
                    if !revents.intersects(PollFlags::IN | PollFlags::RDNORM) {
                        // POLLERR without data: usually the daemon is gone, and the next read
                        // says so. Pause so that a lasting error cannot spin.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    return Ok(true);
                }
                Err(RawErrno::INTR) => continue,
                Err(e) => return Err(Error::from_errno(Call::Poll, e, self.paths.device())),
            }
        }
    }

    /// Whether the file is outdated right now (poll with no wait).
    fn is_readable(&self) -> Result<bool> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN | PollFlags::RDNORM)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(_) => Ok(fds[0]
                .revents()
                .intersects(PollFlags::IN | PollFlags::RDNORM)),
            Err(e) => Err(Error::from_errno(Call::Poll, e, self.paths.device())),
        }
    }
}

impl AsFd for Watcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// When `timeout` ends from now; `None` for no timeout, or one too long to represent (which
/// waits as good as for ever).
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Pauses between reopen attempts: 10 ms doubling to 500 ms, until a deadline.
#[derive(Debug)]
pub(crate) struct Backoff {
    deadline: Instant,
    delay: Duration,
}

impl Backoff {
    fn new(timeout: Duration) -> Backoff {
        Backoff {
            deadline: Instant::now()
                .checked_add(timeout)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
            delay: FIRST_REOPEN_DELAY,
        }
    }

    /// The next pause, or `None` once the deadline has passed.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let delay = self.delay.min(left);
        self.delay = (self.delay * 2).min(MAX_REOPEN_DELAY);
        Some(delay)
    }
}

/// Opens the device nonblocking and checks that a daemon (or driver) serves it.
pub(crate) fn open_device(path: &Path, write: bool) -> Result<OwnedFd> {
    let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
    let fd = rustix::fs::open(
        path,
        access | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::from_errno(Call::Open { write }, e, path))?;
    check_served(&fd, path)?;
    Ok(fd)
}

/// Puts `fd`'s open file of `device` on the descriptor number of `target`.
fn replace_file(target: &mut OwnedFd, fd: &OwnedFd, device: &Path) -> Result<()> {
    rustix::io::dup3(fd, target, rustix::io::DupFlags::CLOEXEC).map_err(|e| Error::Os {
        op: crate::Op::Open,
        path: device.to_owned(),
        source: e.into(),
    })
}

/// One of the device's ioctls, whose argument is an integer.
fn ioctl(fd: impl AsFd, call: Call, path: &Path, arg: u64) -> Result<()> {
    let arg = usize::try_from(arg).unwrap_or(usize::MAX);
    // SAFETY: each opcode is one of the device's `_IO` ioctls, which take an integer argument
    // and never dereference it, so any value is in range and no memory of ours is touched.
    let r = unsafe {
        match call {
            Call::SetTracking => rustix::ioctl::ioctl(
                fd,
                IntegerSetter::<{ SYSGENID_SET_WATCHER_TRACKING as Opcode }>::new_usize(arg),
            ),
            Call::WaitWatchers(_) => rustix::ioctl::ioctl(
                fd,
                IntegerSetter::<{ SYSGENID_WAIT_WATCHERS as Opcode }>::new_usize(arg),
            ),
            Call::Trigger => rustix::ioctl::ioctl(
                fd,
                IntegerSetter::<{ SYSGENID_TRIGGER_GEN_UPDATE as Opcode }>::new_usize(arg),
            ),
            _ => unreachable!("not an ioctl: {call:?}"),
        }
    };
    r.map_err(|e| Error::from_errno(call, e, path))
}

/// Opens the device for the free functions: read-write where permitted, else read-only.
fn open_for_waiting(paths: &Paths) -> Result<Watcher> {
    let options = WatcherOptions::new().reopen_timeout(None);
    match Watcher::open_with(paths, options.clone()) {
        Err(Error::WriteAccessDenied { .. }) => Watcher::open_with(paths, options.read_only()),
        r => r,
    }
}

/// Waits until no tracked watcher is outdated, using [`Paths::from_env`]; see
/// [`wait_watchers_at`].
pub fn wait_watchers(timeout: Option<Duration>) -> Result<()> {
    wait_watchers_at(&Paths::from_env(), timeout)
}

/// Waits until no tracked watcher of the device at `paths` is outdated, for at most `timeout`
/// (`None`: for ever): what an overseer calls after a restore before it lets traffic in.
///
/// It opens its own file (read-write where permitted, else read-only) and keeps it current:
/// whenever that file is outdated (a bump came before or during the wait) it acknowledges the
/// new generation (or, read-only, opens a fresh file, which starts current) and waits again, so
/// it returns only once every tracked watcher has acknowledged the latest generation. Fails with
/// [`Error::Timeout`] when the time is up.
pub fn wait_watchers_at(paths: &Paths, timeout: Option<Duration>) -> Result<()> {
    let deadline = deadline(timeout);
    let mut watcher = open_for_waiting(paths)?;
    loop {
        while let Some(change) = watcher.try_read()? {
            if watcher.is_writable() {
                watcher.ack(change.generation)?;
            } else {
                watcher = open_for_waiting(paths)?;
            }
        }
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match watcher.wait_watchers(remaining) {
            Err(Error::WatcherOutdated) => continue,
            Err(Error::Timeout { outdated, .. }) => {
                return Err(Error::Timeout {
                    timeout: timeout.unwrap_or_default(),
                    outdated,
                });
            }
            r => return r,
        }
    }
}

/// Bumps the generation, using [`Paths::from_env`]; see [`trigger_at`].
pub fn trigger(min: Option<u32>) -> Result<()> {
    trigger_at(&Paths::from_env(), min)
}

/// Bumps the generation of the device at `paths` to `max(min, current + 1)` (with `None`, to
/// current + 1) through a read-only file of its own, and returns once the new value is durable
/// and published. Needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN` ([`Error::TriggerDenied`]).
pub fn trigger_at(paths: &Paths, min: Option<u32>) -> Result<()> {
    let fd = open_device(paths.device(), false)?;
    ioctl(
        &fd,
        Call::Trigger,
        paths.device(),
        u64::from(min.unwrap_or(0)),
    )
}
