//! `AsyncWatcher` (feature `tokio`): changes, cancel safety, async acks, and restarts.
#![cfg(feature = "tokio")]

mod common;

use std::time::Duration;

use sysgenid::{AsyncWatcher, Change, WatcherOptions};
use sysgenid_e2e::{Daemon, DaemonOptions};

use common::paths;

const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_wakes_on_a_trigger_and_ack_clears_it() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = AsyncWatcher::open(&paths).unwrap();
    assert_eq!(watcher.try_read().await.unwrap(), None);
    let trigger = tokio::task::spawn_blocking({
        let paths = paths.clone();
        move || {
            std::thread::sleep(Duration::from_millis(100));
            sysgenid::trigger_at(&paths, None)
        }
    });
    let change = tokio::time::timeout(LONG, watcher.changed())
        .await
        .expect("woken")
        .unwrap();
    trigger.await.unwrap().unwrap();
    assert_eq!(
        change,
        Change {
            generation: 1,
            reopened: false
        }
    );
    // Unacknowledged: returned again at once.
    assert_eq!(watcher.changed().await.unwrap(), change);
    watcher.ack(1).await.unwrap();
    assert_eq!(watcher.try_read().await.unwrap(), None);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), watcher.changed())
            .await
            .is_err(),
        "up to date: changed() waits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_changed_future_loses_nothing() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = AsyncWatcher::open(&paths).unwrap();
    // Start a wait and drop it by timing out.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), watcher.changed())
            .await
            .is_err()
    );
    sysgenid::trigger_at(&paths, Some(6)).unwrap();
    let change = tokio::time::timeout(LONG, watcher.changed())
        .await
        .expect("the change is still there")
        .unwrap();
    assert_eq!(change.generation, 6);
    watcher.ack(6).await.unwrap();

    // A change that lands while no future exists is there for the next one, too.
    sysgenid::trigger_at(&paths, None).unwrap();
    assert_eq!(watcher.changed().await.unwrap().generation, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_ack_of_another_value_is_refused() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher = AsyncWatcher::open(&paths).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    let err = watcher.ack(0).await.unwrap_err();
    assert!(matches!(err, sysgenid::Error::NotCurrent { .. }), "{err:?}");
    watcher.ack(1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_changed_rides_through_a_restart() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut watcher =
        AsyncWatcher::open_with(&paths, WatcherOptions::new().tracking(true)).unwrap();
    let waiter = tokio::spawn(async move {
        let change = watcher.changed().await;
        (watcher, change)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (temp, daemon) = tokio::task::spawn_blocking(move || {
        let mut daemon = daemon;
        assert!(daemon.stop());
        let (temp, dir) = daemon.into_dir();
        let daemon = Daemon::start_with(DaemonOptions {
            dir: Some(dir),
            ..DaemonOptions::default()
        });
        (temp, daemon)
    })
    .await
    .unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    let (mut watcher, change) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("woken after the restart")
        .unwrap();
    assert_eq!(
        change.unwrap(),
        Change {
            generation: 1,
            reopened: true
        }
    );
    assert_eq!(watcher.reopen_count(), 1);
    assert!(watcher.get_ref().is_tracking());
    let tracked = tokio::task::spawn_blocking({
        let paths = paths.clone();
        move || sysgenid::status_at(&paths).unwrap().tracked
    })
    .await
    .unwrap();
    assert_eq!(tracked, 1, "tracking re-applied");
    watcher.ack(1).await.unwrap();

    // The new file is registered with the reactor: later changes wake it.
    sysgenid::trigger_at(&paths, None).unwrap();
    let change = tokio::time::timeout(LONG, watcher.changed())
        .await
        .expect("woken on the new file")
        .unwrap();
    assert_eq!(
        change,
        Change {
            generation: 2,
            reopened: false
        }
    );
    drop(watcher);
    drop(daemon);
    drop(temp);
}
