//! A daemon run without root: it mounts under `$XDG_RUNTIME_DIR/sysgenid` through
//! `fusermount3`, or says exactly what is missing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use sysgenid_e2e::{Identity, Probe, eventually, workspace_binary};

const DEV_FUSE: &str = "/dev/fuse";

/// Restores the mode of `/dev/fuse` when dropped.
struct RestoreMode(u32);

impl Drop for RestoreMode {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(DEV_FUSE, std::fs::Permissions::from_mode(self.0));
    }
}

fn set_dev_fuse_mode(mode: u32) {
    std::fs::set_permissions(DEV_FUSE, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn nobody_daemon(runtime_dir: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg("env")
    .arg(format!("XDG_RUNTIME_DIR={}", runtime_dir.display()))
    .arg(workspace_binary("sysgenidd"))
    .args(["--backends", "none"])
    .stdin(Stdio::null());
    c
}

#[test]
fn without_root_the_daemon_mounts_through_fusermount3_or_says_what_is_missing() {
    let original = std::fs::metadata(DEV_FUSE).unwrap().permissions().mode() & 0o7777;
    let _restore = RestoreMode(original);
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let base = runtime.path().join("sysgenid");

    // A /dev/fuse closed to users: a clear refusal.
    set_dev_fuse_mode(0o600);
    let out = nobody_daemon(runtime.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mounting without root needs /dev/fuse readable and writable"),
        "{stderr}"
    );

    // A /dev/fuse open to users, as Debian ships it: a fusermount3 mount the user can use.
    set_dev_fuse_mode(0o666);
    let mut daemon = nobody_daemon(runtime.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let device = base.join("device");
    let socket = base.join("control.sock");
    eventually("the user daemon serves", || {
        std::os::unix::net::UnixStream::connect(&socket)
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(b"status\n")?;
                let mut text = String::new();
                s.read_to_string(&mut text)?;
                Ok(text.contains("\"serving\":true"))
            })
            .unwrap_or(false)
    });
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.contains(device.to_str().unwrap()))
        .expect("mounted");
    assert!(
        line.contains("fuse.sysgenid") && line.contains("user_id=65534"),
        "{line}"
    );
    let steps = ["open", device.to_str().unwrap(), "rw-nonblock", "read", "4"];
    assert_eq!(
        Probe::run(Identity::Nobody, &steps),
        ["open ok", "read err EAGAIN"],
        "the owner uses its own device"
    );
    let page = base.join("generation");
    let meta = std::fs::metadata(&page).unwrap();
    assert_eq!(
        (meta.len(), meta.permissions().mode() & 0o777),
        (4096, 0o444)
    );

    let pid = rustix::process::Pid::from_raw(daemon.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(device.to_str().unwrap()),
        "fusermount3 -u unmounted it"
    );
}
