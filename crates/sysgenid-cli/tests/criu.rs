//! `sysgenid overseer criu-action`, invoked as CRIU invokes action scripts: environment variables
//! CRTOOLS_SCRIPT_ACTION and CRTOOLS_INIT_PID, against a "container" (a daemon and a tracked
//! watcher in their own mount and pid namespaces and cgroup, with or without a user namespace).
//! These tests need root and cgroup v2, and fail without them.

mod common;

use common::stderr;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sysgenid_e2e::{Daemon, workspace_binary};

/// The host uid and gid of root in a container's user namespace.
const CONTAINER_ROOT: u32 = 100_000;

fn criu_action(action: Option<&str>, init_pid: Option<u32>, env: &[(&str, &Path)]) -> Command {
    criu_action_via(&[], action, init_pid, env)
}

/// `criu_action` started through `wrapper` (a program and its arguments), if not empty.
fn criu_action_via(
    wrapper: &[&str],
    action: Option<&str>,
    init_pid: Option<u32>,
    env: &[(&str, &Path)],
) -> Command {
    let bin = env!("CARGO_BIN_EXE_sysgenid");
    let mut c = match wrapper {
        [] => Command::new(bin),
        [program, args @ ..] => {
            let mut c = Command::new(program);
            c.args(args).arg(bin);
            c
        }
    };
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

/// Whether a container has its own user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Users {
    /// Its own, whose root is host uid and gid [`CONTAINER_ROOT`].
    Own,
    /// The host's: the container's root is host root.
    Host,
}

/// A daemon and a tracked watcher in new mount and pid namespaces (and a user namespace unless
/// [`Users::Host`]) and a cgroup of their own, on paths under `dir`; `overseer pre-snapshot`
/// has recorded generation 0.
struct Container {
    /// The `unshare` process, outside the new pid namespace.
    unshare: Child,
    /// The container's init (pid 1 inside), as the host sees it: CRTOOLS_INIT_PID.
    init: u32,
    dir: tempfile::TempDir,
    /// The holder of the user namespace, if any.
    users: Option<Killed>,
    /// Last: removed once the rest has gone.
    cgroup: Cgroup,
}

impl Container {
    fn start(users: Users) -> Container {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("quiesce.d")).unwrap();
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
            sysgenid --json overseer pre-snapshot --hooks-dir "$C/quiesce.d" >"$C/pre.log" 2>&1 \
                || exit 1
            echo started >"$C/started"
            wait
        "#;
        let cgroup = Cgroup::new();
        let mut run = Command::new("sh");
        // The container's processes start in its cgroup.
        run.args(["-c", r#"echo $$ >"$CG/cgroup.procs" && exec "$@""#, "sh"])
            .env("CG", &cgroup.0);
        let users_holder = match users {
            Users::Own => {
                let holder = user_namespace(&[
                    format!("0 {CONTAINER_ROOT} 65536"),
                    // Host root, mapped so that the container's root may open /dev/fuse
                    // (0600 root:root) and the test's directory with its capabilities.
                    "65536 0 1".to_owned(),
                ]);
                // nsenter -U takes uid and gid 0 there.
                run.args(["nsenter", "-t", &holder.0.id().to_string(), "-U", "--"]);
                Some(holder)
            }
            Users::Host => None,
        };
        let unshare = run
            .args([
                "unshare",
                "-mpf",
                "--mount-proc",
                "--propagation",
                "private",
            ])
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
            users: users_holder,
            cgroup,
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

    /// The container daemon's status: its control socket is a file the host can reach. A
    /// daemon of the container's own users is asked from its user namespace, where its uid is
    /// the client's (clients trust only root and themselves).
    fn status(&self) -> Value {
        let sysgenid = env!("CARGO_BIN_EXE_sysgenid");
        let mut command = match &self.users {
            Some(holder) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &holder.0.id().to_string(), "-U", "--", sysgenid]);
                c
            }
            None => Command::new(sysgenid),
        };
        let out = command
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
                "timed out waiting for {what}; daemon log:\n{}\npre-snapshot:\n{}\n\
                 criu-action log:\n{}",
                std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default(),
                std::fs::read_to_string(self.path("pre.log")).unwrap_or_default(),
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
        // And whatever joined its cgroup (post-restore), before its directory goes.
        self.cgroup.kill();
    }
}

/// A process in a new user namespace with these uid and gid maps (written by us, host root,
/// as newuidmap would), holding the namespace until it is killed.
fn user_namespace(map: &[String]) -> Killed {
    let holder = Killed(
        Command::new("unshare")
            .args(["-U", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare -U"),
    );
    let pid = holder.0.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns_link(&pid, "user") == ns_link("self", "user") {
        assert!(Instant::now() < deadline, "unshare -U did not unshare");
        std::thread::sleep(Duration::from_millis(10));
    }
    let map = map.join("\n") + "\n";
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{file}"), &map)
            .unwrap_or_else(|e| panic!("/proc/{pid}/{file}: {e} (this test needs root)"));
    }
    holder
}

/// A cgroup v2 cgroup below ours, emptied and removed when dropped.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new() -> Cgroup {
        // The first cgroup2 mount, assumed to show the whole hierarchy (its root is /).
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = info
            .lines()
            .find_map(|l| {
                let (mount, fs) = l.split_once(" - ")?;
                fs.starts_with("cgroup2 ")
                    .then(|| mount.split(' ').nth(4))
                    .flatten()
            })
            .expect("a cgroup2 mount: these tests need cgroup v2");
        let ours = cgroup_of("self");
        let dir = Path::new(mount)
            .join(ours.trim_start_matches('/'))
            .join(format!("sysgenid-criu-test-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (these tests need root)", dir.display()));
        Cgroup(dir)
    }

    /// Kills every process in it.
    fn kill(&self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill();
        // Killed processes leave it once reaped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = std::fs::remove_dir(&self.0) {
            if Instant::now() > deadline {
                eprintln!("cannot remove {}: {e}", self.0.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The cgroup v2 path of `pid` ("self" for ours), as the host sees it.
fn cgroup_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line (0::PATH)")
        .to_owned()
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

/// Waits for the readiness line in `ready` and returns it.
fn readiness_line(container: &Container, ready: &Path) -> Value {
    container.wait_for("the readiness line", || {
        std::fs::read_to_string(ready).is_ok_and(|s| s.contains('\n'))
    });
    serde_json::from_str(std::fs::read_to_string(ready).unwrap().trim()).unwrap()
}

#[test]
fn post_restore_enters_the_restored_tree_bumps_once_and_waits_for_its_watcher() {
    let container = Container::start(Users::Own);
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
    let record = container.path("state/overseer.json");
    assert_eq!(std::fs::metadata(&record).unwrap().uid(), CONTAINER_ROOT);

    let ready = container.path("ready.json");
    std::fs::write(&ready, "").unwrap();
    // An un-quiesce hook of post-restore, run with the container's sh: what it sees of itself,
    // and a file it makes in the container's state directory.
    let seen = container.path("seen");
    let hook = format!(
        r#"{{
            echo "parent $PPID"
            echo "pid_ns $(readlink /proc/self/ns/pid)"
            echo "user_ns $(readlink /proc/self/ns/user)"
            echo "uid $(id -u)"
            echo "groups $(id -G)"
            echo "uid_map $(head -n 1 /proc/self/uid_map)"
            echo "cgroup $(sed -n 's/^0:://p' /proc/self/cgroup)"
        }} > '{}' && touch '{}'"#,
        seen.display(),
        container.path("state/made-by-hook").display()
    );
    let log = container.path("criu-action.log");
    // CRIU with a supplementary group (host gid 4, unmapped in the container), which
    // post-restore must drop.
    let out = criu_action_via(
        &["setpriv", "--groups", "4", "--"],
        Some("post-restore"),
        Some(init),
        &env,
    )
    .args(["--trigger", "--grace", "0s", "--timeout", "10s"])
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
    // namespace, accepted the record that the container's root wrote, bumped once and saw the
    // container's watcher acknowledge.
    let line = readiness_line(&container, &ready);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(line["event"], "readjusted", "{line}\n{logged}");
    assert_eq!(line["expected"], 0, "{line}");
    assert_eq!(line["generation"], 1, "{line}");
    assert_eq!(line["triggered"], true, "{line}");
    assert_eq!(line["unquiesced"], true, "{line}");
    assert_eq!(line.get("hooks_skipped"), None, "{line}");
    assert!(!record.exists(), "the record outlived its cycle");
    let status = container.status();
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["outdated"], 0, "{status}");
    assert_eq!(status["last_bump"]["source"], "trigger", "{status}");
    let watched = std::fs::read_to_string(container.path("watch.log")).unwrap();
    assert!(watched.contains("\"generation\":1"), "{watched}");
    assert!(logged.contains("\"readjusted\""), "{logged}");
    // No warning: setgroups, the cgroup join and setsid all worked.
    assert!(!logged.contains("warning"), "{logged}");

    // post-restore ran in the container's pid namespace: the daemon there saw the bump come
    // from the process that ran the hook, which lives in the namespace of the container's init.
    let seen = std::fs::read_to_string(&seen).unwrap();
    let fields: HashMap<&str, &str> = seen.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(
        status["last_bump"]["pid"].to_string(),
        fields["parent"],
        "{status} {seen}"
    );
    let init = init.to_string();
    assert_eq!(fields["pid_ns"], ns_link(&init, "pid"), "{seen}");
    assert_ne!(fields["pid_ns"], ns_link("self", "pid"), "{seen}");
    // The hook ran as root of the container's user namespace, with no host group left, not as
    // host root (uid 65536 in this container).
    assert_eq!(fields["user_ns"], ns_link(&init, "user"), "{seen}");
    assert_eq!(fields["uid"], "0", "{seen}");
    assert_eq!(fields["groups"], "0", "{seen}");
    let uid_map: Vec<&str> = fields["uid_map"].split_whitespace().collect();
    assert_eq!(uid_map, ["0", "100000", "65536"], "{seen}");
    let made = std::fs::metadata(container.path("state/made-by-hook")).unwrap();
    assert_eq!((made.uid(), made.gid()), (CONTAINER_ROOT, CONTAINER_ROOT));
    // In the container's cgroup, which is not ours.
    assert_eq!(fields["cgroup"], cgroup_of(&init), "{seen}");
    assert_ne!(fields["cgroup"], cgroup_of("self"), "{seen}");
}

#[test]
fn without_a_user_namespace_the_containers_hooks_are_not_run() {
    let container = Container::start(Users::Host);
    let env = container.env();
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    assert_eq!(
        ns_link(&container.init.to_string(), "user"),
        ns_link("self", "user")
    );

    // Hooks of both kinds, each leaving a mark if it runs.
    let hooks = container.path("unquiesce.d");
    std::fs::create_dir(&hooks).unwrap();
    let marked_by_dir = container.path("dir-hook-ran");
    let file = hooks.join("10-mark");
    std::fs::write(
        &file,
        format!("#!/bin/sh\ntouch '{}'\n", marked_by_dir.display()),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    let marked_by_exec = container.path("exec-ran");
    let ready = container.path("ready.json");
    std::fs::write(&ready, "").unwrap();
    let log = container.path("criu-action.log");
    let out = criu_action(Some("post-restore"), Some(container.init), &env)
        .args(["--trigger", "--grace", "0s", "--timeout", "10s"])
        .arg("--unquiesce-dir")
        .arg(&hooks)
        .arg("--exec")
        .arg(format!("touch '{}'", marked_by_exec.display()))
        .arg("--notify-host")
        .arg(&ready)
        .arg("--log")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // The bump and the wait as ever: bumped once from the record's generation.
    let line = readiness_line(&container, &ready);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(line["event"], "readjusted", "{line}\n{logged}");
    assert_eq!(line["expected"], 0, "{line}");
    assert_eq!(line["generation"], 1, "{line}");
    assert_eq!(line["triggered"], true, "{line}");
    let status = container.status();
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["outdated"], 0, "{status}");
    assert_eq!(status["last_bump"]["source"], "trigger", "{status}");

    // But no hook: they would have run as host root.
    assert_eq!(line["hooks_skipped"], true, "{line}");
    assert_eq!(line["unquiesced"], false, "{line}");
    assert!(
        logged.contains(
            "no user namespace: hooks from the container's file system are not run as host root"
        ),
        "{logged}"
    );
    assert!(!marked_by_dir.exists(), "the directory's hook ran");
    assert!(!marked_by_exec.exists(), "the --exec command ran");
}

#[test]
fn a_user_namespace_without_root_is_refused_with_status_4() {
    // A "restored tree" in a user namespace that maps uid and gid 5 only.
    let tree = user_namespace(&[format!("5 {CONTAINER_ROOT} 1")]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("criu-action.log");
    let marked = dir.path().join("hook-ran");
    // The detached copy becomes our child when CRIU's call exits, so its status is ours to
    // read.
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let out = criu_action(Some("post-restore"), Some(tree.0.id()), &[])
        .args(["--trigger", "--expect", "0", "--log"])
        .arg(&log)
        .arg("--exec")
        .arg(format!("touch '{}'", marked.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let message = stderr(&out);
    let detached: i32 = message
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{message}"));
    let (_, status) = rustix::process::waitpid(
        rustix::process::Pid::from_raw(detached),
        rustix::process::WaitOptions::empty(),
    )
    .unwrap()
    .expect("the detached copy's status");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.exit_status(), Some(4), "{logged}");
    assert!(
        logged.contains("0 is not mapped in the user namespace"),
        "{logged}"
    );
    assert!(!marked.exists(), "the hook ran");
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
    // From /proc, not getsid(2): under a CI runner our session leader may sit in another pid
    // namespace, where the kernel reports session 0.
    let ours = std::fs::read_to_string("/proc/self/stat").unwrap();
    let ours = ours.rsplit(") ").next().unwrap().split(' ').nth(3).unwrap();
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
