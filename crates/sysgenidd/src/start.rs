//! The three ways a serving process starts: anew (recover the counter, mount), by taking the
//! device over from a running daemon (handover), or by continuing the connection and session
//! of one that died (from the keeper or systemd's fd store).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use sysgenid_abi::{GenerationId, PAGE_FILE_NAME};
use sysgenid_fuse::{Channel, Mount, MountMethod};

use crate::config::Config;
use crate::handover::{self, Snapshot};
use crate::session::Session;
use crate::state_dir::{StateDir, StateDirError};
use crate::{DaemonError, Holders, device_path, page, setup, state};
use sysgenid_abi::control::Restarts;

/// Where a start left off: the state, and the connection to serve.
#[derive(Debug)]
pub struct Start {
    /// The locked state directory.
    pub dir: Arc<StateDir>,
    /// The state file and the generation to serve.
    pub recovered: state::Recovered,
    /// The page file, if it can be updated.
    pub page: Option<page::PageFile>,
    /// How to unmount at a clean stop.
    pub mount: Mount,
    /// The FUSE connection.
    pub channel: Channel,
    /// Whether a daemon made the mountpoint file.
    pub made: bool,
    /// The lasting state's copy outside this process.
    pub session: Session,
    /// What the previous process left, if this start continues its connection.
    pub resumed: Option<Snapshot>,
    /// Whether the previous process died with requests unanswered.
    pub resend: bool,
}

/// Recovers the counter and mounts the device.
pub fn fresh(config: &Config, dir: Arc<StateDir>) -> Result<Start, DaemonError> {
    let recovered =
        state::recover(Arc::clone(&dir), page::peek(&dir)).map_err(setup("reading the boot id"))?;
    let page = open_page(&dir, recovered.generation, recovered.generation_id);
    let session = Session::create().map_err(setup("creating the session"))?;
    let made = device_path::prepare_device_path(&config.device)?;
    let (mount, channel) = match device_path::mount_device(&config.device) {
        Ok(mounted) => mounted,
        Err(e) => {
            device_path::remove_if_made(&config.device, made);
            return Err(e.into());
        }
    };
    tracing::info!(device = %config.device.display(), method = ?mount.method(), "mounted");
    Ok(Start {
        dir,
        recovered,
        page,
        mount,
        channel,
        made,
        session,
        resumed: None,
        resend: false,
    })
}

/// Takes the live connection and the core's state from the daemon that holds the state
/// directory, waits until it has gone, and locks the directory in its place.
pub fn take_over(config: &Config, in_use: StateDirError) -> Result<Start, DaemonError> {
    let mut taken = match handover::take_over(&config.state_dir, &config.device) {
        Ok(taken) => taken,
        Err(handover) => return Err(DaemonError::Busy { in_use, handover }),
    };
    let mut session = Session::create().map_err(setup("creating the session"))?;
    session
        .write_all(&taken.snapshot.device)
        .map_err(setup("writing the session"))?;
    taken
        .confirm()
        .map_err(setup("waiting for the previous daemon to exit"))?;
    let dir = Arc::new(
        StateDir::open_waiting(&config.state_dir, handover::ANSWER_TIMEOUT)
            .map_err(DaemonError::LockAfterHandover)?,
    );
    let snapshot = taken.snapshot;
    log_continued("took the device over", &snapshot);
    let generation = snapshot.device.generation;
    let generation_id = state::known_or_drawn(snapshot.device.generation_id)
        .map_err(setup("drawing a generation ID"))?;
    let recovered = state::Recovered {
        state: state::StateFile::new(Arc::clone(&dir)).map_err(setup("reading the boot id"))?,
        generation,
        generation_id,
        degraded: snapshot
            .device
            .degraded
            .then(|| "the previous daemon was degraded".into()),
    };
    Ok(Start {
        page: open_page(&dir, generation, generation_id),
        dir,
        recovered,
        mount: existing_mount(config, &snapshot),
        channel: Channel::from_fd(taken.fuse),
        made: snapshot.made_device_file,
        session,
        resumed: Some(snapshot),
        resend: false,
    })
}

/// Whether a kept connection can still be served: the kernel has not ended it and the device
/// path still shows a mount. A stop that was not a restart unmounts; a start given what that
/// process kept begins anew instead of serving nothing.
pub fn still_served(config: &Config, fuse: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fuse, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let ended = rustix::event::poll(&mut fds, Some(&now)).is_ok()
        && fds[0].revents().contains(PollFlags::ERR);
    // A table that cannot be read says nothing: mounting anew over a live mount would stat
    // it, and wait for this very process to answer.
    let mounted = crate::mount_watch::is_mounted(&config.device).unwrap_or(true);
    if ended || !mounted {
        tracing::warn!(
            ended,
            mounted,
            "the kept connection no longer serves the device; starting anew"
        );
    }
    !ended && mounted
}

/// Continues the connection of a serving process that died, from the session it kept. The
/// counter continues from the highest of the session and every record on disk.
pub fn resume(config: &Config, fuse: OwnedFd, session: OwnedFd) -> Result<Start, DaemonError> {
    let dir = Arc::new(
        StateDir::open_waiting(&config.state_dir, handover::ANSWER_TIMEOUT)
            .map_err(DaemonError::LockAfterHandover)?,
    );
    let (session, snapshot) = Session::open(session).map_err(|e| DaemonError::Setup {
        what: "reading the session",
        source: std::io::Error::other(e),
    })?;
    let mut recovered =
        state::recover(Arc::clone(&dir), page::peek(&dir)).map_err(setup("reading the boot id"))?;
    if let Some(snapshot) = &snapshot {
        log_continued("continuing the connection after a crash", snapshot);
        let device = &snapshot.device;
        recovered
            .continue_from(device.generation, device.generation_id)
            .map_err(setup("drawing a generation ID"))?;
    }
    let made = snapshot.as_ref().is_some_and(|s| s.made_device_file);
    let mount = match &snapshot {
        Some(snapshot) => existing_mount(config, snapshot),
        None => Mount::existing(&config.device, MountMethod::Syscall),
    };
    Ok(Start {
        page: open_page(&dir, recovered.generation, recovered.generation_id),
        dir,
        recovered,
        mount,
        channel: Channel::from_fd(fuse),
        made,
        session,
        resumed: snapshot,
        resend: true,
    })
}

/// The restarts on this connection, counting this start if it continues a previous process.
pub fn restarts_now(start: &Start, holders: &Holders) -> Option<Restarts> {
    let snapshot = start.resumed.as_ref()?;
    let (mode, cause) = match (&holders.keeper_saw, start.resend) {
        (_, false) => ("handover", "handed over".to_owned()),
        (Some(end), true) => ("keeper", end.clone()),
        (None, true) => ("fdstore", "unknown".to_owned()),
    };
    Some(Restarts {
        count: snapshot.restarts.as_ref().map_or(0, |r| r.count) + 1,
        mode: mode.to_owned(),
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        previous_pid: snapshot.from_pid,
        cause,
    })
}

fn existing_mount(config: &Config, snapshot: &Snapshot) -> Mount {
    let method = match snapshot.fusermount {
        true => MountMethod::Fusermount,
        false => MountMethod::Syscall,
    };
    Mount::existing(&config.device, method)
}

fn log_continued(what: &str, snapshot: &Snapshot) {
    tracing::info!(
        from = snapshot.from_pid,
        generation = snapshot.device.generation,
        files = snapshot.device.files.len(),
        pending = snapshot.device.pending.len(),
        format = snapshot.format,
        "{what}"
    );
}

/// The page file at `generation` and `id`, or `None` (logged) where the state directory takes
/// no writes.
fn open_page(dir: &StateDir, generation: u32, id: GenerationId) -> Option<page::PageFile> {
    match page::PageFile::open_or_create(dir, generation, id) {
        Ok(page) => Some(page),
        // A read-only or full state directory: serve anyway. Without a page file probes fall
        // back to the device; one that cannot be opened for update shows this generation, and
        // no bump can be persisted in a directory that takes no writes.
        Err(error) => {
            let path = dir.path_of(PAGE_FILE_NAME);
            tracing::error!(path = %path.display(), %error, "the page file cannot be updated");
            None
        }
    }
}
