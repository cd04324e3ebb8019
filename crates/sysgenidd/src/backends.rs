//! Hardware backends: sources of restore events that bump the generation.
//!
//! Each backend runs on its own thread and reports restores to a [`Reporter`], which applies
//! the one-bump-per-restore policy ([`dedupe`]) and sends what passes to the loop as
//! [`Message::HardwareBump`].
//!
//! - `auto` starts every backend this machine supports and lists the others as inactive with
//!   the reason.
//! - A list starts the named backends; a named backend that this machine cannot run is listed
//!   as inactive with the reason and a warning is logged, so the daemon still serves (status
//!   shows the gap). A name this build does not know is refused.

pub mod dedupe;
pub mod fw_cfg;
pub mod record;
pub mod uevent;
pub mod vmclock;
pub mod vmgenid_bpf;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{BackendChoice, BpfAttach};
use crate::control::BackendStatus;
use crate::inbox::{Applied, Inbox, Message};

/// The names of the backends this build knows.
pub const KNOWN: &[&str] = &[vmgenid_bpf::NAME, "vmclock", "uevent", fw_cfg::NAME];

/// Backends that see a restore at once; under `auto`, polling fw-cfg runs only without them.
const IMMEDIATE: &[&str] = &[vmgenid_bpf::NAME, "vmclock"];

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
    /// The dedupe window.
    pub window: Duration,
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
            window: dedupe::DEFAULT_WINDOW,
        }
    }
}

/// The shared door from backend threads to the inbox, through the dedupe policy.
#[derive(Debug, Clone)]
pub struct Reporter {
    policy: Arc<Mutex<dedupe::Dedupe>>,
    epoch: Instant,
    inbox: Inbox,
}

impl Reporter {
    /// A reporter with a fresh policy.
    pub fn new(inbox: Inbox, window: Duration) -> Reporter {
        Reporter {
            policy: Arc::new(Mutex::new(dedupe::Dedupe::new(window))),
            epoch: Instant::now(),
            inbox,
        }
    }

    fn policy(&self) -> std::sync::MutexGuard<'_, dedupe::Dedupe> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a backend's key at start.
    pub fn note_key(&self, backend: &str, key: u128) {
        self.policy().note_key(backend, key);
    }

    /// Reports a restore; returns whether a bump was sent. `applied` runs once that bump is
    /// persisted and published; for a dropped report, once the bump that counted the restore
    /// is (the event loop runs it at once if that bump was already applied).
    pub fn report(&self, backend: &str, key: Option<u128>, applied: Applied) -> bool {
        let now = self.epoch.elapsed();
        let verdict = self.policy().offer(backend, key, now);
        match verdict {
            dedupe::Verdict::Forward => {
                tracing::info!(backend, ?key, "hardware restore: bumping the generation");
                self.inbox.send(Message::HardwareBump {
                    backend: backend.to_owned(),
                    applied,
                });
                true
            }
            dedupe::Verdict::Duplicate { winner, after } => {
                tracing::info!(backend, ?key, %winner, ?after, "same restore already reported");
                self.inbox.send(Message::AfterBump { winner, applied });
                false
            }
            dedupe::Verdict::SameKey => {
                tracing::debug!(backend, ?key, "key already reported");
                self.inbox.send(Message::AfterBump {
                    winner: backend.to_owned(),
                    applied,
                });
                false
            }
        }
    }

    /// Records that the overseer's conditional trigger bumped for a restore: backends that
    /// report it within the window are the same restore.
    pub fn bumped_by_overseer(&self) {
        let now = self.epoch.elapsed();
        self.policy().bumped_by("trigger-if", now);
    }
}

/// Starts the chosen backends with the default options and reports on each.
pub fn start(choice: &BackendChoice, inbox: &Inbox) -> Result<Vec<BackendStatus>, String> {
    start_with(choice, inbox, &Options::default())
}

/// Starts the chosen backends and reports on each.
pub fn start_with(
    choice: &BackendChoice,
    inbox: &Inbox,
    options: &Options,
) -> Result<Vec<BackendStatus>, String> {
    start_reporting(
        choice,
        &Reporter::new(inbox.clone(), options.window),
        options,
    )
}

/// Starts the chosen backends, reporting through `reporter`, and reports on each.
pub fn start_reporting(
    choice: &BackendChoice,
    reporter: &Reporter,
    options: &Options,
) -> Result<Vec<BackendStatus>, String> {
    let names: Vec<&str> = match choice {
        BackendChoice::None => {
            tracing::info!(
                "hardware backends off (--backends none): only triggers bump the generation"
            );
            return Ok(Vec::new());
        }
        BackendChoice::Auto => KNOWN.to_vec(),
        BackendChoice::List(names) => {
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| !KNOWN.contains(&n.as_str()))
                .collect();
            if !unknown.is_empty() {
                return Err(format!(
                    "unknown backend {}: this build knows {}",
                    unknown
                        .iter()
                        .map(|n| format!("{n:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    KNOWN.join(", ")
                ));
            }
            let mut list: Vec<&str> = Vec::new();
            for name in names {
                if !list.contains(&name.as_str()) {
                    list.push(name);
                }
            }
            list
        }
    };
    let explicit = matches!(choice, BackendChoice::List(_));
    let mut statuses = Vec::new();
    for name in names {
        let started = match name {
            vmgenid_bpf::NAME => {
                vmgenid_bpf::start(reporter, options.bpf_pin_dir.as_deref(), options.bpf_attach)
                    .map(Some)
            }
            "vmclock" => start_vmclock(reporter, options).map(|()| None),
            "uevent" => start_uevent(reporter).map(|()| None),
            fw_cfg::NAME => match immediate_active(&statuses).filter(|_| !explicit) {
                Some(better) => Err(format!(
                    "not needed: {better} sees restores at once (name {} in --backends to poll \
                     it too)",
                    fw_cfg::NAME
                )),
                None => start_fw_cfg(reporter, options).map(|()| None),
            },
            _ => unreachable!("checked against KNOWN"),
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

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(format!("backend-{name}"))
        .spawn(f)
        .map(drop)
        .map_err(|e| format!("cannot start its thread: {e}"))
}

fn start_vmclock(reporter: &Reporter, options: &Options) -> Result<(), String> {
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
        reporter,
        "vmclock",
        options.state_dir.as_deref(),
        counter.into(),
    );
    let reporter = reporter.clone();
    spawn("vmclock", move || {
        let mut torn = false;
        loop {
            match watcher.step() {
                Ok(Some(value)) => {
                    torn = false;
                    recorder.report(&reporter, value.into());
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
fn immediate_active(statuses: &[BackendStatus]) -> Option<&str> {
    statuses
        .iter()
        .find(|s| {
            s.active
                && IMMEDIATE.contains(&s.name.as_str())
                && (s.name != vmgenid_bpf::NAME || vmgenid_bpf::vmgenid_bound())
        })
        .map(|s| s.name.as_str())
}

fn start_fw_cfg(reporter: &Reporter, options: &Options) -> Result<(), String> {
    let (file, guid) = fw_cfg::open(&options.fw_cfg_path)?;
    tracing::info!(
        guid = format_args!("{guid:032x}"),
        "fw_cfg vmgenid GUID at start"
    );
    let recorder = record::resume(reporter, fw_cfg::NAME, options.state_dir.as_deref(), guid);
    let reporter = reporter.clone();
    let interval = options.fw_cfg_interval;
    spawn(fw_cfg::NAME, move || {
        let mut last = guid;
        let mut failing = false;
        loop {
            std::thread::sleep(interval);
            match fw_cfg::read_guid(&file) {
                Ok(now) => {
                    failing = false;
                    if now != last {
                        last = now;
                        recorder.report(&reporter, now);
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

fn start_uevent(reporter: &Reporter) -> Result<(), String> {
    let socket = uevent::Socket::bind()
        .map_err(|e| format!("cannot bind a kobject uevent netlink socket: {e}"))?;
    let reporter = reporter.clone();
    spawn("uevent", move || {
        uevent::run(socket, || {
            reporter.report("uevent", None, Applied::nothing());
        })
    })
}
