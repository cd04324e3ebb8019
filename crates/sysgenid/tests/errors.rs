//! The messages a user sees when something is wrong: no daemon, a dead socket, and real
//! permission errors from the `client` example run as `nobody` under `setpriv`.

mod common;

use sysgenid::{Error, Paths, Watcher, WatcherOptions};
use sysgenid_e2e::Daemon;

use common::{NOBODY, paths, run_client};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_device_asks_whether_sysgenidd_runs() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path().join("device"), dir.path().join("state"));
    for err in [
        Watcher::open(&paths).unwrap_err(),
        sysgenid::trigger_at(&paths, None).unwrap_err(),
        sysgenid::wait_watchers_at(&paths, None).unwrap_err(),
    ] {
        assert!(matches!(err, Error::DeviceMissing { .. }), "{err:?}");
        assert!(err.to_string().contains("is sysgenidd running?"), "{err}");
        assert!(err.to_string().contains("device"), "{err}");
    }
}

#[test]
fn a_dead_control_socket_asks_whether_sysgenidd_runs() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody listens on: connection refused.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    drop(std::os::unix::net::UnixListener::bind(state.join("control.sock")).unwrap());
    let err = sysgenid::status_at(&Paths::new(dir.path().join("device"), &state)).unwrap_err();
    assert!(matches!(err, Error::ControlUnavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("is sysgenidd running?"), "{err}");
    assert!(err.daemon_not_running());
}

#[test]
fn a_stopped_daemon_leaves_a_mountpoint_that_is_not_mistaken_for_the_device() {
    // A mountpoint file the daemon did not make stays after a clean stop, mode 0000.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("device"), "").unwrap();
    let mut daemon = sysgenid_e2e::Daemon::start_with(sysgenid_e2e::DaemonOptions {
        dir: Some(dir.path().to_owned()),
        ..Default::default()
    });
    let paths = paths(&daemon);
    assert!(daemon.stop());
    // Root can open the mode-0000 mountpoint; the library sees it is not served.
    let err = Watcher::open_with(&paths, WatcherOptions::new().reopen_timeout(None)).unwrap_err();
    assert!(matches!(err, Error::NotServed { .. }), "{err:?}");
    assert!(err.to_string().contains("is sysgenidd running?"), "{err}");
    let err = sysgenid::status_at(&paths).unwrap_err();
    assert!(err.to_string().contains("is sysgenidd running?"), "{err}");
}

#[test]
fn a_trigger_without_the_capability_names_it() {
    let daemon = Daemon::start();
    let out = run_client(&daemon, &NOBODY, &["trigger"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = stderr(&out);
    assert!(
        stderr.contains("CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN"),
        "{stderr}"
    );
    assert!(stderr.contains("errno: 13"), "{stderr}");
    assert_eq!(daemon.generation(), 0, "nothing changed");
}

#[test]
fn opening_for_writing_outside_the_writer_group_names_the_group() {
    let daemon = Daemon::start();
    let out = run_client(&daemon, &NOBODY, &["watch"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = stderr(&out);
    assert!(stderr.contains("`sysgenid` group"), "{stderr}");
    assert!(stderr.contains("errno: 13"), "{stderr}");
}

#[test]
fn anyone_may_read_the_generation_and_wait() {
    let daemon = Daemon::start();
    sysgenid::trigger_at(&paths(&daemon), Some(3)).unwrap();
    let out = run_client(&daemon, &NOBODY, &["generation"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 3");
    // The free wait opens read-only when it may not write.
    let out = run_client(&daemon, &NOBODY, &["wait", "1000"]);
    assert!(out.status.success(), "{out:?}");
}
