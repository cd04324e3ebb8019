//! The sysgenid daemon as a library: configuration, the event loop and its adapters.
//!
//! `main.rs` only parses arguments, sets up logging and calls [`run`].
#![deny(missing_docs)]

pub mod backends;
pub mod bump_log;
pub mod caps;
pub mod config;
pub mod control;
pub mod device_path;
pub mod dispatch;
pub mod effects;
#[cfg(test)]
mod fakes;
pub mod fdpass;
pub mod fdstore;
pub mod fuse_adapter;
pub mod handover;
pub mod inbox;
pub mod keeper;
pub mod mount_watch;
pub mod page;
pub mod placement;
pub mod restores;
pub mod server;
pub mod session;
pub mod shared_map;
pub mod start;
pub mod state;
pub mod state_dir;
pub mod thread_fds;
pub mod workers;

use std::path::PathBuf;
use std::sync::Arc;

use sysgenid_abi::CONTROL_SOCKET_NAME;

use crate::config::Config;
use crate::control::DaemonFacts;
use crate::inbox::Message;
use crate::server::{Server, Serving, Stopped};
use crate::session::HeaderFacts;
use crate::start::Start;
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

/// Starts serving with `config` and returns when told to stop.
///
/// A process started by a keeper, or by systemd with a filled fd store, continues the
/// connection and session it is given. Otherwise, if another daemon serves the same device from
/// the same state directory, this one takes the device over from it; else it mounts anew.
pub fn run(config: &Config) -> Result<(), DaemonError> {
    let link = keeper::Link::from_env().map_err(setup("reaching the keeper"))?;
    let result = run_linked(config, link.as_ref());
    // Only a stop, a handover or a lost connection: after an error the keeper judges the end
    // as a crash, a thread still asleep in the kernel included.
    if let (Some(link), Ok(()) | Err(DaemonError::Unmounted)) = (&link, &result) {
        link.ending();
    }
    result
}

fn run_linked(config: &Config, link: Option<&keeper::Link>) -> Result<(), DaemonError> {
    let (held, behind_exiting) = match link {
        Some(link) => link
            .start()
            .map_err(setup("asking the keeper what it holds"))?,
        None => (fdstore::take_stored(), false),
    };
    let held = match held {
        Some((fuse, _)) if !start::still_served(config, &fuse) => {
            fdstore::forget();
            None
        }
        held => held,
    };
    let start = match held {
        Some((fuse, session)) => start::resume(config, fuse, session)?,
        None => match StateDir::open(&config.state_dir) {
            Ok(dir) => start::fresh(config, Arc::new(dir))?,
            Err(in_use @ state_dir::StateDirError::InUse { .. }) => {
                start::take_over(config, in_use)?
            }
            Err(e) => return Err(e.into()),
        },
    };
    let holders = hand_to_holders(link, &start);
    let store_gate = match (link, behind_exiting) {
        (Some(link), true) => store_gate(link),
        _ => None,
    };
    serve(config, start, holders, store_gate)
}

/// A gate that opens when the keeper says the previous serving process has exited.
fn store_gate(link: &keeper::Link) -> Option<std::sync::mpsc::Receiver<()>> {
    let (open, gate) = std::sync::mpsc::channel();
    match link.when_previous_gone(move || {
        let _ = open.send(());
    }) {
        Ok(()) => Some(gate),
        Err(error) => {
            tracing::warn!(%error, "cannot listen to the keeper; storing the page at once");
            None
        }
    }
}

/// Who holds the connection and the session besides this process.
#[derive(Debug, Clone, Default)]
pub struct Holders {
    /// How the previous serving process ended, when a keeper started this one after it.
    pub keeper_saw: Option<String>,
    /// Whether a keeper holds them.
    pub keeper: bool,
    /// Whether systemd's fd store holds them.
    pub fdstore: bool,
}

/// Gives the connection and the session to whoever outlives this process: the keeper, and
/// systemd's fd store.
fn hand_to_holders(link: Option<&keeper::Link>, start: &Start) -> Holders {
    let mut holders = Holders {
        keeper_saw: link.and_then(|l| l.previous_end.clone()),
        ..Holders::default()
    };
    if let Some(link) = link {
        match link.hold(&start.channel, start.session.fd()) {
            Ok(()) => holders.keeper = true,
            Err(error) => {
                tracing::warn!(%error, "the keeper cannot hold the connection: a crash would end it");
            }
        }
    }
    match fdstore::store(&start.channel, start.session.fd()) {
        Ok(stored) => holders.fdstore = stored,
        Err(error) => tracing::warn!(%error, "cannot store the connection with systemd"),
    }
    holders
}

/// Starts the helpers and serves until told to stop. Then unmounts, unless the device was
/// handed over, or its connection waits in systemd's fd store for the next start.
fn serve(
    config: &Config,
    start: Start,
    holders: Holders,
    store_gate: Option<std::sync::mpsc::Receiver<()>>,
) -> Result<(), DaemonError> {
    let fresh = start.resumed.is_none() && !start.resend;
    let made = start.made;
    // A failed start of a process that continues a connection leaves it to the next one.
    let give_up = |mount: &sysgenid_fuse::Mount| {
        if fresh {
            let _ = mount.unmount(true);
            device_path::remove_if_made(&config.device, made);
        }
    };
    let policy = match caps::TriggerPolicy::for_this_process() {
        Ok(policy) => Arc::new(policy),
        Err(e) => {
            give_up(&start.mount);
            return Err(setup("reading user namespaces")(e));
        }
    };
    let (inbox, receiver) = inbox::inbox().map_err(setup("creating the event loop inbox"))?;
    let backends = match backends::start_with(&config.backends, &inbox, &backend_options(config)) {
        Ok(backends) => backends,
        Err(e) => {
            give_up(&start.mount);
            return Err(e.into());
        }
    };
    let control_bound = match start_helpers(config, &start.dir, &inbox, &policy) {
        Ok(bound) => bound,
        Err(e) => {
            give_up(&start.mount);
            return Err(e);
        }
    };
    let restarts = start::restarts_now(&start, &holders);
    let mount = start.mount.clone();
    let facts = DaemonFacts {
        pid: keeper::service_pid(),
        device: config.device.clone(),
        state_dir: config.state_dir.clone(),
        device_mmap: false,
        serving: false,
        backends,
        serving_pid: Some(std::process::id()),
        restarts: restarts.clone(),
    };
    let mount_facts = HeaderFacts {
        device_path: config.device.clone(),
        made_device_file: made,
        fusermount: mount.method() == sysgenid_fuse::MountMethod::Fusermount,
        restarts,
    };
    let mut serving = Serving::from_start(start, policy, (receiver, inbox), facts, mount_facts);
    serving.store_gate = store_gate;
    let stopped = Server::new(config, serving).and_then(|mut server| server.run())?;
    let ending = Ending {
        mount,
        made,
        control_bound,
        in_fdstore: holders.fdstore,
    };
    ending.finish(config, stopped)
}

/// What a serving process cleans up when the loop ends.
struct Ending {
    mount: sysgenid_fuse::Mount,
    made: bool,
    control_bound: bool,
    in_fdstore: bool,
}

impl Ending {
    /// Unmounts, unless the device was handed over or waits in systemd's fd store for a restart.
    fn finish(self, config: &Config, stopped: Stopped) -> Result<(), DaemonError> {
        let tidy = || {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
            if self.control_bound {
                let _ = std::fs::remove_file(config.state_dir.join(CONTROL_SOCKET_NAME));
            }
        };
        match stopped {
            Stopped::HandedOver { to } => {
                tracing::info!(to, "handed the device over; exiting without unmounting");
                Ok(())
            }
            Stopped::Shutdown(reason) if self.in_fdstore && fdstore::restart_pending() => {
                tidy();
                tracing::info!(
                    %reason,
                    "restarting: the connection stays in systemd's fd store for the next start"
                );
                Ok(())
            }
            Stopped::Shutdown(reason) => {
                tidy();
                tracing::info!(%reason, "unmounting and exiting");
                match self.mount.unmount(true) {
                    Ok(()) => device_path::remove_if_made(&config.device, self.made),
                    Err(e) => tracing::warn!(error = %e, "unmount failed"),
                }
                Ok(())
            }
            Stopped::Unmounted => {
                tidy();
                Err(DaemonError::Unmounted)
            }
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
