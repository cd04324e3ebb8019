//! `AsyncWatcher`: a [`Watcher`] for tokio, through `AsyncFd` (feature `tokio`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Op, Result};
use crate::paths::Paths;
use crate::watcher::{Change, Watcher, WatcherOptions};

/// A [`Watcher`] whose waits are futures, for tokio (feature `tokio`).
///
/// [`AsyncWatcher::changed`] waits through [`AsyncFd`]: the file is readable exactly while it
/// is outdated. It is cancel-safe: dropping the future (in a `select!` or a timeout) loses
/// nothing, because the file stays outdated until it is acknowledged, so the next `changed()`
/// returns the change at once.
///
/// After a daemon restart it reopens the device as [`Watcher`] does (see there), pausing with
/// `tokio::time::sleep` between attempts, registers the new file with the reactor, and reports
/// `reopened: true` in the next [`Change`].
///
/// ```no_run
/// # async fn run() -> Result<(), sysgenid::Error> {
/// use sysgenid::{AsyncWatcher, Paths};
///
/// let mut watcher = AsyncWatcher::open(&Paths::from_env())?;
/// loop {
///     let change = watcher.changed().await?;
///     // ... renew what must be unique ...
///     watcher.ack(change.generation).await?;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncWatcher {
    /// The watcher's descriptor registered with the reactor; `None` between losing the daemon
    /// and registering the reopened file. Declared first so that it is dropped, and the fd
    /// deregistered, before `watcher` closes the fd.
    reactor: Option<AsyncFd<RawFd>>,
    /// The watcher; its file is swapped (by a reopen) only while `reactor` is `None`.
    watcher: Watcher,
}

impl AsyncWatcher {
    /// Opens the device read-write, untracked. Must be called inside a tokio runtime.
    pub fn open(paths: &Paths) -> Result<AsyncWatcher> {
        AsyncWatcher::new(Watcher::open(paths)?)
    }

    /// Opens the device with `options`. Must be called inside a tokio runtime.
    pub fn open_with(paths: &Paths, options: WatcherOptions) -> Result<AsyncWatcher> {
        AsyncWatcher::new(Watcher::open_with(paths, options)?)
    }

    /// Registers `watcher` with the tokio reactor. Must be called inside a tokio runtime.
    pub fn new(watcher: Watcher) -> Result<AsyncWatcher> {
        let mut this = AsyncWatcher {
            reactor: None,
            watcher,
        };
        this.register()?;
        Ok(this)
    }

    /// The inner watcher, for its fd, [`Watcher::reopen_count`] or [`Watcher::last_seen`].
    pub fn get_ref(&self) -> &Watcher {
        &self.watcher
    }

    /// Takes the watcher back out of the reactor.
    pub fn into_inner(self) -> Watcher {
        let AsyncWatcher { reactor, watcher } = self;
        drop(reactor);
        watcher
    }

    /// How many times the device was reopened after a daemon restart.
    pub fn reopen_count(&self) -> u64 {
        self.watcher.reopen_count()
    }

    /// Waits until the generation changes from the one this file acknowledged and returns the
    /// new one; while the change is unacknowledged, returns it again at once. Cancel-safe.
    pub async fn changed(&mut self) -> Result<Change> {
        loop {
            let (reactor, watcher) = self.reconnect().await?;
            if let Some(change) = watcher.take_pending() {
                return Ok(change);
            }
            // ERROR too: a file whose daemon is gone polls as EPOLLERR, not readable.
            let mut guard = match reactor.ready(Interest::READABLE | Interest::ERROR).await {
                Ok(guard) => guard,
                Err(e) => return Err(os(Op::Poll, watcher, e)),
            };
            match watcher.read_once() {
                Ok(Some(change)) => return Ok(change),
                Ok(None) => guard.clear_ready(),
                Err(Error::DaemonGone { .. }) if watcher.can_reopen() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The new generation if this file is outdated, `Ok(None)` if it is up to date.
    pub async fn try_read(&mut self) -> Result<Option<Change>> {
        loop {
            let (_, watcher) = self.reconnect().await?;
            match watcher.read_once() {
                Err(Error::DaemonGone { .. }) if watcher.can_reopen() => continue,
                r => return r,
            }
        }
    }

    /// Acknowledges `generation`, which must be the current one; see [`Watcher::ack`].
    pub async fn ack(&mut self, generation: u32) -> Result<()> {
        loop {
            let (_, watcher) = self.reconnect().await?;
            match watcher.ack_once(generation) {
                Err(Error::DaemonGone { .. }) if watcher.can_reopen() => continue,
                r => return r,
            }
        }
    }

    /// Turns tracking on or off; see [`Watcher::set_tracking`].
    pub async fn set_tracking(&mut self, on: bool) -> Result<()> {
        loop {
            let (_, watcher) = self.reconnect().await?;
            match watcher.set_tracking_once(on) {
                Err(Error::DaemonGone { .. }) if watcher.can_reopen() => continue,
                r => return r,
            }
        }
    }

    /// If the daemon is gone, takes the fd out of the reactor, reopens the watcher (pausing
    /// between attempts) and registers it again; returns the registration and the watcher.
    /// Cancel-safe: a later call resumes where a dropped one stopped.
    async fn reconnect(&mut self) -> Result<(&AsyncFd<RawFd>, &mut Watcher)> {
        if self.watcher.disconnected {
            self.reactor = None;
            let Some(mut backoff) = self.watcher.reopen_backoff() else {
                return Err(Error::DaemonGone {
                    path: self.watcher.paths().device().to_owned(),
                });
            };
            loop {
                match self.watcher.reopen_once() {
                    Ok(()) => break,
                    Err(e) if e.retry_reopen() => match backoff.next_delay() {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => return Err(e),
                    },
                    Err(e) => return Err(e),
                }
            }
        }
        self.register()
    }

    /// Registers the watcher's fd with the reactor unless it is registered already; returns
    /// the registration and the watcher.
    fn register(&mut self) -> Result<(&AsyncFd<RawFd>, &mut Watcher)> {
        let reactor = match self.reactor.take() {
            Some(reactor) => reactor,
            // SAFETY: the fd stays open on the same open file description while registered:
            // `watcher` owns it, swaps its file (a reopen) only after `reconnect` has dropped
            // the registration, and is dropped after it (field order, `into_inner`).
            None => unsafe {
                AsyncFd::register_with_interest(
                    self.watcher.as_raw_fd(),
                    Interest::READABLE | Interest::ERROR,
                )
            }
            .map_err(|e| os(Op::Poll, &self.watcher, e.into_parts().1))?,
        };
        Ok((self.reactor.insert(reactor), &mut self.watcher))
    }
}

fn os(op: Op, watcher: &Watcher, source: io::Error) -> Error {
    Error::Os {
        op,
        path: watcher.paths().device().to_owned(),
        source,
    }
}
