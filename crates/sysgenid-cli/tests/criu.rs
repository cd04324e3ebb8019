//! `sysgenid overseer criu-action`, invoked as CRIU invokes action scripts: environment variables
//! CRTOOLS_SCRIPT_ACTION and CRTOOLS_INIT_PID, against a "container" (a daemon and a tracked
//! watcher in their own user, mount and pid namespaces).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sysgenid_e2e::{Daemon, workspace_binary};

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

/// A daemon and a tracked watcher in new user, mount and pid namespaces, on paths under `dir`.
struct Container {
    /// The `unshare` process, outside the new pid namespace.
    unshare: Child,
    /// The container's init (pid 1 inside), as the host sees it: CRTOOLS_INIT_PID.
    init: u32,
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
        let unshare = Command::new("unshare")
            .args(["-Urmpf", "--mount-proc", "--propagation", "private"])
            .args(["sh", "-c", script])
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
        let mut c = Container {
            unshare,
            init: 0,
            dir,
        };
        c.wait_for("the container's daemon and watcher", || {
            c.path("started").exists() && c.status()["tracked"] == 1
        });
        c.init = init_of(c.unshare.id()).expect("the container's init");
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
                "timed out waiting for {what}; daemon log:\n{}\ncriu-action log:\n{}",
                std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default(),
                std::fs::read_to_string(self.path("criu-action.log")).unwrap_or_default()
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
        if let Some(group) = rustix::process::Pid::from_raw(self.unshare.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.unshare.wait();
    }
}

/// The container's init: with -f, `unshare` forks it, so inside `$$` is 1 and the host pid is
/// known only to the host. It is found in the host's /proc as the child of `unshare` (PPid) that
/// is pid 1 in its own pid namespace (the last NSpid); unlike /proc/PID/task/TID/children this
/// needs no CONFIG_PROC_CHILDREN.
fn init_of(unshare: u32) -> Option<u32> {
    let field = |status: &str, name: &str| -> Option<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let parent = field(&status, "PPid:")?;
        let inner = field(&status, "NSpid:")?;
        let inner = inner.split_whitespace().last()?;
        (parent == unshare.to_string() && inner == "1").then_some(pid)
    })
}

fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
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
    let init = container.init;

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
    // An un-quiesce hook of post-restore: its parent's pid and its pid namespace, as it sees them.
    let seen = container.path("seen");
    let hook = format!(
        "echo \"$PPID $(readlink /proc/self/ns/pid)\" > '{}'",
        seen.display()
    );
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
        .args(["--exec", &hook])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("runs detached"), "{}", stderr(&out));

    // The detached copy reached the device, which is mounted only in the container's mount
    // namespace, bumped once and saw the container's watcher acknowledge.
    container.wait_for("the readiness line", || {
        std::fs::read_to_string(&ready).is_ok_and(|s| s.contains('\n'))
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

    // post-restore ran in the container's pid namespace: the daemon there saw the bump come
    // from the process that ran the hook, which lives in the namespace of the container's init.
    let seen = std::fs::read_to_string(&seen).unwrap();
    let (parent, pid_ns) = seen.trim().split_once(' ').expect("pid and namespace");
    assert_eq!(
        status["last_bump"]["pid"].to_string(),
        parent,
        "{status} {seen}"
    );
    assert_eq!(pid_ns, ns_link(&init.to_string(), "pid"), "{seen}");
    assert_ne!(pid_ns, ns_link("self", "pid"), "{seen}");
}

#[test]
fn the_detached_copy_keeps_no_inherited_fd_open_and_has_its_own_session() {
    let daemon = Daemon::start();
    // The "restored tree", here in our own namespaces: nothing to join.
    let tree = Killed(Command::new("sleep").arg("60").spawn().unwrap());
    let ready = daemon.dir.join("ready.json");
    std::fs::write(&ready, "").unwrap();
    let session = daemon.dir.join("session");
    let log = daemon.dir.join("criu-action.log");
    // A hook's parent runs post-restore: field 6 of its stat is its session.
    let hook = format!("cut -d' ' -f6 /proc/$PPID/stat > '{}'", session.display());
    // The shell leaves the pipe on fd 7 without close-on-exec, as CRIU passes its status fd,
    // and puts stdout elsewhere. --grace keeps post-restore going for 3 s.
    let mut call = Command::new("sh")
        .args(["-c", r#"exec "$@" 7>&1 >/dev/null"#, "sh"])
        .arg(env!("CARGO_BIN_EXE_sysgenid"))
        .args(["overseer", "criu-action", "--trigger", "--expect", "0"])
        .args(["--grace", "3s", "--exec", &hook, "--notify-host"])
        .arg(&ready)
        .arg("--log")
        .arg(&log)
        .env("CRTOOLS_SCRIPT_ACTION", "post-restore")
        .env("CRTOOLS_INIT_PID", tree.0.id().to_string())
        .env("SYSGENID_DEVICE", &daemon.device)
        .env("SYSGENID_STATE_DIR", &daemon.state_dir)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = call.stdout.take().unwrap();
    let (tx, eof) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = pipe.read_to_end(&mut sink);
        let _ = tx.send(());
    });
    let out = call.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // The pipe closes with CRIU's call, while post-restore still waits out its grace.
    eof.recv_timeout(Duration::from_secs(2))
        .expect("EOF on the inherited pipe once the call returned");
    assert_eq!(
        std::fs::read_to_string(&ready).unwrap(),
        "",
        "post-restore is still running"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&ready).unwrap().contains('\n') {
        assert!(
            Instant::now() < deadline,
            "no readiness line; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(&ready).unwrap().trim()).unwrap();
    assert_eq!(line["event"], "readjusted", "{line}");
    assert_eq!(line["triggered"], true, "{line}");

    // The detached copy leads its own session (setsid succeeded), which its child inherits.
    let message = stderr(&out);
    let detached = message
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("{message}"));
    let session = std::fs::read_to_string(&session).unwrap();
    assert_eq!(session.trim(), detached, "{message}");
    let ours = rustix::process::getsid(None)
        .unwrap()
        .as_raw_nonzero()
        .to_string();
    assert_ne!(session.trim(), ours);
}

/// A child killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
