//! The workflow run in-process against a real daemon, as an orchestrator runs it: the typed
//! events in order, the typed outcomes, and the hooks and record they stand for.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use sysgenid::{Paths, Watcher, WatcherOptions};
use sysgenid_e2e::{Daemon, Probe};
use sysgenid_overseer::{
    Bumped, Error, Event, Grace, Laggard, PostRestoreOptions, PostRestoreOutcome,
    PreSnapshotOptions, PreSnapshotOutcome, Quiescing, Reason, Restore, Unquiescing, Waiting,
    post_restore, pre_snapshot,
};

fn paths(daemon: &Daemon) -> Paths {
    Paths::new(&daemon.device, &daemon.state_dir)
}

/// An empty hooks directory under the daemon's directory.
fn no_hooks(daemon: &Daemon) -> std::path::PathBuf {
    let dir = daemon.dir.join("no-hooks");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A shell hook that appends its outcome and generation to `log`.
fn logging_hook(log: &Path) -> String {
    format!(
        "echo \"$SYSGENID_OUTCOME ${{SYSGENID_GENERATION-unknown}}\" >> '{}'",
        log.display()
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn pre_snapshot_then_post_restore_report_each_step_in_order() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut events = Vec::new();
    let options = PreSnapshotOptions {
        hooks_dir: Some(no_hooks(&daemon)),
        ..PreSnapshotOptions::default()
    };
    let outcome = pre_snapshot(&paths, &options, |e| events.push(e.clone())).unwrap();
    let PreSnapshotOutcome::Quiesced(quiesced) = outcome else {
        panic!("{outcome:?}")
    };
    let record = daemon.state_dir.join(sysgenid_overseer::RECORD_NAME);
    assert_eq!((quiesced.generation, &quiesced.record), (0, &record));
    assert_eq!(
        events,
        [
            Event::Quiescing(Quiescing {
                generation: 0,
                hooks: Vec::new()
            }),
            Event::Quiesced(quiesced)
        ]
    );

    // A tracked watcher of this process, which acknowledges once told to.
    let mut watcher =
        Watcher::open_with(&paths, WatcherOptions::new().tracking(true)).expect("tracked");
    let (go, told) = mpsc::channel::<()>();
    let adjuster = std::thread::spawn(move || {
        let change = watcher.next_change().unwrap();
        told.recv().unwrap();
        watcher.ack(change.generation).unwrap();
    });
    let log = daemon.dir.join("log");
    let options = PostRestoreOptions {
        trigger: true,
        grace: Duration::ZERO,
        unquiesce_dir: Some(no_hooks(&daemon)),
        exec: vec![logging_hook(&log)],
        progress_interval: Duration::ZERO,
        ..PostRestoreOptions::default()
    };
    let mut events = Vec::new();
    let outcome = post_restore(&paths, &options, |e| {
        if let Event::Waiting(_) = e {
            let _ = go.send(());
            assert_eq!(read(&log), "", "no un-quiesce while the watcher lags");
        }
        events.push(e.clone());
    })
    .unwrap();
    adjuster.join().unwrap();

    let PostRestoreOutcome::Readjusted(readjusted) = &outcome else {
        panic!("{outcome:?}")
    };
    let restore = Restore {
        expected: Some(0),
        triggered: true,
        unquiesced: true,
        hooks_skipped: false,
    };
    assert_eq!((readjusted.generation, readjusted.restore), (1, restore));
    assert_eq!(events.len(), 4, "{events:#?}");
    assert_eq!(
        events[0],
        Event::Bumped(Bumped {
            expected: 0,
            generation: 1,
            triggered: true
        })
    );
    let Event::Waiting(Waiting {
        generation: 1,
        outdated,
    }) = &events[1]
    else {
        panic!("{events:#?}")
    };
    assert_eq!(outdated.len(), 1, "{outdated:?}");
    // FUSE names the task that opened the file: this test's thread.
    let opener = rustix::thread::gettid().as_raw_nonzero().get();
    assert_eq!(i64::from(outdated[0].pid), i64::from(opener));
    assert!(outdated[0].command.is_some(), "{outdated:?}");
    assert_eq!(
        events[2],
        Event::Unquiescing(Unquiescing {
            generation: Some(1),
            outcome: Reason::Readjusted,
            hooks: options.exec.clone(),
        })
    );
    assert_eq!(events[3], outcome.event());
    assert!(events[3].is_final());
    assert_eq!(read(&log), "readjusted 1\n");
    assert_eq!(daemon.generation(), 1, "exactly one bump");
    assert!(!record.exists(), "the record is used once");
}

#[test]
fn a_lagging_tracked_watcher_times_out_named_and_is_unquiesced_only_if_asked() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let lagger = Probe::lagging_tracked(&daemon, &[]);
    let log = daemon.dir.join("log");
    let mut options = PostRestoreOptions {
        trigger: true,
        expect: Some(0),
        grace: Duration::ZERO,
        timeout: Duration::from_millis(500),
        unquiesce_dir: Some(no_hooks(&daemon)),
        exec: vec![logging_hook(&log)],
        ..PostRestoreOptions::default()
    };
    let mut events = Vec::new();
    let outcome = post_restore(&paths, &options, |e| events.push(e.clone())).unwrap();
    let PostRestoreOutcome::TimedOut(timed_out) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(timed_out.generation, 1);
    assert!(timed_out.restore.triggered && timed_out.restore.unquiesced);
    let [Laggard { pid, command }] = timed_out.laggards.as_slice() else {
        panic!("{:?}", timed_out.laggards)
    };
    assert_eq!(*pid, lagger.pid());
    let command = command.as_deref().unwrap_or_default();
    assert!(command.contains("sysgenid-probe"), "{command}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Unquiescing(Unquiescing {
                outcome: Reason::Timeout,
                ..
            })
        )),
        "{events:#?}"
    );
    assert_eq!(events.last(), Some(&outcome.event()));
    assert_eq!(read(&log), "timeout 1\n", "un-quiesced anyway");

    // Kept quiesced on request: no hook runs, and the outcome says so.
    options.trigger = false;
    options.unquiesce_on_timeout = false;
    let mut events = Vec::new();
    let outcome = post_restore(&paths, &options, |e| events.push(e.clone())).unwrap();
    let PostRestoreOutcome::TimedOut(timed_out) = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(!timed_out.restore.unquiesced && !timed_out.restore.triggered);
    assert_eq!(timed_out.laggards.len(), 1);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Unquiescing(_))),
        "{events:#?}"
    );
    assert_eq!(read(&log), "timeout 1\n", "no un-quiesce hook ran");
    assert_eq!(
        daemon.generation(),
        1,
        "without a trigger nothing is bumped"
    );
}

#[test]
fn a_failure_after_the_hooks_are_known_still_unquiesces_and_keeps_its_typed_error() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let log = daemon.dir.join("log");
    let options = PostRestoreOptions {
        trigger: true,
        unquiesce_dir: Some(no_hooks(&daemon)),
        exec: vec![logging_hook(&log)],
        ..PostRestoreOptions::default()
    };
    let mut events = Vec::new();
    let outcome = post_restore(&paths, &options, |e| events.push(e.clone())).unwrap();
    let PostRestoreOutcome::Failed(failed) = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        matches!(failed.error, Error::NoExpectedGeneration { .. }),
        "{:?}",
        failed.error
    );
    let restore = failed.report.restore.expect("post-restore's story");
    assert!(restore.unquiesced && !restore.triggered, "{restore:?}");
    assert_eq!(failed.report.generation, Some(0));
    assert!(
        failed
            .report
            .error
            .ends_with("un-quiesced anyway (SYSGENID_OUTCOME=error)"),
        "{}",
        failed.report.error
    );
    assert_eq!(read(&log), "error 0\n");
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(matches!(
        &events[0],
        Event::Unquiescing(Unquiescing {
            outcome: Reason::Error,
            ..
        })
    ));
    assert_eq!(events[1], outcome.event());

    // A named hooks directory that does not exist: nothing runs, an error and its event.
    let missing = PostRestoreOptions {
        unquiesce_dir: Some(daemon.dir.join("missing.d")),
        ..options
    };
    let mut events = Vec::new();
    let error = post_restore(&paths, &missing, |e| events.push(e.clone())).unwrap_err();
    assert!(matches!(error, Error::HooksDir { .. }), "{error:?}");
    let [Event::Error(report)] = events.as_slice() else {
        panic!("{events:#?}")
    };
    assert_eq!(
        (report.error.as_str(), report.restore),
        (&*error.to_string(), None)
    );
    assert_eq!(read(&log), "error 0\n", "no hook ran");
    assert_eq!(daemon.generation(), 0);
}

#[test]
fn the_grace_period_is_announced_before_the_bump() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let options = PostRestoreOptions {
        trigger: true,
        expect: Some(0),
        grace: Duration::from_millis(300),
        unquiesce_dir: Some(no_hooks(&daemon)),
        ..PostRestoreOptions::default()
    };
    let mut events = Vec::new();
    let outcome = post_restore(&paths, &options, |e| events.push(e.clone())).unwrap();
    assert!(
        matches!(outcome, PostRestoreOutcome::Readjusted(_)),
        "{outcome:?}"
    );
    assert_eq!(
        events[..2],
        [
            Event::Grace(Grace {
                expected: 0,
                grace_ms: 300
            }),
            Event::Bumped(Bumped {
                expected: 0,
                generation: 1,
                triggered: true
            })
        ]
    );

    // Already moved past the expected generation: no wait, so nothing to announce.
    let mut events = Vec::new();
    post_restore(&paths, &options, |e| events.push(e.clone())).unwrap();
    assert!(
        matches!(
            events[0],
            Event::Bumped(Bumped {
                triggered: false,
                ..
            })
        ),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::Grace(_))),
        "{events:?}"
    );
}

#[test]
fn wait_watchers_names_who_lags_until_they_acknowledge() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut lagger = Probe::lagging_tracked(&daemon, &["read", "4", "ack"]);
    sysgenid::trigger_at(&paths, None).unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        sysgenid_overseer::wait_watchers(&paths, None, Duration::ZERO, |w| {
            let _ = tx.send(w.clone());
        })
    });
    let waiting = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a progress report");
    assert_eq!(waiting.generation, 1);
    assert_eq!(waiting.outdated[0].pid, lagger.pid());
    lagger.resume();
    let result = waiter.join().unwrap();
    assert!(matches!(result, Ok(None)), "{result:?}");
}
