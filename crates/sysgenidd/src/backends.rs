//! Hardware backends: sources of restore events that bump the generation.
//!
//! Each backend runs on its own thread and sends every restore it sees to the event loop as a
//! [`Message::Report`]; the loop applies the one-bump-per-restore policy ([`dedupe`]).
//!
//! - `auto` starts every backend this machine supports and lists the others as inactive with
//!   the reason.
//! - A list starts the named backends; a named backend that this machine cannot run is listed
//!   as inactive with the reason and a warning is logged, so the daemon still serves (status
//!   shows the gap). A name this build does not know is refused.

pub mod dedupe;
mod error;
pub mod fw_cfg;
mod kind;
pub mod record;
pub mod uevent;
pub mod vmclock;
pub mod vmgenid_bpf;

use std::path::PathBuf;
use std::time::Duration;

pub use error::BackendError;
pub use kind::BackendKind;

use crate::config::{BackendChoice, BpfAttach};
use crate::control::BackendStatus;
use crate::inbox::{Completion, Inbox, Message};

/// Where the backends look, and what they keep.
#[derive(Debug, Clone)]
pub struct Options {
    /// The vmclock device.
    pub vmclock_path: PathBuf,
    /// How often to read a vmclock page that does not notify.
    pub vmclock_interval: Duration,
    /// Where to record the vmclock counter between runs (none: restores while the daemon is
    /// down go unseen).
    pub state_dir: Option<PathBuf>,
    /// The fw_cfg vmgenid GUID blob.
    pub fw_cfg_path: PathBuf,
    /// How often to read it.
    pub fw_cfg_interval: Duration,
    /// Where the vmgenid BPF probe is pinned (none: unpinned, restores while the daemon is
    /// down go unseen).
    pub bpf_pin_dir: Option<PathBuf>,
    /// How the vmgenid BPF probe attaches.
    pub bpf_attach: BpfAttach,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vmclock_path: PathBuf::from(vmclock::DEFAULT_PATH),
            vmclock_interval: vmclock::DEFAULT_INTERVAL,
            fw_cfg_path: PathBuf::from(fw_cfg::DEFAULT_PATH),
            fw_cfg_interval: fw_cfg::DEFAULT_INTERVAL,
            state_dir: None,
            bpf_pin_dir: Some(PathBuf::from(vmgenid_bpf::DEFAULT_PIN_DIR)),
            bpf_attach: BpfAttach::Auto,
        }
    }
}

/// Starts the chosen backends with the default options and reports on each.
pub fn start(choice: &BackendChoice, inbox: &Inbox) -> Result<Vec<BackendStatus>, BackendError> {
    start_with(choice, inbox, &Options::default())
}

/// Starts the chosen backends, reporting restores to `inbox`, and reports on each.
pub fn start_with(
    choice: &BackendChoice,
    inbox: &Inbox,
    options: &Options,
) -> Result<Vec<BackendStatus>, BackendError> {
    let kinds = match choice {
        BackendChoice::None => {
            tracing::info!(
                "hardware backends off (--backends none): only triggers bump the generation"
            );
            return Ok(Vec::new());
        }
        BackendChoice::Auto => BackendKind::ALL.to_vec(),
        BackendChoice::List(names) => chosen(names)?,
    };
    let explicit = matches!(choice, BackendChoice::List(_));
    let mut statuses = Vec::new();
    for kind in kinds {
        let name = kind.name();
        let started = match kind {
            BackendKind::VmgenidBpf => {
                vmgenid_bpf::start(inbox, options.bpf_pin_dir.as_deref(), options.bpf_attach)
                    .map(Some)
            }
            BackendKind::Vmclock => start_vmclock(inbox, options).map(|()| None),
            BackendKind::Uevent => start_uevent(inbox).map(|()| None),
            BackendKind::FwCfg => match immediate_active(&statuses).filter(|_| !explicit) {
                Some(better) => Err(format!(
                    "not needed: {better} sees restores at once (name {name} in --backends to \
                     poll it too)"
                )),
                None => start_fw_cfg(inbox, options).map(|()| None),
            },
        };
        let status = match started {
            Ok(detail) => {
                tracing::info!(backend = name, detail, "hardware backend active");
                BackendStatus {
                    name: name.to_owned(),
                    active: true,
                    reason: None,
                    detail,
                }
            }
            Err(reason) => {
                if explicit {
                    tracing::warn!(backend = name, %reason, "requested backend cannot run");
                } else {
                    tracing::info!(backend = name, %reason, "hardware backend not available");
                }
                BackendStatus {
                    name: name.to_owned(),
                    active: false,
                    reason: Some(reason),
                    detail: None,
                }
            }
        };
        statuses.push(status);
    }
    Ok(statuses)
}

/// The backends of an explicit list, each once, in the order named.
fn chosen(names: &[String]) -> Result<Vec<BackendKind>, BackendError> {
    let mut kinds = Vec::new();
    let mut unknown = Vec::new();
    for name in names {
        match name.parse::<BackendKind>() {
            Ok(kind) if kinds.contains(&kind) => {}
            Ok(kind) => kinds.push(kind),
            Err(_) => unknown.push(name.clone()),
        }
    }
    if unknown.is_empty() {
        Ok(kinds)
    } else {
        Err(BackendError::Unknown(unknown))
    }
}

fn spawn(kind: BackendKind, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(format!("backend-{kind}"))
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("cannot start its thread: {e}"))
}

fn start_vmclock(inbox: &Inbox, options: &Options) -> Result<(), String> {
    let path = &options.vmclock_path;
    if !path.exists() {
        return Err(format!(
            "no {} (needs the vmclock driver, ptp_vmclock, and a hypervisor with a vmclock device)",
            path.display()
        ));
    }
    let mut watcher = vmclock::Watcher::open(path, options.vmclock_interval)?;
    let counter = watcher.counter();
    tracing::info!(
        counter,
        notified = watcher.notified(),
        "vmclock vm_generation_counter at start"
    );
    let recorder = record::resume(
        inbox,
        BackendKind::Vmclock,
        options.state_dir.as_deref(),
        counter.into(),
    );
    let inbox = inbox.clone();
    spawn(BackendKind::Vmclock, move || {
        let mut torn = false;
        loop {
            match watcher.step() {
                Ok(Some(value)) => {
                    torn = false;
                    recorder.report(&inbox, value.into());
                }
                Ok(None) => torn = false,
                Err(e) => {
                    if !torn {
                        tracing::warn!(error = %e, "vmclock read failed; trying again");
                    }
                    torn = true;
                    std::thread::sleep(vmclock::DEFAULT_INTERVAL);
                }
            }
        }
    })
}

/// An active backend that sees restores at once: vmclock, or the probe when a device is bound
/// to the kernel's vmgenid driver (without one the probe never fires).
fn immediate_active(statuses: &[BackendStatus]) -> Option<BackendKind> {
    statuses
        .iter()
        .filter(|s| s.active)
        .filter_map(|s| s.name.parse::<BackendKind>().ok())
        .find(|kind| {
            kind.immediate() && (*kind != BackendKind::VmgenidBpf || vmgenid_bpf::vmgenid_bound())
        })
}

fn start_fw_cfg(inbox: &Inbox, options: &Options) -> Result<(), String> {
    let (file, guid) = fw_cfg::open(&options.fw_cfg_path)?;
    tracing::info!(
        guid = format_args!("{guid:032x}"),
        "fw_cfg vmgenid GUID at start"
    );
    let recorder = record::resume(
        inbox,
        BackendKind::FwCfg,
        options.state_dir.as_deref(),
        guid,
    );
    let inbox = inbox.clone();
    let interval = options.fw_cfg_interval;
    spawn(BackendKind::FwCfg, move || {
        let mut last = guid;
        let mut failing = false;
        loop {
            std::thread::sleep(interval);
            match fw_cfg::read_guid(&file) {
                Ok(now) => {
                    failing = false;
                    if now != last {
                        last = now;
                        recorder.report(&inbox, now);
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "fw_cfg GUID read failed; trying again");
                    }
                    failing = true;
                }
            }
        }
    })
}

fn start_uevent(inbox: &Inbox) -> Result<(), String> {
    let socket = uevent::Socket::bind()
        .map_err(|e| format!("cannot bind a kobject uevent netlink socket: {e}"))?;
    let inbox = inbox.clone();
    spawn(BackendKind::Uevent, move || {
        uevent::run(socket, || {
            inbox.send(Message::Report {
                backend: BackendKind::Uevent,
                key: None,
                completion: Completion::nothing(),
            });
        })
    })
}
