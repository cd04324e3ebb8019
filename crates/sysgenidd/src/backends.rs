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
use crate::inbox::Inbox;

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
    let mut active = Vec::new();
    let mut statuses = Vec::new();
    for kind in kinds {
        let started = match kind {
            BackendKind::VmgenidBpf => vmgenid_bpf::start(inbox, options).map(Some),
            BackendKind::Vmclock => vmclock::start(inbox, options).map(|()| None),
            BackendKind::Uevent => uevent::start(inbox).map(|()| None),
            BackendKind::FwCfg => match immediate_active(&active).filter(|_| !explicit) {
                Some(better) => Err(BackendError::NotNeeded { better }),
                None => fw_cfg::start(inbox, options).map(|()| None),
            },
        };
        if started.is_ok() {
            active.push(kind);
        }
        statuses.push(status(kind, started, explicit));
    }
    Ok(statuses)
}

/// The status of a backend that started (with how it runs, if that is worth knowing) or not.
fn status(
    kind: BackendKind,
    started: Result<Option<String>, BackendError>,
    explicit: bool,
) -> BackendStatus {
    let name = kind.name();
    match started {
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
                reason: Some(reason.to_string()),
                detail: None,
            }
        }
    }
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

/// Starts a backend's thread.
fn spawn(kind: BackendKind, f: impl FnOnce() + Send + 'static) -> Result<(), BackendError> {
    std::thread::Builder::new()
        .name(format!("backend-{kind}"))
        .spawn(f)
        .map(drop)
        .map_err(BackendError::Thread)
}

/// An active backend that sees restores at once: vmclock, or the probe when a device is bound
/// to the kernel's vmgenid driver (without one the probe never fires).
fn immediate_active(active: &[BackendKind]) -> Option<BackendKind> {
    active.iter().copied().find(|kind| {
        kind.immediate() && (*kind != BackendKind::VmgenidBpf || vmgenid_bpf::vmgenid_bound())
    })
}
