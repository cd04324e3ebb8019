//! `sysgenid overseer criu-action`: CRIU's action script, which runs `post-restore` inside the
//! restored tree once CRIU has let it go.
//!
//! Three processes take part. CRIU's call checks the tree and starts a detached copy, then
//! returns. The copy drops the files CRIU passed down, starts its own session, joins the pid
//! namespace of the tree (which only its children enter) and starts a second copy. That child,
//! inside the tree's pid namespace, joins the other namespaces and runs `post-restore`; the copy
//! waits for it and exits with its status.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::fs::{Dir, Mode, OFlags};
use rustix::process::{Pid, PidfdFlags, pidfd_open};
use rustix::thread::{ThreadNameSpaceType, move_into_thread_name_spaces};
use sysgenid::Paths;

use crate::cli::{Cli, CriuActionArgs, exit};
use crate::commands::{Failure, failure};

/// Which copy this is: unset in CRIU's call, [`DETACHED`] or [`INSIDE`] in the copies (and
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

/// `overseer criu-action`.
pub fn action(cli: &Cli, paths: &Paths, args: &CriuActionArgs) -> Result<(), Failure> {
    let stage = std::env::var(STAGE).ok();
    if stage.as_deref() == Some(DETACHED) {
        // First, before anything opens a file.
        close_inherited_fds();
    }
    let Ok(action) = std::env::var("CRTOOLS_SCRIPT_ACTION") else {
        return Err(failure(
            exit::USAGE,
            "CRTOOLS_SCRIPT_ACTION is not set: `overseer criu-action` is CRIU's action script \
             (criu restore --action-script 'sysgenid overseer criu-action ...'); run \
             `overseer post-restore` yourself otherwise",
        ));
    };
    if action != "post-restore" {
        return Ok(());
    }
    let pid = init_pid()?;
    match stage.as_deref() {
        None => detach(args, pid),
        Some(DETACHED) => run_in_pid_namespace(pid),
        Some(INSIDE) => {
            enter_namespaces(pid)?;
            crate::overseer::post_restore(cli, paths, &args.post_restore)
        }
        Some(other) => Err(failure(
            exit::USAGE,
            format!("{STAGE}={other:?}: not a stage of criu-action"),
        )),
    }
}

/// CRTOOLS_INIT_PID: the restored tree's root task, in CRIU's pid namespace.
fn init_pid() -> Result<i32, Failure> {
    let raw = std::env::var("CRTOOLS_INIT_PID").map_err(|_| {
        failure(
            exit::ERROR,
            "CRTOOLS_INIT_PID is not set: CRIU sets it for post-restore; without it the restored \
             tree is unknown",
        )
    })?;
    raw.trim()
        .parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            failure(
                exit::ERROR,
                format!("CRTOOLS_INIT_PID {raw:?} is not a pid"),
            )
        })
}

/// Starts the detached copy and returns, so CRIU can resume the restored tasks.
fn detach(args: &CriuActionArgs, pid: i32) -> Result<(), Failure> {
    // Fail here, where CRIU sees the status, if the tree is already gone.
    open_pidfd(pid)?;
    let output = |log: Option<&Path>| -> Result<Stdio, Failure> {
        match log {
            None => Ok(Stdio::null()),
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Stdio::from)
                .map_err(|e| failure(exit::ERROR, format!("{}: {e}", path.display()))),
        }
    };
    // Not a process group leader, so that the copy can start its own session.
    let child = self_command(DETACHED)?
        .stdin(Stdio::null())
        .stdout(output(args.log.as_deref())?)
        .stderr(output(args.log.as_deref())?)
        .spawn()
        .map_err(|e| failure(exit::ERROR, format!("cannot start post-restore: {e}")))?;
    eprintln!(
        "sysgenid: post-restore runs detached (pid {}) in the namespaces of pid {pid}",
        child.id()
    );
    Ok(())
}

/// This program again, with the same arguments, as `stage`.
fn self_command(stage: &str) -> Result<Command, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| failure(exit::ERROR, format!("cannot find this program: {e}")))?;
    let mut command = Command::new(exe);
    command.args(std::env::args_os().skip(1)).env(STAGE, stage);
    Ok(command)
}

/// Closes every file descriptor above stderr: CRIU's status fd and pipes must not stay open
/// until post-restore ends, nor reach the hooks.
fn close_inherited_fds() {
    let fds = match inherited_fds() {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("sysgenid: warning: cannot list the inherited file descriptors: {e}");
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
/// post-restore; exits with the child's status.
fn run_in_pid_namespace(pid: i32) -> Result<(), Failure> {
    if let Err(e) = rustix::process::setsid() {
        eprintln!("sysgenid: warning: setsid: {e}; post-restore stays in CRIU's session");
    }
    let pidfd = open_pidfd(pid)?;
    if differs(pid, "pid")? {
        // Only children enter it: hence the child.
        move_into_thread_name_spaces(pidfd.as_fd(), ThreadNameSpaceType::PROCESS_ID).map_err(
            |e| {
                failure(
                    exit::NOT_PERMITTED,
                    format!("cannot enter the pid namespace of pid {pid}: {e}"),
                )
            },
        )?;
    }
    // The mount namespace is still ours, so this program's path still leads to it.
    let status = self_command(INSIDE)?
        .stdin(Stdio::null())
        .status()
        .map_err(|e| failure(exit::ERROR, format!("cannot start post-restore: {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        // It has reported already.
        Some(code) => std::process::exit(code),
        None => Err(failure(
            exit::ERROR,
            format!("post-restore ended: {status}"),
        )),
    }
}

fn open_pidfd(pid: i32) -> Result<OwnedFd, Failure> {
    let target = Pid::from_raw(pid)
        .ok_or_else(|| failure(exit::ERROR, format!("CRTOOLS_INIT_PID {pid} is not a pid")))?;
    pidfd_open(target, PidfdFlags::empty())
        .map_err(|e| failure(exit::ERROR, format!("the restored task {pid} is gone: {e}")))
}

/// Whether namespace `ns` of `pid` differs from ours; `false` if this kernel lacks that kind.
fn differs(pid: i32, ns: &str) -> Result<bool, Failure> {
    let inode = |owner: &str| {
        std::fs::metadata(format!("/proc/{owner}/ns/{ns}")).map(|m| (m.dev(), m.ino()))
    };
    match (inode("self"), inode(&pid.to_string())) {
        (Ok(ours), Ok(theirs)) => Ok(ours != theirs),
        (Ok(_), Err(e)) => Err(failure(
            exit::ERROR,
            format!("cannot read the {ns} namespace of pid {pid}: {e}"),
        )),
        (Err(_), _) => Ok(false),
    }
}

/// The child: joins every other namespace of `pid` that differs from ours.
fn enter_namespaces(pid: i32) -> Result<(), Failure> {
    if differs(pid, "pid")? {
        return Err(failure(
            exit::ERROR,
            format!("not in the pid namespace of pid {pid}: start `criu-action` as CRIU does"),
        ));
    }
    let pidfd = pidfd_in_our_namespace(pid)?;
    let mut join = ThreadNameSpaceType::empty();
    for (name, kind) in NAMESPACES {
        if differs(pid, name)? {
            join |= kind;
        }
    }
    if join.is_empty() {
        return Ok(());
    }
    // A fresh process that has started no thread yet: joining a user or mount namespace needs
    // a single-threaded caller.
    move_into_thread_name_spaces(pidfd.as_fd(), join).map_err(|e| {
        failure(
            exit::NOT_PERMITTED,
            format!("cannot enter the namespaces of pid {pid}: {e}"),
        )
    })
}

/// A pidfd of `pid` (a pid of CRIU's namespace, where /proc still belongs) opened from inside
/// its own pid namespace, where pidfd_open counts.
fn pidfd_in_our_namespace(pid: i32) -> Result<OwnedFd, Failure> {
    let read = |path: String| {
        std::fs::read_to_string(&path)
            .map_err(|e| failure(exit::ERROR, format!("the restored task {pid}: {path}: {e}")))
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
        .ok_or_else(|| failure(exit::ERROR, format!("no NSpid in /proc/{pid}/status")))?;
    let pidfd = open_pidfd(local)?;
    // The same task: its pidfd names it by `pid` in /proc's namespace.
    let info = read(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    if field(&info, "Pid:").as_deref() != Some(pid.to_string().as_str()) {
        return Err(failure(
            exit::ERROR,
            format!("the restored task {pid} is gone (pid {local} is another task)"),
        ));
    }
    Ok(pidfd)
}
