//! The fast probe: the page file, the device fallback, and the global probe of a process.

mod common;

use sysgenid::{Error, Paths, Probe, ProbeSource};
use sysgenid_e2e::{Daemon, DaemonOptions};

use common::{paths, run_client, trigger_from_another_process};

#[test]
fn the_page_file_probe_follows_every_bump() {
    let daemon = Daemon::start();
    let probe = Probe::open(&paths(&daemon)).unwrap();
    assert_eq!(probe.source(), &ProbeSource::PageFile(daemon.page_file()));
    assert_eq!(probe.generation(), 0);
    trigger_from_another_process(&daemon, 0);
    assert_eq!(probe.generation(), 1, "a woken caller finds the new value");
    sysgenid::trigger_at(&paths(&daemon), Some(41)).unwrap();
    assert_eq!(probe.generation(), 41);
}

#[test]
fn every_bump_draws_a_new_id_that_the_page_file_the_device_and_status_agree_on() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let page = Probe::open(&paths).unwrap();
    let device = Probe::device(&daemon.device).unwrap();
    let mut seen = Vec::new();
    for round in 0..4 {
        let (generation, id) = page.generation_with_id().expect("an ID from the start");
        assert_eq!(generation, round);
        assert_eq!(device.generation_with_id(), Some((generation, id)));
        let status = sysgenid::status_at(&paths).unwrap();
        assert_eq!(
            (status.generation, status.generation_id),
            (generation, Some(id))
        );
        assert!(!seen.contains(&id), "ID {id} seen before");
        seen.push(id);
        trigger_from_another_process(&daemon, 0);
    }
}

#[test]
fn without_a_page_file_the_probe_maps_the_device() {
    let daemon = Daemon::start();
    let empty_state = tempfile::tempdir().unwrap();
    let paths = Paths::new(&daemon.device, empty_state.path());
    let probe = Probe::open(&paths).unwrap();
    assert_eq!(probe.source(), &ProbeSource::Device(daemon.device.clone()));
    assert_eq!(probe.generation(), 0);
    sysgenid::trigger_at(&paths, None).unwrap();
    assert_eq!(probe.generation(), 1);
    sysgenid::trigger_at(&paths, Some(9)).unwrap();
    assert_eq!(probe.generation(), 9);
}

#[test]
fn with_device_mmap_off_and_no_page_file_the_probe_says_why() {
    let daemon = Daemon::start_with(DaemonOptions {
        args: vec!["--device-mmap".into(), "off".into()],
        ..DaemonOptions::default()
    });
    let empty_state = tempfile::tempdir().unwrap();
    let err = Probe::open(&Paths::new(&daemon.device, empty_state.path())).unwrap_err();
    assert!(matches!(err, Error::MapUnsupported { .. }), "{err}");
    assert!(err.to_string().contains("--device-mmap off"), "{err}");
    // The page file still works.
    assert_eq!(Probe::open(&paths(&daemon)).unwrap().generation(), 0);
}

#[test]
fn with_neither_page_file_nor_device_the_probe_asks_if_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path().join("device"), dir.path().join("state"));
    let err = Probe::open(&paths).unwrap_err();
    assert!(matches!(err, Error::DeviceMissing { .. }), "{err}");
    assert!(err.to_string().contains("is sysgenidd running?"), "{err}");
    assert!(err.daemon_not_running());
}

#[test]
fn the_global_generation_reads_the_environment_of_its_process() {
    let daemon = Daemon::start();
    sysgenid::trigger_at(&paths(&daemon), Some(5)).unwrap();
    // In a child process, whose environment names the daemon.
    let out = run_client(&daemon, &[], &["generation"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 5");
}

#[test]
fn the_probe_is_shared_between_threads() {
    let daemon = Daemon::start();
    let probe = Probe::open(&paths(&daemon)).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(probe.generation(), 0));
        }
    });
}
