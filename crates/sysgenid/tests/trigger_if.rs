//! `trigger_if` against a live daemon: the control socket's conditional bump, its permission
//! check on the peer process, its atomicity against other bumps, and its errors.

mod common;

use std::process::Command;

use sysgenid::{BumpSource, Error, Paths, Probe, Watcher, WatcherOptions};
use sysgenid_e2e::{Daemon, DaemonOptions, DevFile, FailingWrites, eventually};

use common::{NOBODY, client_binary, paths, run_client};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn with_the_current_generation_it_bumps_once_publishes_and_wakes() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    sysgenid::trigger_at(&paths, Some(4)).unwrap();
    let mut watcher = Watcher::open_with(&paths, WatcherOptions::new().tracking(true)).unwrap();
    let probe = Probe::open(&paths).unwrap();

    let outcome = sysgenid::trigger_if_at(&paths, 4, None).unwrap();
    assert!(outcome.bumped);
    assert_eq!(outcome.generation, 5);
    assert_eq!(watcher.try_read().unwrap().expect("woken").generation, 5);
    assert_eq!(probe.generation(), 5, "the page file was updated");
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!((status.generation, status.outdated), (5, 1));
    let bump = status.last_bump.expect("recorded");
    assert_eq!(bump.source, BumpSource::Trigger);
    assert_eq!(bump.pid, Some(std::process::id()), "the peer's pid");

    let outcome = sysgenid::trigger_if_at(&paths, 5, Some(10)).unwrap();
    assert_eq!((outcome.bumped, outcome.generation), (true, 10));
    assert_eq!(daemon.generation(), 10);
}

#[test]
fn with_a_stale_generation_it_bumps_nothing() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    sysgenid::trigger_at(&paths, Some(3)).unwrap();
    let mut watcher = Watcher::open(&paths).unwrap();
    for stale in [2, 4, 0] {
        let outcome = sysgenid::trigger_if_at(&paths, stale, Some(100)).unwrap();
        assert_eq!((outcome.bumped, outcome.generation), (false, 3), "{stale}");
    }
    assert!(watcher.try_read().unwrap().is_none(), "no one was woken");
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(status.generation, 3);
    assert_eq!(status.last_bump.expect("the first trigger").generation, 3);
    assert_eq!(status.failed_bumps, 0);
}

#[test]
fn the_peer_needs_the_capability_in_the_daemons_user_namespace() {
    let daemon = Daemon::start();
    let out = run_client(&daemon, &NOBODY, &["trigger-if", "0"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("errno: 13"), "{}", stderr(&out));

    let own_namespace = Command::new("unshare")
        .arg("-Ur")
        .arg(client_binary(&daemon))
        .args(["trigger-if", "0"])
        .env("SYSGENID_DEVICE", &daemon.device)
        .env("SYSGENID_STATE_DIR", &daemon.state_dir)
        .output()
        .unwrap();
    assert!(!own_namespace.status.success(), "{own_namespace:?}");
    assert!(
        stderr(&own_namespace).contains("errno: 13"),
        "{}",
        stderr(&own_namespace)
    );
    assert_eq!(daemon.generation(), 0, "nothing changed");

    let checkpoint_restore = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+checkpoint_restore",
        "--ambient-caps=+checkpoint_restore",
    ];
    let out = run_client(&daemon, &checkpoint_restore, &["trigger-if", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ok bumped=true generation=1");
    assert_eq!(daemon.generation(), 1);
}

#[test]
fn concurrent_conditional_bumps_and_a_trigger_make_exactly_the_bumps_they_should() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    for round in 0..5u32 {
        let start = u32::try_from(daemon.generation()).unwrap();
        let overseers: Vec<_> = (0..8)
            .map(|_| {
                let paths = paths.clone();
                std::thread::spawn(move || sysgenid::trigger_if_at(&paths, start, None).unwrap())
            })
            .collect();
        // A "backend": an unconditional bump racing with them.
        DevFile::rw(&daemon.device).trigger(0).unwrap();
        let outcomes: Vec<_> = overseers.into_iter().map(|t| t.join().unwrap()).collect();
        let bumped = outcomes.iter().filter(|o| o.bumped).count() as u32;
        let end = u32::try_from(daemon.generation()).unwrap();
        assert!(bumped <= 1, "round {round}: {outcomes:?}");
        assert_eq!(end, start + 1 + bumped, "round {round}: {outcomes:?}");
        for o in outcomes.iter().filter(|o| !o.bumped) {
            assert!(o.generation > start, "round {round}: {o:?}");
        }
    }
}

#[test]
fn at_u32_max_it_overflows_only_when_current() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    sysgenid::trigger_at(&paths, Some(u32::MAX)).unwrap();
    let err = sysgenid::trigger_if_at(&paths, u32::MAX, None).unwrap_err();
    assert!(matches!(err, Error::Overflow), "{err:?}");
    let outcome = sysgenid::trigger_if_at(&paths, 7, None).unwrap();
    assert_eq!((outcome.bumped, outcome.generation), (false, u32::MAX));
}

#[test]
fn a_failed_persist_is_persist_failed_and_changes_nothing() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let _failing = FailingWrites::on(daemon.serving_pid());
    let err = sysgenid::trigger_if_at(&paths, 0, None).unwrap_err();
    assert!(matches!(err, Error::PersistFailed), "{err:?}");
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(status.generation, 0);
    assert!(status.degraded);
    assert_eq!(status.last_failure.expect("recorded").error, "EIO");
}

#[test]
fn without_a_daemon_it_asks_whether_sysgenidd_runs() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::new(dir.path().join("device"), dir.path().join("state"));
    let err = sysgenid::trigger_if_at(&paths, 0, None).unwrap_err();
    assert!(matches!(err, Error::ControlUnavailable { .. }), "{err:?}");
    assert!(err.daemon_not_running());
    assert!(err.to_string().contains("is sysgenidd running?"), "{err}");
}

/// A socket peer is not blocked while it is judged: an unprivileged process that connects, hands
/// the socket to a child and then execs a setuid-root program must not pass as root when the
/// child sends the request.
#[test]
fn a_peer_that_gains_privileges_by_exec_after_connecting_is_refused() {
    let daemon = Daemon::start();
    daemon.allow_other_users();
    // A setuid-root `sleep` in the daemon's (root-owned, suid-capable) temporary directory.
    let setuid_sleep = daemon.dir.join("setuid-sleep");
    std::fs::copy("/bin/sleep", &setuid_sleep).unwrap();
    std::fs::set_permissions(
        &setuid_sleep,
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )
    .unwrap();
    let script = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"trigger-if 0")
parent = os.getpid()
if os.fork() == 0:
    # Wait until the parent runs the setuid program (effective uid 0), then send.
    for _ in range(500):
        with open(f"/proc/{parent}/status") as f:
            uids = next(l for l in f if l.startswith("Uid:")).split()[1:]
        if uids[1] == "0":
            break
        time.sleep(0.01)
    else:
        print("the parent never became root", flush=True)
        os._exit(1)
    s.sendall(b"\n")
    print(s.recv(4096).decode().strip(), flush=True)
    os._exit(0)
os.execv(sys.argv[2], [sys.argv[2], "3"])
"#;
    // Not `NOBODY`: its empty bounding set would keep the setuid program from gaining anything.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(daemon.control_socket())
        .arg(&setuid_sleep)
        .output()
        .unwrap();
    // The python parent became `sleep`; its forked child printed the answer before exiting.
    let answer = stdout(&out);
    assert!(answer.contains("EACCES"), "{answer:?} {}", stderr(&out));
    assert_eq!(daemon.generation(), 0, "nothing was bumped");
    assert!(
        daemon
            .log()
            .contains("credentials changed since it connected"),
        "{}",
        daemon.log()
    );
}

/// The overseer bumped for a restore before a slower backend noticed it: the backend's report
/// is the same restore (the daemon's dedupe window opens at the conditional bump), and a later
/// change is a new restore.
#[test]
fn a_backend_that_notices_the_restore_after_the_overseer_bumps_nothing_more() {
    use std::os::unix::fs::FileExt;
    let blob_dir = tempfile::tempdir().unwrap();
    let blob = blob_dir.path().join("vmgenid_guid");
    let set_guid = |guid: u128| {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&blob)
            .unwrap();
        f.set_len(4096).unwrap();
        f.write_at(&guid.to_le_bytes(), 40).unwrap();
    };
    set_guid(1);
    let daemon = Daemon::start_with(DaemonOptions {
        args: vec![
            "--backends".into(),
            "fw-cfg".into(),
            "--fw-cfg-path".into(),
            blob.display().to_string(),
        ],
        ..DaemonOptions::default()
    });
    let paths = paths(&daemon);
    assert!(sysgenid::status_at(&paths).unwrap().daemon.backends[0].active);

    // The restore: the overseer bumps first, then the hardware changes (polled every 250 ms).
    let outcome = sysgenid::trigger_if_at(&paths, 0, None).unwrap();
    assert_eq!((outcome.bumped, outcome.generation), (true, 1));
    set_guid(2);
    eventually("fw-cfg reports the same restore", || {
        daemon.log().contains("same restore already reported")
    });
    assert!(
        daemon.log().contains("winner=trigger-if"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.generation(), 1, "one restore, one bump");

    // After the window, a change is another restore.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    set_guid(3);
    eventually("fw-cfg bumps for the new restore", || {
        daemon.generation() == 2
    });
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(status.last_bump.unwrap().backend.as_deref(), Some("fw-cfg"));
}
