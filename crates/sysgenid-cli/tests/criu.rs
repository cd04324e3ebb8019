//! `sysgenid overseer criu-action`, invoked as CRIU invokes action scripts: environment variables
//! CRTOOLS_SCRIPT_ACTION and CRTOOLS_INIT_PID, against a "container" (a daemon and a tracked
//! watcher in their own user and mount namespaces).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sysgenid_e2e::workspace_binary;

fn criu_action(action: Option<&str>, init_pid: Option<u32>, env: &[(&str, &Path)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sysgenid"));
    c.args(["overseer", "criu-action"])
        .env_remove("CRTOOLS_SCRIPT_ACTION")
        .env_remove("CRTOOLS_INIT_PID")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    if let Some(a) = action {
        c.env("CRTOOLS_SCRIPT_ACTION", a);
    }
    if let Some(p) = init_pid {
        c.env("CRTOOLS_INIT_PID", p.to_string());
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A daemon and a tracked watcher in a new user and mount namespace, on paths under `dir`.
struct Container {
    init: Child,
    dir: tempfile::TempDir,
}

impl Container {
    fn start() -> Container {
        let dir = tempfile::tempdir().expect("temp dir");
        let bins = workspace_binary("sysgenidd")
            .parent()
            .expect("bin dir")
            .to_owned();
        let script = r#"
            sysgenidd --device "$SYSGENID_DEVICE" --state-dir "$SYSGENID_STATE_DIR" \
                --backends none >"$C/daemon.log" 2>&1 &
            i=0
            until sysgenid --json status 2>/dev/null | grep -q '"serving":true'; do
                i=$((i + 1)); [ $i -le 400 ] || exit 1
                sleep 0.05
            done
            sysgenid --json watch --track >"$C/watch.log" 2>&1 &
            echo started >"$C/started"
            wait
        "#;
        let init = Command::new("unshare")
            .args(["-Urm", "--propagation", "private", "sh", "-c", script])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bins.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("C", dir.path())
            .env("SYSGENID_DEVICE", dir.path().join("device"))
            .env("SYSGENID_STATE_DIR", dir.path().join("state"))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("unshare");
        let c = Container { init, dir };
        c.wait_for("the container's daemon and watcher", || {
            c.path("started").exists() && c.status()["tracked"] == 1
        });
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The container daemon's status: its control socket is a file the host can reach.
    fn status(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_sysgenid"))
            .args(["--json", "status"])
            .env("SYSGENID_STATE_DIR", self.path("state"))
            .output()
            .expect("status");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn wait_for(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; daemon log:\n{}",
                std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The device and state paths as the container sees them.
    fn env(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("SYSGENID_DEVICE", self.path("device")),
            ("SYSGENID_STATE_DIR", self.path("state")),
        ]
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // The container's processes share its process group; when they are gone, the mount
        // namespace and the device mount go with them.
        if let Some(group) = rustix::process::Pid::from_raw(self.init.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.init.wait();
    }
}

#[test]
fn outside_criu_it_refuses_with_a_usage_error() {
    let out = criu_action(None, None, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CRTOOLS_SCRIPT_ACTION is not set"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn post_restore_without_a_live_init_pid_fails_where_criu_sees_it() {
    let out = criu_action(Some("post-restore"), None, &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("CRTOOLS_INIT_PID is not set"));

    // A pid that does not exist: the tree is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let out = criu_action(Some("post-restore"), Some(pid), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is gone"), "{}", stderr(&out));
}

#[test]
fn post_restore_enters_the_restored_tree_bumps_once_and_waits_for_its_watcher() {
    let container = Container::start();
    let env = container.env();
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let init = container.init.id();

    // Every other action is a no-op with status 0.
    for action in [
        "pre-dump",
        "post-dump",
        "pre-restore",
        "network-lock",
        "post-resume",
    ] {
        let out = criu_action(Some(action), Some(init), &env)
            .args(["--trigger", "--expect", "0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{action}: {}", stderr(&out));
    }
    assert_eq!(container.status()["generation"], 0);

    let ready = container.path("ready.json");
    std::fs::write(&ready, "").unwrap();
    let log = container.path("criu-action.log");
    let out = criu_action(Some("post-restore"), Some(init), &env)
        .args([
            "--trigger",
            "--expect",
            "0",
            "--grace",
            "0s",
            "--timeout",
            "10s",
        ])
        .arg("--notify-host")
        .arg(&ready)
        .arg("--log")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("runs detached"), "{}", stderr(&out));

    // The detached copy reached the device, which is mounted only in the container's mount
    // namespace, bumped once and saw the container's watcher acknowledge.
    container.wait_for("the readiness line", || {
        std::fs::read_to_string(&ready).is_ok_and(|s| s.contains("readjusted"))
    });
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(&ready).unwrap().trim()).unwrap();
    assert_eq!(line["event"], "readjusted", "{line}");
    assert_eq!(line["generation"], 1, "{line}");
    assert_eq!(line["triggered"], true, "{line}");
    let status = container.status();
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["outdated"], 0, "{status}");
    assert_eq!(status["last_bump"]["source"], "trigger", "{status}");
    let watched = std::fs::read_to_string(container.path("watch.log")).unwrap();
    assert!(watched.contains("\"generation\":1"), "{watched}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"readjusted\""), "{logged}");
}
