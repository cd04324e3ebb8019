//! The sysgenid daemon as a library: configuration, the event loop and its adapters.
//!
//! `main.rs` only parses arguments, sets up logging and calls [`run`].
#![deny(missing_docs)]

pub mod backends;
pub mod caps;
pub mod config;
pub mod control;
pub mod device_path;
pub mod dispatch;
pub mod effects;
#[cfg(test)]
mod fakes;
pub mod fuse_adapter;
pub mod handover;
pub mod inbox;
pub mod mount_watch;
pub mod page;
pub mod restores;
pub mod server;
pub mod session;
pub mod state;
pub mod state_dir;
pub mod workers;

use std::path::PathBuf;
use std::sync::Arc;

use sysgenid_abi::{CONTROL_SOCKET_NAME, PAGE_FILE_NAME};

use crate::config::Config;
use crate::control::DaemonFacts;
use crate::inbox::Message;
use crate::server::{Server, Serving, Stopped};
use crate::state_dir::StateDir;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The options are wrong.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The state directory cannot be used.
    #[error(transparent)]
    StateDir(#[from] state_dir::StateDirError),
    /// The persisted counter cannot be used.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The backends cannot start.
    #[error(transparent)]
    Backends(#[from] backends::BackendError),
    /// The device path is not usable.
    #[error(transparent)]
    Prepare(#[from] device_path::PrepareError),
    /// Mounting failed.
    #[error(transparent)]
    Mount(#[from] device_path::MountDeviceError),
    /// The control socket cannot be bound.
    #[error("control socket {}: {source}", path.display())]
    Control {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The event loop failed.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// A thread could not start.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// The thread.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory is in use, and its daemon did not hand over.
    #[error("{in_use}; taking over from it failed: {handover}")]
    Busy {
        /// The lock's holder.
        in_use: state_dir::StateDirError,
        /// Why the handover did not happen.
        handover: handover::HandoverError,
    },
    /// A handover left this daemon without the running one's lock in time.
    #[error(
        "took over the device, but the previous daemon did not let go of the state directory: {0}"
    )]
    LockAfterHandover(#[source] state_dir::StateDirError),
    /// The kernel ended the FUSE connection while serving.
    #[error("the device was unmounted or its connection aborted from outside")]
    Unmounted,
    /// Another setup step failed.
    #[error("{what}: {source}")]
    Setup {
        /// The step.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Setup { what, source }
}

/// Where a start left off: the state, and the connection to serve.
struct Start {
    dir: Arc<StateDir>,
    recovered: state::Recovered,
    page: Option<page::PageFile>,
    mount: sysgenid_fuse::Mount,
    channel: sysgenid_fuse::Channel,
    /// Whether a daemon made the mountpoint file.
    made: bool,
    /// What the previous daemon handed over, if this start took over from one.
    resumed: Option<handover::Snapshot>,
}

/// Starts serving with `config` and returns when told to stop. If another daemon serves the
/// same device from the same state directory, takes the device over from it.
pub fn run(config: &Config) -> Result<(), DaemonError> {
    let start = match StateDir::open(&config.state_dir) {
        Ok(dir) => fresh_start(config, Arc::new(dir))?,
        Err(in_use @ state_dir::StateDirError::InUse { .. }) => take_over(config, in_use)?,
        Err(e) => return Err(e.into()),
    };
    serve(config, start)
}

/// Recovers the counter and mounts the device.
fn fresh_start(config: &Config, dir: Arc<StateDir>) -> Result<Start, DaemonError> {
    let recovered =
        state::recover(Arc::clone(&dir), page::peek(&dir)).map_err(setup("reading the boot id"))?;
    let page = open_page(&dir, recovered.generation);
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
        resumed: None,
    })
}

/// Takes the live connection and the core's state from the daemon that holds the state
/// directory, waits until it has gone, and locks the directory in its place.
fn take_over(config: &Config, in_use: state_dir::StateDirError) -> Result<Start, DaemonError> {
    let mut taken = match handover::take_over(&config.state_dir, &config.device) {
        Ok(taken) => taken,
        Err(handover) => return Err(DaemonError::Busy { in_use, handover }),
    };
    taken
        .confirm()
        .map_err(setup("waiting for the previous daemon to exit"))?;
    let dir = Arc::new(
        StateDir::open_waiting(&config.state_dir, handover::ANSWER_TIMEOUT)
            .map_err(DaemonError::LockAfterHandover)?,
    );
    let snapshot = taken.snapshot;
    let generation = snapshot.device.generation;
    tracing::info!(
        from = snapshot.from_pid,
        generation,
        files = snapshot.device.files.len(),
        pending = snapshot.device.pending.len(),
        format = snapshot.format,
        "took the device over"
    );
    let recovered = state::Recovered {
        state: state::StateFile::new(Arc::clone(&dir)).map_err(setup("reading the boot id"))?,
        generation,
        degraded: snapshot
            .device
            .degraded
            .then(|| "the previous daemon was degraded".into()),
    };
    let method = match snapshot.fusermount {
        true => sysgenid_fuse::MountMethod::Fusermount,
        false => sysgenid_fuse::MountMethod::Syscall,
    };
    Ok(Start {
        page: open_page(&dir, generation),
        dir,
        recovered,
        mount: sysgenid_fuse::Mount::existing(&config.device, method),
        channel: sysgenid_fuse::Channel::from_fd(taken.fuse),
        made: snapshot.made_device_file,
        resumed: Some(snapshot),
    })
}

/// The page file at `generation`, or `None` (logged) where the state directory takes no writes.
fn open_page(dir: &StateDir, generation: u32) -> Option<page::PageFile> {
    match page::PageFile::open_or_create(dir, generation) {
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

/// Starts the helpers and serves until told to stop; then unmounts, unless the device was
/// handed over.
fn serve(config: &Config, start: Start) -> Result<(), DaemonError> {
    let Start {
        dir,
        recovered,
        page,
        mount,
        channel,
        made,
        resumed,
    } = start;
    let unmount = |mount: &sysgenid_fuse::Mount| {
        let _ = mount.unmount(true);
        device_path::remove_if_made(&config.device, made);
    };
    let policy = match caps::TriggerPolicy::for_this_process() {
        Ok(policy) => Arc::new(policy),
        Err(e) => {
            unmount(&mount);
            return Err(setup("reading user namespaces")(e));
        }
    };
    let (inbox, receiver) = inbox::inbox().map_err(setup("creating the event loop inbox"))?;
    let backends = match backends::start_with(&config.backends, &inbox, &backend_options(config)) {
        Ok(backends) => backends,
        Err(e) => {
            unmount(&mount);
            return Err(e.into());
        }
    };
    let control_path = config.state_dir.join(CONTROL_SOCKET_NAME);
    let control_bound = match start_helpers(config, &dir, &inbox, &policy) {
        Ok(bound) => bound,
        Err(e) => {
            unmount(&mount);
            return Err(e);
        }
    };
    let facts = DaemonFacts {
        pid: std::process::id(),
        device: config.device.clone(),
        state_dir: config.state_dir.clone(),
        device_mmap: false,
        serving: false,
        backends,
    };
    let serving = Serving {
        channel,
        state: recovered.state,
        page,
        generation: recovered.generation,
        degraded: recovered.degraded.is_some(),
        policy,
        inbox: receiver,
        outbox: inbox,
        facts,
        handover: server::HandoverFacts {
            made_device_file: made,
            fusermount: mount.method() == sysgenid_fuse::MountMethod::Fusermount,
            handovers: resumed.as_ref().map_or(0, |s| s.handovers),
        },
        resumed,
    };
    let stopped = Server::new(config, serving).and_then(|mut server| server.run());
    match stopped? {
        Stopped::HandedOver { to } => {
            tracing::info!(to, "handed the device over; exiting without unmounting");
            Ok(())
        }
        Stopped::Shutdown(reason) => {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            if control_bound {
                let _ = std::fs::remove_file(&control_path);
            }
            tracing::info!(%reason, "unmounting and exiting");
            match mount.unmount(true) {
                Ok(()) => device_path::remove_if_made(&config.device, made),
                Err(e) => tracing::warn!(error = %e, "unmount failed"),
            }
            Ok(())
        }
        Stopped::Unmounted => {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            if control_bound {
                let _ = std::fs::remove_file(&control_path);
            }
            Err(DaemonError::Unmounted)
        }
    }
}

fn backend_options(config: &Config) -> backends::Options {
    let defaults = backends::Options::default();
    backends::Options {
        fw_cfg_path: config.fw_cfg_path.clone().unwrap_or(defaults.fw_cfg_path),
        state_dir: Some(config.state_dir.clone()),
        bpf_pin_dir: config.bpf_pin_dir.clone(),
        bpf_attach: config.bpf_attach,
        ..defaults
    }
}

/// Binds the control socket and starts the control, signal and readiness threads.
fn start_helpers(
    config: &Config,
    dir: &StateDir,
    inbox: &inbox::Inbox,
    policy: &Arc<caps::TriggerPolicy>,
) -> Result<bool, DaemonError> {
    let control_path = &dir.path_of(CONTROL_SOCKET_NAME);
    let control = match control::bind(control_path) {
        Ok(listener) => Some(listener),
        Err(source) if state_dir_is_unwritable(&source) => {
            tracing::error!(
                path = %control_path.display(),
                error = %source,
                "no control socket: status and trigger-if are unavailable; the device serves \
                 reads, and bumps fail with EIO until the state directory takes writes"
            );
            None
        }
        Err(source) => {
            return Err(DaemonError::Control {
                path: control_path.to_owned(),
                source,
            });
        }
    };
    let bound = control.is_some();
    if let Some(listener) = control {
        spawn("control", {
            let inbox = inbox.clone();
            let policy = Arc::clone(policy);
            move || control::serve(listener, inbox, policy)
        })?;
    }
    match handover::bind(dir.path()) {
        Ok(listener) => spawn("handover", {
            let inbox = inbox.clone();
            move || handover::serve(listener, inbox)
        })?,
        Err(error) => tracing::warn!(%error, "no handover socket: a new daemon cannot take over"),
    }
    spawn_signal_watcher(inbox.clone())?;
    mount_watch::spawn(&config.device, inbox.clone()).map_err(setup("watching the mount table"))?;
    spawn("readiness", {
        let inbox = inbox.clone();
        let device = config.device.clone();
        // The first stat makes the kernel learn the file's size; until then a mapping of a
        // freshly mounted file would fault with SIGBUS.
        move || match std::fs::metadata(&device) {
            Ok(_) => inbox.send(Message::Serving),
            Err(e) => tracing::error!(error = %e, "the new mount does not answer stat"),
        }
    })?;
    Ok(bound)
}

/// Whether binding in the state directory failed for want of a writable directory (read-only,
/// full, over quota): the daemon still serves, as it does when a persist fails while running.
fn state_dir_is_unwritable(error: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let errno = error.raw_os_error().map(Errno::from_raw_os_error);
    matches!(errno, Some(Errno::ROFS | Errno::NOSPC | Errno::DQUOT))
}

fn spawn(name: &'static str, f: impl FnOnce() + Send + 'static) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map(drop)
        .map_err(|source| DaemonError::Thread { name, source })
}

fn spawn_signal_watcher(inbox: inbox::Inbox) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
    // A file-size limit inherited from the environment must fail a persist (EFBIG), not kill
    // the daemon: SIGXFSZ gets a handler that only notes it.
    signal_hook::flag::register(SIGXFSZ, Arc::new(std::sync::atomic::AtomicBool::new(false)))
        .map_err(setup("installing signal handlers"))?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(setup("installing signal handlers"))?;
    spawn("signals", move || {
        for signal in signals.forever() {
            let name = if signal == SIGTERM {
                "SIGTERM"
            } else {
                "SIGINT"
            };
            inbox.send(Message::Shutdown {
                reason: format!("got {name}"),
            });
        }
    })
}
