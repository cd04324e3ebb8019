//! `status()` against a live daemon: the typed document, and a lagging process named.

mod common;

use sysgenid::{BumpSource, Watcher, WatcherOptions};
use sysgenid_e2e::{Daemon, Probe};

use common::paths;

#[test]
fn status_reads_the_live_document() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(status.generation, 0);
    assert!(status.serving);
    assert!(!status.degraded);
    assert_eq!(status.outdated, 0);
    assert!(status.last_bump.is_none());
    assert_eq!(status.daemon.pid, daemon.pid());
    assert_eq!(status.daemon.device, daemon.device);
    assert_eq!(status.daemon.state_dir, daemon.state_dir);
    assert!(status.daemon.backends.is_empty(), "--backends none");

    let _watcher = Watcher::open_with(&paths, WatcherOptions::new().tracking(true)).unwrap();
    sysgenid::trigger_at(&paths, Some(4)).unwrap();
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(status.generation, 4);
    assert_eq!(status.open_files, 1);
    assert_eq!(status.tracked, 1);
    assert_eq!(status.outdated, 1);
    let bump = status.last_bump.expect("a bump");
    assert_eq!(bump.generation, 4);
    assert_eq!(bump.source, BumpSource::Trigger);
    assert!(bump.pid.is_some());
    assert_eq!(status.failed_bumps, 0);
}

#[test]
fn status_names_a_lagging_process() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let probe = Probe::lagging_tracked(&daemon, &[]);
    sysgenid::trigger_at(&paths, None).unwrap();
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(status.outdated, 1);
    let lagging: Vec<_> = status
        .outdated_files
        .iter()
        .filter(|f| f.pid == probe.pid())
        .collect();
    assert_eq!(lagging.len(), 1, "{status:?}");
    assert!(lagging[0].tracked);
    let command = lagging[0].command.as_deref().expect("a command line");
    assert!(command.contains("sysgenid-probe"), "{command}");
}
