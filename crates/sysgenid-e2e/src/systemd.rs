//! A real systemd as PID 1 of new namespaces, to run the daemon's unit under it.
//!
//! [`Systemd::boot`] starts `/lib/systemd/systemd --system` as PID 1 of new pid, mount, UTS, IPC
//! and cgroup namespaces, in a cgroup of its own below this process's (never the root cgroup:
//! a manager there would move every process of the machine). It gets a fresh `/run` holding
//! the given units and boots a target that pulls in nothing (`DefaultDependencies=no`), so no
//! sysinit step ever touches the shared kernel or disk. Commands reach it through `nsenter`.
//! Dropping it asks it to exit (or kills it), then removes every cgroup it made.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The target the manager boots; it pulls in nothing.
pub const TARGET: &str = "sysgenid-test.target";
/// How long the manager gets to reach `running`.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one command run inside gets before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

const TARGET_UNIT: &str = "[Unit]\nDescription=sysgenid test target\nDefaultDependencies=no\n";

/// Runs in the new namespaces as the future PID 1: `$1` is the directory of units.
const INNER: &str = r#"set -e
mount -t proc proc /proc
umount -R /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/system
cp "$1"/* /run/systemd/system/
export container=sysgenid-test
exec /lib/systemd/systemd --system --unit=sysgenid-test.target
"#;

/// Moves itself into cgroup `$1`, then makes the namespaces and runs `$2` with argument `$3`.
/// Private propagation: nothing mounted inside (the /proc, /run and cgroup2 mounts above)
/// ever reaches the host, whatever the host's propagation is.
const OUTER: &str = r#"echo $$ > "$1/cgroup.procs" || exit 1
exec unshare --pid --fork --kill-child --mount --uts --ipc --cgroup --propagation private \
    sh -c "$2" inner "$3"
"#;

/// A systemd manager running as PID 1 of its own namespaces.
#[derive(Debug)]
pub struct Systemd {
    unshare: Option<Child>,
    pid1: u32,
    cgroup: Cgroup,
    dir: tempfile::TempDir,
}

impl Systemd {
    /// Boots a manager with `units` (file name, text) installed in `/run/systemd/system`, and
    /// waits until it reports `running`. The error says why it could not, with the boot log.
    pub fn boot(units: &[(&str, &str)]) -> Result<Systemd, String> {
        let dir = tempfile::Builder::new()
            .prefix("sysgenid-systemd-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let unit_dir = dir.path().join("units");
        let write = |name: &str, text: &str| {
            fs::write(unit_dir.join(name), text).map_err(|e| format!("writing unit {name}: {e}"))
        };
        fs::create_dir(&unit_dir).map_err(|e| format!("{}: {e}", unit_dir.display()))?;
        write(TARGET, TARGET_UNIT)?;
        for (name, text) in units {
            write(name, text)?;
        }
        let cgroup = Cgroup::create()?;
        let log =
            fs::File::create(dir.path().join("boot.log")).map_err(|e| format!("boot log: {e}"))?;
        let log_copy = log.try_clone().map_err(|e| format!("boot log: {e}"))?;
        let unshare = Command::new("sh")
            .args(["-c", OUTER, "outer"])
            .arg(&cgroup.leaf)
            .arg(INNER)
            .arg(&unit_dir)
            .stdin(Stdio::null())
            .stdout(log_copy)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning sh for unshare (util-linux): {e}"))?;
        let mut systemd = Systemd {
            unshare: Some(unshare),
            pid1: 0,
            cgroup,
            dir,
        };
        match systemd.wait_running() {
            Ok(()) => Ok(systemd),
            Err(why) => Err(format!(
                "booting systemd as PID 1 of new namespaces failed: {why}\nboot log:\n{}",
                systemd.boot_log()
            )),
        }
    }

    fn wait_running(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut state = String::from("(not asked yet)");
        loop {
            let unshare = self.unshare.as_mut().expect("running");
            if let Ok(Some(status)) = unshare.try_wait() {
                return Err(format!("the namespace's first process ended ({status})"));
            }
            if self.pid1 == 0 {
                self.pid1 = systemd_child_of(unshare.id()).unwrap_or(0);
            } else {
                state = stdout_of(&self.systemctl(&["is-system-running"]));
                match state.as_str() {
                    "running" => return Ok(()),
                    "degraded" | "maintenance" | "stopping" => {
                        let failed = self.systemctl(&["--failed", "--no-legend", "--no-pager"]);
                        return Err(format!("the manager is {state}: {}", stdout_of(&failed)));
                    }
                    _ => {}
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not running after {BOOT_TIMEOUT:?} (systemd pid {}, last state {state:?})",
                    self.pid1
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the namespace's first process wrote before systemd took over its output.
    pub fn boot_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("boot.log")).unwrap_or_default()
    }

    /// The manager's process id, as this process sees it.
    pub fn pid1(&self) -> u32 {
        self.pid1
    }

    /// `program` run inside the manager's mount and pid namespaces (through `nsenter`), killed
    /// after [`COMMAND_TIMEOUT`]; add arguments to it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("timeout");
        command
            .arg("--kill-after=2")
            .arg(COMMAND_TIMEOUT.as_secs().to_string())
            .arg("nsenter")
            .arg(format!("--target={}", self.pid1))
            .args(["--mount", "--pid", "--"])
            .arg(program)
            .stdin(Stdio::null());
        command
    }

    /// `systemctl ARGS` against this manager.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.command("systemctl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running timeout, nsenter and systemctl: {e}"))
    }

    /// One property of a unit (`systemctl show -P`).
    pub fn property(&self, unit: &str, name: &str) -> String {
        stdout_of(&self.systemctl(&["show", "-P", name, unit]))
    }

    /// The processes of a service of `system.slice`, as this process numbers them.
    pub fn service_pids(&self, unit: &str) -> Vec<u32> {
        let procs = self
            .cgroup
            .leaf
            .join("system.slice")
            .join(unit)
            .join("cgroup.procs");
        fs::read_to_string(procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// `path` as the manager sees it, reachable from this process (through `/proc/PID/root`).
    pub fn path_inside(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid1)).join(relative)
    }

    /// The manager's mount table (`/proc/PID/mountinfo`).
    pub fn mountinfo(&self) -> String {
        fs::read_to_string(format!("/proc/{}/mountinfo", self.pid1))
            .unwrap_or_else(|e| panic!("mountinfo of systemd (pid {}): {e}", self.pid1))
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let Some(mut unshare) = self.unshare.take() else {
            return;
        };
        if self.pid1 != 0 {
            let _ = self.systemctl(&["--no-block", "exit"]);
        }
        if !exits_within(&mut unshare, Duration::from_secs(5)) {
            // unshare --kill-child: its death kills systemd, and with it the namespace.
            let _ = unshare.kill();
            let _ = unshare.wait();
        }
    }
}

fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn exits_within(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The child of `unshare` once it has become systemd.
fn systemd_child_of(unshare: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
    let child: u32 = children.split_whitespace().next()?.parse().ok()?;
    let comm = fs::read_to_string(format!("/proc/{child}/comm")).ok()?;
    (comm.trim() == "systemd").then_some(child)
}

/// A cgroup v2 directory made for one manager, below this process's own cgroup.
#[derive(Debug)]
struct Cgroup {
    leaf: PathBuf,
}

impl Cgroup {
    /// Makes `sgtest-sysgenid-PID-N` in this process's cgroup of the v2 hierarchy
    /// (`/sys/fs/cgroup/unified` on a hybrid host). Only that directory is made, so parallel
    /// tests never race over parents.
    fn create() -> Result<Cgroup, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "sgtest-sysgenid-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let leaf = own_cgroup2_dir()?.join(name);
        fs::create_dir(&leaf).map_err(|e| format!("making cgroup {}: {e}", leaf.display()))?;
        Ok(Cgroup { leaf })
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let events = self.leaf.join("cgroup.events");
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(&events).is_ok_and(|e| e.contains("populated 1"))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Err(e) = remove_cgroup_tree(&self.leaf) {
            eprintln!("leaving cgroup {}: {e}", self.leaf.display());
        }
    }
}

fn remove_cgroup_tree(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// This process's directory in the cgroup v2 hierarchy.
fn own_cgroup2_dir() -> Result<PathBuf, String> {
    let own =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("no cgroup v2 line (0::) in /proc/self/cgroup")?;
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|root| Path::new(root).join("cgroup.procs").exists() && is_cgroup2(root))
        .ok_or("no cgroup v2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup")?;
    Ok(Path::new(root).join(path.trim().trim_start_matches('/')))
}

fn is_cgroup2(dir: &str) -> bool {
    // cgroup v1 hierarchies have no cgroup.controllers.
    Path::new(dir).join("cgroup.controllers").exists()
}
