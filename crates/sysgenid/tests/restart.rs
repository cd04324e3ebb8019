//! Daemon restarts: a watcher reopens, re-applies tracking, says so, and reports a bump it could
//! not see; the page-file probe keeps working.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sysgenid::{Change, Error, Probe, Watcher, WatcherOptions};
use sysgenid_e2e::{Daemon, DaemonOptions, within};

use common::paths;

/// Stops the daemon cleanly (SIGTERM: it unmounts, and open files get `ENOTCONN`) and keeps
/// its directory.
///
/// A crash (`Daemon::into_dir` alone, SIGKILL) is covered by the test at the end.
fn stop(mut daemon: Daemon) -> (tempfile::TempDir, PathBuf) {
    assert!(daemon.stop(), "clean exit on SIGTERM");
    daemon.into_dir()
}

fn restart_in(dir: &Path) -> Daemon {
    Daemon::start_with(DaemonOptions {
        dir: Some(dir.to_owned()),
        ..DaemonOptions::default()
    })
}

/// Records what the library logs.
struct Recorder(Mutex<Vec<String>>);

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

static RECORDER: Recorder = Recorder(Mutex::new(Vec::new()));

fn logged() -> Vec<String> {
    RECORDER.0.lock().unwrap().clone()
}

#[test]
fn a_watcher_reopens_and_reports_a_bump_made_before_it_reopened() {
    let _ = log::set_logger(&RECORDER);
    log::set_max_level(log::LevelFilter::Info);
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let probe = Probe::open(&paths).unwrap();
    let mut watcher = Watcher::open_with(&paths, WatcherOptions::new().tracking(true)).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    let change = watcher.next_change().unwrap();
    watcher.ack(change.generation).unwrap();

    let (_temp, dir) = stop(daemon);
    let daemon = restart_in(&dir);
    // A bump from a fresh file before the watcher has noticed the restart: its new file will
    // start current, so only the comparison with the page file can reveal it.
    sysgenid::trigger_at(&paths, None).unwrap();
    assert_eq!(probe.generation(), 2, "the page file probe survives");

    let change = watcher.try_read().unwrap().expect("the missed bump");
    assert_eq!(
        change,
        Change {
            generation: 2,
            reopened: true
        }
    );
    assert_eq!(watcher.reopen_count(), 1);
    assert_eq!(daemon.count("tracked"), 1, "tracking is re-applied");
    assert_eq!(daemon.count("outdated"), 0, "the new file starts current");
    watcher.ack(2).unwrap();
    assert_eq!(watcher.try_read().unwrap(), None);

    sysgenid::trigger_at(&paths, None).unwrap();
    assert_eq!(
        watcher.next_change().unwrap(),
        Change {
            generation: 3,
            reopened: false
        }
    );
    let log = logged();
    assert!(
        log.iter()
            .any(|l| l.starts_with("WARN") && l.contains("ENOTCONN")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("reopened") && l.contains("moved from 1 to 2")),
        "{log:?}"
    );
}

#[test]
fn a_blocked_next_change_rides_through_a_restart() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = Watcher::open(&paths).unwrap();
    let waiter = std::thread::spawn(move || {
        let change = watcher.next_change();
        (watcher, change)
    });
    std::thread::sleep(Duration::from_millis(100));
    let (_temp, dir) = stop(daemon);
    let _daemon = restart_in(&dir);
    sysgenid::trigger_at(&paths, None).unwrap();
    let (watcher, change) = within("next_change across a restart", Duration::from_secs(30), {
        move || waiter.join().unwrap()
    });
    assert_eq!(
        change.unwrap(),
        Change {
            generation: 1,
            reopened: true
        }
    );
    assert_eq!(watcher.reopen_count(), 1);
}

#[test]
fn a_restart_without_a_bump_reopens_quietly_and_acks_still_work() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = Watcher::open(&paths).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    let change = watcher.next_change().unwrap();
    let (_temp, dir) = stop(daemon);
    let _daemon = restart_in(&dir);
    // The ack meets ENOTCONN, reopens, and acks on the new file.
    watcher.ack(change.generation).unwrap();
    assert_eq!(watcher.reopen_count(), 1);
    assert_eq!(watcher.try_read().unwrap(), None, "no change to report");
}

#[test]
fn reopening_gives_up_after_its_timeout() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = Watcher::open_with(
        &paths,
        WatcherOptions::new().reopen_timeout(Some(Duration::from_millis(300))),
    )
    .unwrap();
    let (_temp, _dir) = stop(daemon);
    let start = Instant::now();
    let err = watcher.try_read().unwrap_err();
    let took = start.elapsed();
    assert!(err.daemon_not_running(), "{err:?}");
    assert!(err.to_string().contains("sysgenidd"), "{err}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(watcher.reopen_count(), 0);
}

#[test]
fn without_reopening_a_gone_daemon_is_an_error_at_once() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher =
        Watcher::open_with(&paths, WatcherOptions::new().reopen_timeout(None)).unwrap();
    let (_temp, dir) = stop(daemon);
    let err = watcher.try_read().unwrap_err();
    assert!(matches!(err, Error::DaemonGone { .. }), "{err:?}");
    assert!(err.to_string().contains("the daemon is gone"), "{err}");
    assert_eq!(err.raw_os_error(), Some(107), "ENOTCONN");
    // It stays gone even after a restart: this watcher never reopens.
    let _daemon = restart_in(&dir);
    assert!(matches!(
        watcher.try_read().unwrap_err(),
        Error::DaemonGone { .. }
    ));
}

/// After a crash (SIGKILL) the next daemon replaces the stale mount, even when clients have
/// read from or written to the device (which makes `stat` of the stale mount fail with
/// `ENOTCONN`), and the watcher reopens.
#[test]
fn a_watcher_reopens_after_a_crash() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = Watcher::open(&paths).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    let change = watcher.next_change().unwrap();
    watcher.ack(change.generation).unwrap();
    let (_temp, dir) = daemon.into_dir();
    let _daemon = restart_in(&dir);
    sysgenid::trigger_at(&paths, None).unwrap();
    assert_eq!(
        watcher.next_change().unwrap(),
        Change {
            generation: 2,
            reopened: true
        }
    );
}
