//! post-restore's waits: for a backend's bump during the grace period, and for every tracked
//! watcher to acknowledge, with progress events meanwhile.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use sysgenid::{Paths, Probe, Watcher, WatcherOptions};

use crate::hooks::{FOREVER, poll_timeout};
use crate::{Error, Event, Grace, Laggard, Waiting};

/// How often progress is polled from the status document.
const PROGRESS_POLL: Duration = Duration::from_millis(200);

/// The tracked watchers that `status` lists as outdated.
fn laggards(status: &sysgenid::Status) -> Vec<Laggard> {
    status
        .outdated_files
        .iter()
        .filter(|f| f.tracked)
        .map(|f| Laggard {
            pid: f.pid,
            command: f.command.clone(),
        })
        .collect()
}

/// Waits up to `grace` for a backend to move the generation past `expected` (telling the
/// observer first with [`Event::Grace`]); if none did, bumps it with a conditional trigger, which
/// bumps nothing if one did meanwhile. Returns the generation and whether this call bumped it.
pub(crate) fn bump_unless_moved(
    paths: &Paths,
    expected: u32,
    min: Option<u32>,
    grace: Duration,
    observer: &mut dyn FnMut(&Event),
) -> Result<(u32, bool), Error> {
    // Open first, then look: a bump after the look makes the file readable.
    let mut watcher = Watcher::open_with(paths, WatcherOptions::new().read_only())?;
    let current = Probe::open(paths)?.generation();
    if current != expected {
        return Ok((current, false));
    }
    if !grace.is_zero() {
        observer(&Event::Grace(Grace {
            expected,
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        }));
    }
    if readable_within(&watcher, grace)?
        && let Some(change) = watcher.try_read()?
    {
        return Ok((change.generation, false));
    }
    drop(watcher);
    let outcome = sysgenid::trigger_if_at(paths, expected, min)?;
    Ok((outcome.generation, outcome.bumped))
}

/// Whether `watcher` turns readable (outdated) within `wait`.
fn readable_within(watcher: &Watcher, wait: Duration) -> Result<bool, Error> {
    let deadline = Instant::now() + wait.min(FOREVER);
    loop {
        let left = poll_timeout(deadline.saturating_duration_since(Instant::now()));
        let mut fds = [PollFd::new(watcher, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&left)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::Poll(e)),
        }
    }
}

/// Which [`Event::Waiting`] to send next: one when the outdated set changes, at most once per
/// interval.
struct Progress {
    interval: Duration,
    sent: Option<(Waiting, Instant)>,
}

impl Progress {
    /// The event to send for `now`, if any.
    fn next(&mut self, now: Waiting) -> Option<Event> {
        // No one left to name: the wait is about to end.
        if now.outdated.is_empty() {
            return None;
        }
        if let Some((sent, at)) = &self.sent
            && (*sent == now || at.elapsed() < self.interval)
        {
            return None;
        }
        self.sent = Some((now.clone(), Instant::now()));
        Some(Event::Waiting(now))
    }
}

/// Waits until every tracked watcher has acknowledged the current generation (also after
/// further bumps), for at most `timeout` (`None`: for ever), telling `observer` who lags when
/// that changes, at most once per `interval`: what `post-restore` does after its bump, for an
/// overseer of its own. Returns `None` when they all did, or the laggards when the time was up.
pub fn wait_watchers(
    paths: &Paths,
    timeout: Option<Duration>,
    interval: Duration,
    mut observer: impl FnMut(&Waiting),
) -> Result<Option<Vec<Laggard>>, Error> {
    let timeout = timeout.map_or(FOREVER, |t| t.min(FOREVER));
    wait_with_progress(paths, timeout, interval, &mut |event| {
        if let Event::Waiting(waiting) = event {
            observer(waiting);
        }
    })
}

/// Waits until every tracked watcher has acknowledged, sending [`Event::Waiting`] meanwhile.
/// Returns `None` when they all did, or the laggards when `timeout` passed first.
pub(crate) fn wait_with_progress(
    paths: &Paths,
    timeout: Duration,
    interval: Duration,
    observer: &mut dyn FnMut(&Event),
) -> Result<Option<Vec<Laggard>>, Error> {
    let (tx, rx) = mpsc::channel();
    let waiter = paths.clone();
    std::thread::spawn(move || {
        let _ = tx.send(sysgenid::wait_watchers_at(&waiter, Some(timeout)));
    });
    let mut progress = Progress {
        interval,
        sent: None,
    };
    let result = loop {
        match rx.recv_timeout(PROGRESS_POLL) {
            Ok(result) => break result,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Error::WaitEnded),
        }
        let Ok(status) = sysgenid::status_at(paths) else {
            continue;
        };
        let now = Waiting {
            generation: status.generation,
            outdated: laggards(&status),
        };
        if let Some(event) = progress.next(now) {
            observer(&event);
        }
    };
    match result {
        Ok(()) => Ok(None),
        Err(sysgenid::Error::Timeout { .. }) => {
            let status = sysgenid::status_at(paths)?;
            Ok(Some(laggards(&status)))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(pids: &[u32]) -> Waiting {
        Waiting {
            generation: 1,
            outdated: pids
                .iter()
                .map(|&pid| Laggard { pid, command: None })
                .collect(),
        }
    }

    #[test]
    fn progress_is_sent_when_it_changes_and_no_sooner_than_the_interval() {
        let mut every_change = Progress {
            interval: Duration::ZERO,
            sent: None,
        };
        assert!(every_change.next(waiting(&[1, 2])).is_some());
        assert!(every_change.next(waiting(&[1, 2])).is_none(), "unchanged");
        assert!(every_change.next(waiting(&[1])).is_some());
        assert!(every_change.next(waiting(&[])).is_none(), "no one to name");

        let mut slow = Progress {
            interval: Duration::from_secs(3600),
            sent: None,
        };
        assert!(slow.next(waiting(&[1, 2])).is_some());
        assert!(slow.next(waiting(&[1])).is_none(), "too soon");
    }
}
