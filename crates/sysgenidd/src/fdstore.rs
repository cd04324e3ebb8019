//! systemd's file descriptor store: the FUSE connection and the session memfd are handed to the
//! service manager (`FDSTORE=1`, names `fuse` and `session`), which passes them back to the
//! next start of the service (`LISTEN_FDS`, `LISTEN_FDNAMES`) after a crash or a
//! `systemctl restart`, so clients never see the restart. systemd 252 keeps them across both;
//! `systemctl stop` closes them, which is the one real stop: told to stop, the daemon asks
//! systemd whether a restart job is running ([`restart_pending`]) and unmounts unless it is.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;

/// The name the connection is stored under.
pub const FUSE_NAME: &str = "fuse";
/// The name the session is stored under.
pub const SESSION_NAME: &str = "session";

/// The connection and the session that the service manager passed to this start, if it
/// passed both. Any other descriptor it passed is closed.
pub fn take_stored() -> Option<(OwnedFd, OwnedFd)> {
    let fds = sd_notify::listen_fds_with_names(true).ok()?;
    let (mut fuse, mut session) = (None, None);
    for (raw, name) in fds {
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID matched, and
        // the environment is cleared so nothing takes it twice); this is its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
        match name.as_str() {
            FUSE_NAME => fuse = Some(fd),
            SESSION_NAME => session = Some(fd),
            other => tracing::warn!(name = other, "closing a descriptor systemd passed"),
        }
    }
    match (fuse, session) {
        (Some(fuse), Some(session)) => {
            tracing::info!("continuing the connection kept in systemd's fd store");
            Some((fuse, session))
        }
        (None, None) => None,
        _ => {
            // systemd drops a stored connection once the kernel ends it (FDPOLL).
            tracing::warn!(
                "systemd passed only one of the connection and the session; starting anew"
            );
            forget();
            None
        }
    }
}

/// Whether the service manager is restarting this service (a `restart` job on its unit), so a
/// stop signal is the first half of a restart and the connection must stay in the store.
pub fn restart_pending() -> bool {
    let Some(unit) = own_unit() else {
        return false;
    };
    let list_jobs = || {
        std::process::Command::new("systemctl")
            .args(["list-jobs", "--no-legend", "--plain", &unit])
            .stdin(std::process::Stdio::null())
            .output()
    };
    // Under `KillMode=control-group` the stop signal reaches the first `systemctl` too.
    let output = match list_jobs() {
        Ok(output) if output.status.signal().is_some() => list_jobs(),
        other => other,
    };
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            tracing::warn!(status = %output.status, %stderr, "systemctl list-jobs failed: stopping");
            return false;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot run systemctl list-jobs: stopping");
            return false;
        }
    };
    let jobs = String::from_utf8_lossy(&output.stdout);
    let restarting = jobs.lines().any(|line| {
        let mut fields = line.split_whitespace();
        fields.nth(1) == Some(unit.as_str())
            && fields.next().is_some_and(|kind| kind.contains("restart"))
    });
    tracing::debug!(unit, restarting, jobs = %jobs.trim(), "asked systemd for a restart job");
    restarting
}

/// The systemd unit this process runs in, from its cgroup (`.../sysgenidd.service`).
fn own_unit() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .and_then(|path| path.rsplit('/').find(|part| part.ends_with(".service")))
        .map(str::to_owned)
}

/// Asks the service manager to close what it keeps under both names, so that a start which
/// could not continue them stores its own in their place.
pub fn forget() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    use sd_notify::NotifyState;
    for name in [FUSE_NAME, SESSION_NAME] {
        let state = [NotifyState::FdStoreRemove, NotifyState::FdName(name)];
        if let Err(error) = sd_notify::notify(false, &state) {
            tracing::warn!(%error, name, "cannot remove a descriptor from systemd's fd store");
        }
    }
}

/// Stores the connection and the session with the service manager, if one listens
/// (`NOTIFY_SOCKET`); `Ok(false)` without one.
pub fn store(fuse: impl AsFd, session: impl AsFd) -> io::Result<bool> {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Ok(false);
    }
    use sd_notify::NotifyState;
    for (name, fd) in [(FUSE_NAME, fuse.as_fd()), (SESSION_NAME, session.as_fd())] {
        sd_notify::notify_with_fds(
            false,
            &[NotifyState::FdStore, NotifyState::FdName(name)],
            &[fd],
        )?;
    }
    Ok(true)
}
