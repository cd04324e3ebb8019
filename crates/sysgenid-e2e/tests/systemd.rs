//! The systemd unit: it verifies, keeps the mount visible to everyone, and `Type=notify` gets
//! `READY=1` only once the device is served.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sysgenid_e2e::{Daemon, DaemonOptions, workspace_binary};

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd/sysgenidd.service")
}

#[test]
fn the_unit_passes_systemd_analyze_verify_without_warnings() {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("sysgenidd.service");
    let daemon = workspace_binary("sysgenidd");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/sysgenidd", daemon.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed by scripts/test.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

/// The unit's settings: `Key=value` lines, comments left out.
fn settings() -> Vec<String> {
    let text = std::fs::read_to_string(unit_path()).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(str::to_owned)
        .collect()
}

/// Options that give the service a mount namespace of its own: the device's mount would be
/// invisible to everyone else (docs/security.md).
const MOUNT_NAMESPACE_OPTIONS: &[&str] = &[
    "PrivateDevices",
    "ProtectSystem",
    "PrivateTmp",
    "ProtectHome",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "PrivateIPC",
    "PrivatePIDs",
    "PrivateBPF",
    "ReadOnlyPaths",
    "ReadWritePaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "RootDirectory",
    "RootImage",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "LogNamespace",
];

#[test]
fn the_unit_is_type_notify_and_never_hides_the_mount() {
    let settings = settings();
    assert!(settings.iter().any(|l| l == "Type=notify"));
    for hiding in MOUNT_NAMESPACE_OPTIONS {
        assert!(
            !settings
                .iter()
                .any(|l| l.starts_with(&format!("{hiding}="))),
            "{hiding}= would put the mount in a private namespace"
        );
    }
    let only = |key: &str, allowed: &str| {
        for l in settings
            .iter()
            .filter(|l| l.starts_with(&format!("{key}=")))
        {
            assert_eq!(
                l,
                &format!("{key}={allowed}"),
                "any other value hides the mount"
            );
        }
    };
    only("PrivateMounts", "no");
    only("MountFlags", "shared");
    // Newer systemd gives PrivateNetwork= a mount namespace unless PrivateMounts=no is explicit.
    if settings.iter().any(|l| l == "PrivateNetwork=yes") {
        assert!(settings.iter().any(|l| l == "PrivateMounts=no"));
    }
}

/// The overall exposure `systemd-analyze security --offline=yes` gave the unit when its
/// sandbox was last measured (docs/security.md): a change may lower it, never raise it.
const MEASURED_EXPOSURE: f64 = 3.4;

#[test]
fn the_offline_security_exposure_stays_at_or_below_the_measured_one() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_path())
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed by scripts/test.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for sysgenidd.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in: {text}"));
    assert!(
        exposure <= MEASURED_EXPOSURE,
        "exposure {exposure} is above the measured {MEASURED_EXPOSURE}:\n{text}"
    );
}

fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notify message within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn notify_socket_gets_ready_once_serving_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut daemon = Daemon::start_with(DaemonOptions {
        env: vec![("NOTIFY_SOCKET".into(), path.to_str().unwrap().into())],
        ..DaemonOptions::default()
    });
    // The connection and the session go to the fd store first, each with its name.
    let mut stored = Vec::new();
    let ready = loop {
        let message = next_message(&socket);
        match message.strip_prefix("FDSTORE=1\nFDNAME=") {
            Some(name) => stored.push(name.trim().to_owned()),
            None => break message,
        }
    };
    assert_eq!(stored, ["fuse", "session"]);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains("STATUS=serving generation 0"), "{ready:?}");
    // READY=1 means serving: the mount answers and the page file is whole.
    assert_eq!(std::fs::metadata(&daemon.device).unwrap().len(), 4096);
    assert_eq!(std::fs::metadata(daemon.page_file()).unwrap().len(), 4096);
    sysgenid_e2e::DevFile::rw(&daemon.device)
        .trigger(0)
        .unwrap();
    let status = next_message(&socket);
    assert_eq!(status.trim(), "STATUS=serving generation 1");
    assert!(daemon.stop());
    let stopping = next_message(&socket);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}
