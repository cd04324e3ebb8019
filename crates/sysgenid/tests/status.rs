//! `status()` against a live daemon: the typed document, and a lagging process named; and
//! against a socket that answers as a version-1 daemon did, without `version`.

mod common;

use sysgenid::{BumpSource, Watcher, WatcherOptions};
use sysgenid_e2e::{Daemon, Probe};

use common::paths;

#[test]
fn status_reads_the_live_document() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(status.version, sysgenid::STATUS_VERSION);
    assert!(status.missing_fields().is_empty(), "{status:?}");
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

/// A line as a version-1 daemon printed it (captured from one, strings shortened).
const VERSION_1_LINE: &str = r#"{"generation":2,"serving":true,"degraded":false,"open_files":2,"tracked":1,"outdated":1,"outdated_files":[{"pid":16771,"command":"/usr/bin/python3 /tmp/ctlcap.py","tracked":true}],"pending_reads":0,"pending_waits":0,"last_bump":{"generation":2,"source":"trigger","pid":16771,"backend":null},"failed_bumps":0,"last_failure":null,"daemon":{"pid":16644,"device":"/tmp/ctlcap/device","state_dir":"/tmp/ctlcap/state","device_mmap":true,"serving":true,"backends":[{"name":"uevent","active":true,"reason":null,"detail":null}]}}"#;

#[test]
fn status_reads_a_version_1_daemons_document() {
    use std::io::{BufRead, BufReader, Write};

    let dir = tempfile::tempdir().unwrap();
    let paths = sysgenid::Paths::new(dir.path().join("device"), dir.path());
    let listener = std::os::unix::net::UnixListener::bind(paths.control_socket()).unwrap();
    let old_daemon = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut request = String::new();
        BufReader::new(&stream).read_line(&mut request).unwrap();
        writeln!(&stream, "{VERSION_1_LINE}").unwrap();
        request
    });
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(old_daemon.join().unwrap(), "status\n");
    assert_eq!(status.version, 1);
    assert_eq!(
        status.missing_fields(),
        [
            "version",
            "daemon.serving_pid",
            "daemon.restarts",
            "generation_id"
        ]
    );
    assert_eq!((status.generation, status.generation_id), (2, None));
    assert_eq!(status.outdated_files[0].pid, 16771);
    assert_eq!(status.daemon.backends[0].name, "uevent");
}
