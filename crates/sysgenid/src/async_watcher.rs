//! `AsyncWatcher`: a [`Watcher`] for tokio, through `AsyncFd` (feature `tokio`).

use std::io;

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
    /// The watcher registered with the reactor; `None` while `detached` holds it.
    registered: Option<AsyncFd<Watcher>>,
    /// The watcher between losing its daemon and being registered again.
    detached: Option<Watcher>,
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
            registered: None,
            detached: Some(watcher),
        };
        this.register()?;
        Ok(this)
    }

    /// The inner watcher, for its fd, [`Watcher::reopen_count`] or [`Watcher::last_seen`].
    pub fn get_ref(&self) -> &Watcher {
        match (&self.registered, &self.detached) {
            (Some(fd), _) => fd.get_ref(),
            (None, Some(w)) => w,
            (None, None) => unreachable!("an AsyncWatcher always holds its watcher"),
        }
    }

    /// Takes the watcher back out of the reactor.
    pub fn into_inner(mut self) -> Watcher {
        match (self.registered.take(), self.detached.take()) {
            (Some(fd), _) => fd.into_inner(),
            (None, Some(w)) => w,
            (None, None) => unreachable!("an AsyncWatcher always holds its watcher"),
        }
    }

    /// How many times the device was reopened after a daemon restart.
    pub fn reopen_count(&self) -> u64 {
        self.get_ref().reopen_count()
    }

    /// Waits until the generation changes from the one this file acknowledged and returns the
    /// new one; while the change is unacknowledged, returns it again at once. Cancel-safe.
    pub async fn changed(&mut self) -> Result<Change> {
        loop {
            self.reconnect().await?;
            let fd = self
                .registered
                .as_mut()
                .expect("registered after reconnect");
            if let Some(change) = fd.get_mut().take_pending() {
                return Ok(change);
            }
            // ERROR too: a file whose daemon is gone polls as EPOLLERR, not readable.
            let mut guard = match fd.ready_mut(Interest::READABLE | Interest::ERROR).await {
                Ok(guard) => guard,
                Err(e) => return Err(os(Op::Poll, self.get_ref(), e)),
            };
            match guard.get_inner_mut().read_once() {
                Ok(Some(change)) => return Ok(change),
                Ok(None) => guard.clear_ready(),
                Err(Error::DaemonGone { .. }) if guard.get_inner().can_reopen() => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The new generation if this file is outdated, `Ok(None)` if it is up to date.
    pub async fn try_read(&mut self) -> Result<Option<Change>> {
        loop {
            self.reconnect().await?;
            match self.watcher_mut().read_once() {
                Err(Error::DaemonGone { .. }) if self.get_ref().can_reopen() => continue,
                r => return r,
            }
        }
    }

    /// Acknowledges `generation`, which must be the current one; see [`Watcher::ack`].
    pub async fn ack(&mut self, generation: u32) -> Result<()> {
        loop {
            self.reconnect().await?;
            match self.watcher_mut().ack_once(generation) {
                Err(Error::DaemonGone { .. }) if self.get_ref().can_reopen() => continue,
                r => return r,
            }
        }
    }

    /// Turns tracking on or off; see [`Watcher::set_tracking`].
    pub async fn set_tracking(&mut self, on: bool) -> Result<()> {
        loop {
            self.reconnect().await?;
            match self.watcher_mut().set_tracking_once(on) {
                Err(Error::DaemonGone { .. }) if self.get_ref().can_reopen() => continue,
                r => return r,
            }
        }
    }

    /// The watcher, for calls that do not swap its file.
    fn watcher_mut(&mut self) -> &mut Watcher {
        match (&mut self.registered, &mut self.detached) {
            (Some(fd), _) => fd.get_mut(),
            (None, Some(w)) => w,
            (None, None) => unreachable!("an AsyncWatcher always holds its watcher"),
        }
    }

    /// If the daemon is gone, takes the watcher out of the reactor, reopens it (pausing
    /// between attempts) and registers it again. Cancel-safe: every step leaves the watcher in
    /// `registered` or `detached`, and a later call resumes.
    async fn reconnect(&mut self) -> Result<()> {
        if self
            .registered
            .as_ref()
            .is_some_and(|fd| fd.get_ref().disconnected)
        {
            let fd = self.registered.take().expect("checked");
            self.detached = Some(fd.into_inner());
        }
        let Some(watcher) = self.detached.as_mut() else {
            return Ok(());
        };
        if watcher.disconnected {
            let Some(mut backoff) = watcher.reopen_backoff() else {
                return Err(Error::DaemonGone {
                    path: watcher.paths().device().to_owned(),
                });
            };
            loop {
                let watcher = self.detached.as_mut().expect("detached");
                match watcher.reopen_once() {
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

    /// Moves the detached watcher into the reactor.
    fn register(&mut self) -> Result<()> {
        let Some(watcher) = self.detached.take() else {
            return Ok(());
        };
        // SAFETY: the watcher owns its fd, which stays open on the same open file description
        // while registered: the file is swapped (by a reopen) only after `into_inner` has taken
        // it back out of the reactor, and `as_raw_fd` always returns that one fd.
        let registered = unsafe {
            AsyncFd::register_with_interest(watcher, Interest::READABLE | Interest::ERROR)
        };
        match registered {
            Ok(fd) => {
                self.registered = Some(fd);
                Ok(())
            }
            Err(e) => {
                let (watcher, err) = e.into_parts();
                let err = os(Op::Poll, &watcher, err);
                self.detached = Some(watcher);
                Err(err)
            }
        }
    }
}

fn os(op: Op, watcher: &Watcher, source: io::Error) -> Error {
    Error::Os {
        op,
        path: watcher.paths().device().to_owned(),
        source,
    }
}
