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
pub mod inbox;
pub mod mount_watch;
pub mod page;
pub mod restores;
pub mod server;
pub mod state;
pub mod state_dir;
pub mod workers;

use std::path::{Path, PathBuf};
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

/// Starts serving with `config` and returns when told to stop.
pub fn run(config: &Config) -> Result<(), DaemonError> {
    let dir = Arc::new(StateDir::open(&config.state_dir)?);
    let recovered =
        state::recover(Arc::clone(&dir), page::peek(&dir)).map_err(setup("reading the boot id"))?;
    let generation = recovered.generation;
    let page = match page::PageFile::open_or_create(&dir, generation) {
        Ok(page) => Some(page),
        // A read-only or full state directory: serve anyway. Without a page file probes fall
        // back to the device; one that cannot be opened for update shows this generation, and
        // no bump can be persisted in a directory that takes no writes.
        Err(error) => {
            let path = dir.path_of(PAGE_FILE_NAME);
            tracing::error!(path = %path.display(), %error, "the page file cannot be updated");
            None
        }
    };
    let policy = Arc::new(
        caps::TriggerPolicy::for_this_process().map_err(setup("reading user namespaces"))?,
    );
    let (inbox, receiver) = inbox::inbox().map_err(setup("creating the event loop inbox"))?;
    let backends = backends::start_with(&config.backends, &inbox, &backend_options(config))?;

    let made = device_path::prepare_device_path(&config.device)?;
    let (mount, channel) = match device_path::mount_device(&config.device) {
        Ok(mounted) => mounted,
        Err(e) => {
            device_path::remove_if_made(&config.device, made);
            return Err(e.into());
        }
    };
    tracing::info!(device = %config.device.display(), method = ?mount.method(), "mounted");
    let control_path = config.state_dir.join(CONTROL_SOCKET_NAME);
    let control_bound = match start_helpers(config, &control_path, &inbox, &policy) {
        Ok(bound) => bound,
        Err(e) => {
            let _ = mount.unmount(true);
            device_path::remove_if_made(&config.device, made);
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
        generation,
        degraded: recovered.degraded.is_some(),
        policy,
        inbox: receiver,
        outbox: inbox,
        facts,
    };
    let stopped = Server::new(config, serving).and_then(|mut server| server.run());
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if control_bound {
        let _ = std::fs::remove_file(&control_path);
    }
    match stopped? {
        Stopped::Shutdown(reason) => {
            tracing::info!(%reason, "unmounting and exiting");
            match mount.unmount(true) {
                Ok(()) => device_path::remove_if_made(&config.device, made),
                Err(e) => tracing::warn!(error = %e, "unmount failed"),
            }
            Ok(())
        }
        Stopped::Unmounted => Err(DaemonError::Unmounted),
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
    control_path: &Path,
    inbox: &inbox::Inbox,
    policy: &Arc<caps::TriggerPolicy>,
) -> Result<bool, DaemonError> {
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
