//! `sysgenid overseer criu-action`: CRIU's action script, which runs `post-restore` inside the
//! restored tree once CRIU has let it go.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use rustix::thread::{ThreadNameSpaceType, move_into_thread_name_spaces};
use sysgenid::Paths;

use crate::cli::{Cli, CriuActionArgs, exit};
use crate::commands::{Failure, failure};

/// Set in the detached copy, so it runs post-restore instead of starting another copy.
const DETACHED: &str = "SYSGENID_CRIU_DETACHED";

/// The namespaces the copy joins when they differ from its own.
const NAMESPACES: [(&str, ThreadNameSpaceType); 7] = [
    ("user", ThreadNameSpaceType::USER),
    ("mnt", ThreadNameSpaceType::MOUNT),
    ("pid", ThreadNameSpaceType::PROCESS_ID),
    ("net", ThreadNameSpaceType::NETWORK),
    ("ipc", ThreadNameSpaceType::INTER_PROCESS_COMMUNICATION),
    ("uts", ThreadNameSpaceType::HOST_NAME_AND_NIS_DOMAIN_NAME),
    ("cgroup", ThreadNameSpaceType::CONTROL_GROUP),
];

/// `overseer criu-action`.
pub fn action(cli: &Cli, paths: &Paths, args: &CriuActionArgs) -> Result<(), Failure> {
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
    if std::env::var_os(DETACHED).is_some() {
        enter_namespaces(pid)?;
        return crate::overseer::post_restore(cli, paths, &args.post_restore);
    }
    detach(args, pid)
}

/// CRTOOLS_INIT_PID: the restored tree's root task, in our pid namespace.
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
    let exe = std::env::current_exe()
        .map_err(|e| failure(exit::ERROR, format!("cannot find this program: {e}")))?;
    let child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(DETACHED, "1")
        .stdin(Stdio::null())
        .stdout(output(args.log.as_deref())?)
        .stderr(output(args.log.as_deref())?)
        .process_group(0)
        .spawn()
        .map_err(|e| failure(exit::ERROR, format!("cannot start post-restore: {e}")))?;
    eprintln!(
        "sysgenid: post-restore runs detached (pid {}) in the namespaces of pid {pid}",
        child.id()
    );
    Ok(())
}

fn open_pidfd(pid: i32) -> Result<OwnedFd, Failure> {
    let target = Pid::from_raw(pid)
        .ok_or_else(|| failure(exit::ERROR, format!("CRTOOLS_INIT_PID {pid} is not a pid")))?;
    pidfd_open(target, PidfdFlags::empty())
        .map_err(|e| failure(exit::ERROR, format!("the restored task {pid} is gone: {e}")))
}

/// Joins every namespace of `pid` that differs from ours.
fn enter_namespaces(pid: i32) -> Result<(), Failure> {
    let pidfd = open_pidfd(pid)?;
    let inode = |owner: &str, ns: &str| {
        std::fs::metadata(format!("/proc/{owner}/ns/{ns}")).map(|m| (m.dev(), m.ino()))
    };
    let mut join = ThreadNameSpaceType::empty();
    for (name, kind) in NAMESPACES {
        let theirs = inode(&pid.to_string(), name);
        match (inode("self", name), theirs) {
            (Ok(ours), Ok(theirs)) if ours != theirs => join |= kind,
            (Ok(_), Ok(_)) => {}
            (Ok(_), Err(e)) => {
                return Err(failure(
                    exit::ERROR,
                    format!("cannot read the {name} namespace of pid {pid}: {e}"),
                ));
            }
            // A namespace kind this kernel lacks.
            (Err(_), _) => {}
        }
    }
    let _ = rustix::process::setsid();
    move_into_thread_name_spaces(pidfd.as_fd(), join).map_err(|e| {
        failure(
            exit::NOT_PERMITTED,
            format!("cannot enter the namespaces of pid {pid}: {e}"),
        )
    })
}
