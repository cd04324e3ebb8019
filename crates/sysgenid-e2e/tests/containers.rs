//! The container model: each container runs its own daemon in its own user and mount namespaces.
//!
//! A container's root may trigger its own daemon (capabilities are judged in the daemon's user
//! namespace); bumps of the host's daemon never reach it, and its bumps never reach the host.

use std::process::Command;

use std::path::Path;

use sysgenid_e2e::{Daemon, DevFile, workspace_binary};

/// Runs `script` as root of a new user namespace with its own mount namespace, like a container,
/// with our binaries on PATH; returns stdout, and panics with stderr on failure.
fn in_container(dir: &Path, script: &str) -> String {
    let bins = workspace_binary("sysgenidd")
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        bins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("unshare")
        .args(["-Urm", "--propagation", "private", "sh", "-euc", script])
        .env("PATH", path)
        .env("C", dir)
        .env("SYSGENID_DEVICE", dir.join("device"))
        .env("SYSGENID_STATE_DIR", dir.join("state"))
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "container script failed ({}):\n{stdout}\n{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
    );
    stdout
}

/// Starts the container's daemon and waits until it serves.
const START: &str = r#"
sysgenidd --device "$SYSGENID_DEVICE" --state-dir "$SYSGENID_STATE_DIR" --backends none \
    >"$C/daemon.log" 2>&1 &
daemon=$!
i=0
until sysgenid --json status 2>/dev/null | grep -q '"serving":true'; do
    i=$((i + 1)); [ $i -le 400 ] || { echo "daemon did not serve"; exit 1; }
    sleep 0.05
done
"#;

const STOP: &str = r#"
kill "$daemon"; wait "$daemon" || true
"#;

#[test]
fn a_container_root_triggers_its_own_daemon_and_host_bumps_stay_outside() {
    let host = Daemon::start();
    DevFile::rw(Path::new(host.device_str()))
        .trigger(5)
        .expect("host trigger");
    let dir = tempfile::tempdir().expect("temp dir");
    let script = format!(
        "{START}
        echo \"start $(sysgenid get)\"
        echo \"whoami $(id -u) $(grep CapEff /proc/self/status | tr -d '\\t')\"
        sysgenid trigger >/dev/null
        echo \"after-trigger $(sysgenid get)\"
        sysgenid trigger --min 40 >/dev/null
        echo \"after-min $(sysgenid get)\"
        sysgenid --json status | grep -o '\"source\":\"trigger\"'
        touch \"$C/ready\"
        until [ -e \"$C/go\" ]; do sleep 0.05; done
        echo \"after-host-bump $(sysgenid get)\"
        {STOP}"
    );
    // While the container's daemon runs, the host bumps its own daemon.
    let host_bump = {
        let device = host.device_str().to_owned();
        let (ready, go) = (dir.path().join("ready"), dir.path().join("go"));
        std::thread::spawn(move || {
            sysgenid_e2e::eventually("the container's first steps", || ready.exists());
            DevFile::rw(Path::new(&device))
                .trigger(9)
                .expect("host trigger");
            std::fs::write(go, "").unwrap();
        })
    };
    let out = in_container(dir.path(), &script);
    host_bump.join().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "start 0",
        "a container's daemon starts on its own: {out}"
    );
    assert!(lines[1].starts_with("whoami 0 CapEff:"), "{out}");
    assert_eq!(lines[2], "after-trigger 1", "{out}");
    assert_eq!(lines[3], "after-min 40", "{out}");
    assert_eq!(lines[4], "\"source\":\"trigger\"", "{out}");
    assert_eq!(
        lines[5], "after-host-bump 40",
        "the host's bump never reaches the container's daemon: {out}"
    );
    assert_eq!(
        host.status()["generation"],
        9,
        "the container's bumps never reach the host's daemon (5, then the host's own 9)"
    );

    // A restarted container daemon continues from its persisted counter (same boot).
    let out = in_container(
        dir.path(),
        &format!("{START}\necho \"restarted $(sysgenid get)\"\n{STOP}"),
    );
    assert_eq!(out.trim(), "restarted 40", "{out}");
    assert_eq!(host.status()["generation"], 9);
}
