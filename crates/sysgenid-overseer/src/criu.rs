//! CRIU's action script, which runs post-restore inside the restored tree once CRIU has let it
//! go.
//!
//! Three processes take part. CRIU's call checks the tree and starts a detached copy, then
//! returns. The copy drops the files CRIU passed down, starts its own session, joins the pid
//! namespace of the tree (which only its children enter) and starts a second copy. That child,
//! inside the tree's pid namespace, joins the tree's cgroup and other namespaces and runs
//! post-restore; the copy waits for it and exits with its status.
//!
//! The child runs the container's un-quiesce hooks, so it must not run them with CRIU's
//! privileges: in a container's user namespace it becomes that namespace's root (as
//! `nsenter -U` does) and keeps no capability outside it; a container without a user namespace
//! of its own gets no hooks run at all, since they would run as host root.
//!
//! The copies are this program again, with the same arguments: [`action`] is for a program
//! that CRIU runs as its `--action-script`, such as `sysgenid overseer criu-action`.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use rustix::fs::{Dir, Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{DumpableBehavior, Pid, PidfdFlags, pidfd_open, set_dumpable_behavior};
use rustix::thread::{
    Gid, ThreadNameSpaceType, Uid, move_into_thread_name_spaces, set_thread_groups,
    set_thread_res_gid, set_thread_res_uid,
};

use crate::{Error, Event, HookPolicy, Warning};

/// Which copy this is: unset in CRIU's call, `detached` or `inside` in the copies (and
/// removed for hooks).
pub const STAGE: &str = "SYSGENID_CRIU_STAGE";
/// The detached copy, still in CRIU's pid namespace.
const DETACHED: &str = "detached";
/// Its child, in the restored tree's pid namespace.
const INSIDE: &str = "inside";

/// The namespaces the child joins when they differ from its own (the pid namespace is its
/// parent's doing). One call joins them all, the user namespace first.
const NAMESPACES: [(&str, ThreadNameSpaceType); 6] = [
    ("user", ThreadNameSpaceType::USER),
    ("mnt", ThreadNameSpaceType::MOUNT),
    ("net", ThreadNameSpaceType::NETWORK),
    ("ipc", ThreadNameSpaceType::INTER_PROCESS_COMMUNICATION),
    ("uts", ThreadNameSpaceType::HOST_NAME_AND_NIS_DOMAIN_NAME),
    ("cgroup", ThreadNameSpaceType::CONTROL_GROUP),
];

/// How the action script failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CriuError {
    /// Not run by CRIU.
    #[error(
        "CRTOOLS_SCRIPT_ACTION is not set: `overseer criu-action` is CRIU's action script \
         (criu restore --action-script 'sysgenid overseer criu-action ...'); run \
         `overseer post-restore` yourself otherwise"
    )]
    NotActionScript,
    /// [`STAGE`] holds something else than a stage.
    #[error("{STAGE}={stage:?}: not a stage of criu-action")]
    UnknownStage {
        /// What it holds.
        stage: String,
    },
    /// CRIU did not say which tree it restored.
    #[error(
        "CRTOOLS_INIT_PID is not set: CRIU sets it for post-restore; without it the restored \
         tree is unknown"
    )]
    NoInitPid,
    /// CRTOOLS_INIT_PID is not a pid.
    #[error("CRTOOLS_INIT_PID {raw:?} is not a pid")]
    BadInitPid {
        /// What it holds.
        raw: String,
    },
    /// The restored tree's root task is gone.
    #[error("the restored task {pid} is gone: {source}")]
    TaskGone {
        /// Its pid.
        pid: i32,
        /// What pidfd_open said.
        source: Errno,
    },
    /// The pid of the restored task in its own namespace names another task.
    #[error("the restored task {pid} is gone (pid {local} is another task)")]
    TaskReplaced {
        /// Its pid in CRIU's namespace.
        pid: i32,
        /// The pid in its namespace.
        local: i32,
    },
    /// A file about the restored task cannot be read.
    #[error("the restored task {pid}: {path}: {source}")]
    TaskInfo {
        /// Its pid.
        pid: i32,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// /proc/PID/status has no NSpid line.
    #[error("no NSpid in /proc/{pid}/status")]
    NoNsPid {
        /// The pid.
        pid: i32,
    },
    /// A namespace of the restored task cannot be read.
    #[error("cannot read the {ns} namespace of pid {pid}: {source}")]
    Namespace {
        /// The kind of namespace.
        ns: &'static str,
        /// The pid.
        pid: i32,
        /// Why.
        source: std::io::Error,
    },
    /// The child was not started in the restored tree's pid namespace.
    #[error("not in the pid namespace of pid {pid}: start `criu-action` as CRIU does")]
    NotInPidNamespace {
        /// The tree's root task.
        pid: i32,
    },
    /// Joining the restored tree's namespaces was refused.
    #[error("cannot enter {what} of pid {pid}: {source}")]
    Enter {
        /// `the pid namespace` or `the namespaces`.
        what: &'static str,
        /// The tree's root task.
        pid: i32,
        /// What setns said.
        source: Errno,
    },
    /// The container's root is not mapped in its user namespace, or cannot be taken.
    #[error(
        "{}; refusing to run post-restore and its hooks as an unmapped {id}",
        if *source == Errno::INVAL {
            format!("{id} 0 is not mapped in the user namespace of pid {pid}")
        } else {
            format!("cannot take {id} 0 in the user namespace of pid {pid}: {source}")
        }
    )]
    Root {
        /// `uid` or `gid`.
        id: &'static str,
        /// The tree's root task.
        pid: i32,
        /// What the call said.
        source: Errno,
    },
    /// Another system call failed.
    #[error("{call}: {source}")]
    Call {
        /// The call.
        call: &'static str,
        /// What it said.
        source: Errno,
    },
    /// The log file cannot be opened.
    #[error("{}: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// This program cannot be found to start a copy.
    #[error("cannot find this program: {0}")]
    CurrentExe(std::io::Error),
    /// The copy cannot be started.
    #[error("cannot start post-restore: {0}")]
    Start(std::io::Error),
    /// The child running post-restore was killed.
    #[error("post-restore ended: {0}")]
    Killed(ExitStatus),
}

impl CriuError {
    /// Whether the kernel refused to let post-restore act inside the restored tree.
    pub fn not_permitted(&self) -> bool {
        matches!(self, CriuError::Enter { .. } | CriuError::Root { .. })
    }

    /// Whether the action script was called wrongly (not by CRIU).
    pub fn usage(&self) -> bool {
        matches!(
            self,
            CriuError::NotActionScript | CriuError::UnknownStage { .. }
        )
    }
}

/// What this call of the action script did, and what its caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriuStep {
    /// CRIU's action is not `post-restore`: nothing to do.
    NotPostRestore,
    /// CRIU's call: the detached copy runs post-restore. Return at once, so that CRIU resumes
    /// the restored tasks.
    Detached {
        /// The copy's pid.
        copy: u32,
        /// The restored tree's root task.
        tree: i32,
    },
    /// The detached copy: its child ran post-restore (which reported) and exited with this
    /// code; exit with it.
    ChildExited(i32),
    /// The child, inside the restored tree's namespaces: run post-restore now, with these hooks.
    PostRestore(HookPolicy),
}

/// Runs this stage of CRIU's action script, from the environment CRIU and the earlier stages
/// set. Warnings come as [`Event::Warning`].
///
/// `log` is where the detached copy writes its output (discarded without it). The copies run
/// this program again with the same arguments and call this again.
pub fn action(log: Option<&Path>, mut observer: impl FnMut(&Event)) -> Result<CriuStep, Error> {
    let observer: &mut dyn FnMut(&Event) = &mut observer;
    let stage = std::env::var(STAGE).ok();
    if stage.as_deref() == Some(DETACHED) {
        // First, before anything opens a file.
        close_inherited_fds(observer);
    }
    let Ok(action) = std::env::var("CRTOOLS_SCRIPT_ACTION") else {
        return Err(CriuError::NotActionScript.into());
    };
    if action != "post-restore" {
        return Ok(CriuStep::NotPostRestore);
    }
    let pid = init_pid()?;
    let step = match stage.as_deref() {
        None => detach(log, pid)?,
        Some(DETACHED) => run_in_pid_namespace(pid, observer)?,
        Some(INSIDE) => CriuStep::PostRestore(enter_namespaces(pid, observer)?),
        Some(other) => {
            return Err(CriuError::UnknownStage {
                stage: other.to_owned(),
            }
            .into());
        }
    };
    Ok(step)
}

fn warn(observer: &mut dyn FnMut(&Event), message: String) {
    observer(&Event::Warning(Warning { message }));
}

/// CRTOOLS_INIT_PID: the restored tree's root task, in CRIU's pid namespace.
fn init_pid() -> Result<i32, CriuError> {
    let raw = std::env::var("CRTOOLS_INIT_PID").map_err(|_| CriuError::NoInitPid)?;
    raw.trim()
        .parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or(CriuError::BadInitPid { raw })
}

/// Starts the detached copy and returns, so CRIU can resume the restored tasks.
fn detach(log: Option<&Path>, pid: i32) -> Result<CriuStep, CriuError> {
    // Fail here, where CRIU sees the status, if the tree is already gone.
    open_pidfd(pid)?;
    let output = || -> Result<Stdio, CriuError> {
        match log {
            None => Ok(Stdio::null()),
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Stdio::from)
                .map_err(|source| CriuError::Log {
                    path: path.to_owned(),
                    source,
                }),
        }
    };
    // Not a process group leader, so that the copy can start its own session.
    let child = self_command(DETACHED)?
        .stdin(Stdio::null())
        .stdout(output()?)
        .stderr(output()?)
        .spawn()
        .map_err(CriuError::Start)?;
    Ok(CriuStep::Detached {
        copy: child.id(),
        tree: pid,
    })
}

/// This program again, with the same arguments, as `stage`.
fn self_command(stage: &str) -> Result<Command, CriuError> {
    let exe = std::env::current_exe().map_err(CriuError::CurrentExe)?;
    let mut command = Command::new(exe);
    command.args(std::env::args_os().skip(1)).env(STAGE, stage);
    Ok(command)
}

/// Closes every file descriptor above stderr: CRIU's status fd and pipes must not stay open
/// until post-restore ends, nor reach the hooks.
fn close_inherited_fds(observer: &mut dyn FnMut(&Event)) {
    let fds = match inherited_fds() {
        Ok(fds) => fds,
        Err(e) => {
            let message = format!("warning: cannot list the inherited file descriptors: {e}");
            warn(observer, message);
            return;
        }
    };
    for fd in fds {
        // SAFETY: this runs first in the detached copy, before it opens anything but the listing
        // (closed by now and not in `fds`), and with no other thread: no Rust object owns a
        // descriptor above 2, so closing them cannot leave one dangling or close one opened
        // meanwhile.
        unsafe { rustix::io::close(fd) };
    }
}

/// The open file descriptors above 2, but for the one that lists them.
fn inherited_fds() -> rustix::io::Result<Vec<RawFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = Dir::new(rustix::fs::open("/proc/self/fd", flags, Mode::empty())?)?;
    let own = dir.fd()?.as_raw_fd();
    let mut fds = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        if let Some(fd) = entry.file_name().to_str().ok().and_then(|n| n.parse().ok())
            && fd > 2
            && fd != own
        {
            fds.push(fd);
        }
    }
    Ok(fds)
}

/// The detached copy: its own session, the tree's pid namespace for its child, which runs
/// post-restore; returns the child's exit code.
fn run_in_pid_namespace(pid: i32, observer: &mut dyn FnMut(&Event)) -> Result<CriuStep, CriuError> {
    if let Err(e) = rustix::process::setsid() {
        let message = format!("warning: setsid: {e}; post-restore stays in CRIU's session");
        warn(observer, message);
    }
    let pidfd = open_pidfd(pid)?;
    if differs(pid, "pid")? {
        // Only children enter it: hence the child.
        move_into_thread_name_spaces(pidfd.as_fd(), ThreadNameSpaceType::PROCESS_ID).map_err(
            |source| CriuError::Enter {
                what: "the pid namespace",
                pid,
                source,
            },
        )?;
    }
    // The mount namespace is still ours, so this program's path still leads to it.
    let status = self_command(INSIDE)?
        .stdin(Stdio::null())
        .status()
        .map_err(CriuError::Start)?;
    status
        .code()
        .map(CriuStep::ChildExited)
        .ok_or(CriuError::Killed(status))
}

fn open_pidfd(pid: i32) -> Result<OwnedFd, CriuError> {
    let target = Pid::from_raw(pid).ok_or(CriuError::BadInitPid {
        raw: pid.to_string(),
    })?;
    pidfd_open(target, PidfdFlags::empty()).map_err(|source| CriuError::TaskGone { pid, source })
}

/// Whether namespace `ns` of `pid` differs from ours; `false` if this kernel lacks that kind.
fn differs(pid: i32, ns: &'static str) -> Result<bool, CriuError> {
    let inode = |owner: &str| {
        std::fs::metadata(format!("/proc/{owner}/ns/{ns}")).map(|m| (m.dev(), m.ino()))
    };
    match (inode("self"), inode(&pid.to_string())) {
        (Ok(ours), Ok(theirs)) => Ok(ours != theirs),
        (Ok(_), Err(source)) => Err(CriuError::Namespace { ns, pid, source }),
        (Err(_), _) => Ok(false),
    }
}

/// The namespaces of `pid` that differ from ours.
fn namespaces_to_join(pid: i32) -> Result<ThreadNameSpaceType, CriuError> {
    let mut join = ThreadNameSpaceType::empty();
    for (name, kind) in NAMESPACES {
        if differs(pid, name)? {
            join |= kind;
        }
    }
    Ok(join)
}

/// The child: joins the cgroup of `pid` and every other namespace of it that differs from ours;
/// in its user namespace, becomes root there. Whether the hooks may run: not when the tree has
/// our user namespace but its own file system, whose hooks would run as our (host) root.
fn enter_namespaces(pid: i32, observer: &mut dyn FnMut(&Event)) -> Result<HookPolicy, CriuError> {
    if differs(pid, "pid")? {
        return Err(CriuError::NotInPidNamespace { pid });
    }
    let pidfd = pidfd_in_our_namespace(pid)?;
    let join = namespaces_to_join(pid)?;
    let user = join.contains(ThreadNameSpaceType::USER);
    let policy = if !user && join.contains(ThreadNameSpaceType::MOUNT) {
        let message = "no user namespace: hooks from the container's file system are not run as \
                       host root";
        warn(observer, message.to_owned());
        HookPolicy::Skip
    } else {
        HookPolicy::Run
    };
    // Read and written through our /proc and cgroup mount: before the mount namespace changes.
    if let Err(e) = join_cgroup(pid) {
        let message = format!("warning: post-restore stays out of the cgroup of pid {pid}: {e}");
        warn(observer, message);
    }
    if join.is_empty() {
        return Ok(policy);
    }
    // Per-thread calls (the kernel's) set the ids of the whole process below: it has one
    // thread, as joining a user namespace requires.
    let mut groups_dropped = false;
    if user {
        // Host groups mean nothing in the container. Dropped first here, where setgroups is
        // allowed to root (the container's /proc/PID/setgroups may say "deny").
        groups_dropped = drop_groups()?;
        // Until it is the container's root, the container's root must not ptrace it: joining
        // the user namespace gives the container's root power over it, and it still has our
        // uid.
        set_dumpable(DumpableBehavior::NotDumpable)?;
    }
    // A fresh process that has started no thread yet: joining a user or mount namespace needs
    // a single-threaded caller.
    move_into_thread_name_spaces(pidfd.as_fd(), join).map_err(|source| CriuError::Enter {
        what: "the namespaces",
        pid,
        source,
    })?;
    if user {
        if !groups_dropped && !drop_groups()? {
            let message = "warning: setgroups is denied: post-restore and its hooks keep CRIU's \
                           supplementary groups";
            warn(observer, message.to_owned());
        }
        become_root_of_user_namespace(pid)?;
    }
    Ok(policy)
}

fn set_dumpable(behavior: DumpableBehavior) -> Result<(), CriuError> {
    set_dumpable_behavior(behavior).map_err(|source| CriuError::Call {
        call: "prctl(PR_SET_DUMPABLE)",
        source,
    })
}

/// Drops every supplementary group; `false` if setgroups is denied here.
fn drop_groups() -> Result<bool, CriuError> {
    match set_thread_groups(&[]) {
        Ok(()) => Ok(true),
        Err(Errno::PERM) => Ok(false),
        Err(source) => Err(CriuError::Call {
            call: "setgroups",
            source,
        }),
    }
}

/// After joining the user namespace of `pid`: uid and gid 0 there, as `nsenter -U` sets them,
/// so that post-restore and its hooks act as the container's root rather than as our uid (which
/// the namespace may not map). Fails if 0 is not mapped there.
fn become_root_of_user_namespace(pid: i32) -> Result<(), CriuError> {
    let refuse = |id: &'static str| move |source: Errno| CriuError::Root { id, pid, source };
    // Per-thread calls, but the process has one thread (see enter_namespaces).
    set_thread_res_gid(Gid::ROOT, Gid::ROOT, Gid::ROOT).map_err(refuse("gid"))?;
    set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).map_err(refuse("uid"))?;
    // Dumpable again, as an exec would leave it: the container's daemon must read our
    // /proc/PID/ns/user to accept our bump, and we now hold nothing its root lacks.
    set_dumpable(DumpableBehavior::Dumpable)
}

/// Moves this process into the cgroup v2 cgroup of `pid`, unless it is ours already.
fn join_cgroup(pid: i32) -> Result<(), String> {
    let theirs = unified_cgroup(&format!("/proc/{pid}/cgroup"))?;
    if theirs == unified_cgroup("/proc/self/cgroup")? {
        return Ok(());
    }
    let procs = cgroup_dir(&theirs)?.join("cgroup.procs");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).open(&procs)?;
        // Our pid in our pid namespace (the tree's), which is where the kernel reads it.
        write!(file, "{}", std::process::id())
    };
    write().map_err(|e| format!("{}: {e}", procs.display()))
}

/// The cgroup v2 path (`0::PATH`) in a /proc/PID/cgroup file.
fn unified_cgroup(file: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .ok_or_else(|| format!("{file} names no cgroup v2 cgroup (cgroup v1 only?)"))
}

/// The directory of cgroup `path` (as our /proc shows it) under our cgroup v2 mount.
fn cgroup_dir(path: &str) -> Result<PathBuf, String> {
    let inside = Path::new(path);
    if inside
        .components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(format!("cgroup {path} is outside our cgroup namespace"));
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    for line in info.lines() {
        let Some((mount, fs)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = mount.split(' ').collect();
        if fs.split(' ').next() != Some("cgroup2") || fields.len() < 5 {
            continue;
        }
        // Field 4 is the cgroup the mount shows as its root, field 5 where it is mounted.
        if let Ok(rest) = inside.strip_prefix(unescape(fields[3])) {
            return Ok(Path::new(&unescape(fields[4])).join(rest));
        }
    }
    Err(format!("no cgroup v2 mount shows cgroup {path}"))
}

/// A mountinfo field with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pidfd of `pid` (a pid of CRIU's namespace, where /proc still belongs) opened from inside
/// its own pid namespace, where pidfd_open counts.
fn pidfd_in_our_namespace(pid: i32) -> Result<OwnedFd, CriuError> {
    let read = |path: String| {
        std::fs::read_to_string(&path).map_err(|source| CriuError::TaskInfo { pid, path, source })
    };
    let field = |text: &str, name: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    // NSpid lists its pid from /proc's namespace down to its own, which is now ours.
    let status = read(format!("/proc/{pid}/status"))?;
    let local = field(&status, "NSpid:")
        .and_then(|v| v.split_whitespace().last()?.parse::<i32>().ok())
        .ok_or(CriuError::NoNsPid { pid })?;
    let pidfd = open_pidfd(local)?;
    // The same task: its pidfd names it by `pid` in /proc's namespace.
    let info = read(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    if field(&info, "Pid:").as_deref() != Some(pid.to_string().as_str()) {
        return Err(CriuError::TaskReplaced { pid, local });
    }
    Ok(pidfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/sys/fs/a\040b\134c"), r"/sys/fs/a b\c");
        assert_eq!(unescape(r"/plain\0"), r"/plain\0");
    }

    #[test]
    fn a_cgroup_outside_our_namespace_has_no_directory() {
        let e = cgroup_dir("/../other").unwrap_err();
        assert!(e.contains("outside our cgroup namespace"), "{e}");
    }

    #[test]
    fn an_unmapped_root_is_refused_with_its_reason() {
        let unmapped = CriuError::Root {
            id: "uid",
            pid: 7,
            source: Errno::INVAL,
        };
        assert_eq!(
            unmapped.to_string(),
            "uid 0 is not mapped in the user namespace of pid 7; refusing to run post-restore \
             and its hooks as an unmapped uid"
        );
        assert!(unmapped.not_permitted() && !unmapped.usage());
    }
}
