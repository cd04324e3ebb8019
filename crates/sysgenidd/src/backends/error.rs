//! Why a backend cannot run: the reason shown in status (`reason`) and in the log.

use std::io;
use std::path::PathBuf;

use super::BackendKind;
use super::vmclock::{self, Torn};

/// Why a backend cannot run, or why the backends cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// `--backends` names backends this build does not know.
    #[error("unknown backend {}: this build knows {}", quoted(.0), known())]
    Unknown(Vec<String>),
    /// Under `auto`, fw-cfg polls only when nothing sees restores at once.
    #[error(
        "not needed: {better} sees restores at once (name fw-cfg in --backends to poll it too)"
    )]
    NotNeeded {
        /// The backend that sees restores at once.
        better: BackendKind,
    },
    /// The backend's thread could not start.
    #[error("cannot start its thread: {0}")]
    Thread(#[source] io::Error),

    /// There is no vmclock device.
    #[error(
        "no {} (needs the vmclock driver, ptp_vmclock, and a hypervisor with a vmclock device)",
        .0.display()
    )]
    NoVmclock(PathBuf),
    /// The vmclock device cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    OpenVmclock {
        /// The device.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The vmclock device cannot be stat'ed.
    #[error("cannot stat {}: {source}", path.display())]
    StatVmclock {
        /// The device.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A regular file standing in for the device is too short.
    #[error("{} holds {have} bytes, less than the vmclock structure", path.display())]
    ShortVmclock {
        /// The file.
        path: PathBuf,
        /// Its length.
        have: usize,
    },
    /// The vmclock page cannot be mapped.
    #[error("cannot map {}: {source}", path.display())]
    MapVmclock {
        /// The device.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The page does not start with `VMCLOCK_MAGIC`.
    #[error(
        "not a vmclock page (magic {magic:#010x}, expected {:#010x})",
        vmclock::MAGIC
    )]
    NotVmclock {
        /// The magic found.
        magic: u32,
    },
    /// The page has a layout version this build does not read.
    #[error(
        "vmclock version {version} is not supported (only {})",
        vmclock::VERSION
    )]
    VmclockVersion {
        /// The version found.
        version: u16,
    },
    /// The page's region ends before `vm_generation_counter`.
    #[error("vmclock region of {size} bytes is too small for vm_generation_counter")]
    VmclockTooSmall {
        /// The region's size.
        size: u32,
    },
    /// The hypervisor kept the seqlock busy through every read.
    #[error(transparent)]
    Torn(#[from] Torn),
    /// The page has no `vm_generation_counter`.
    #[error("{}", vmclock::NO_COUNTER)]
    NoCounter,

    /// fw_cfg is loaded but has no vmgenid GUID.
    #[error("no {} (fw_cfg has no vmgenid GUID: no QEMU vmgenid device)", .0.display())]
    NoFwCfgGuid(PathBuf),
    /// fw_cfg is not there.
    #[error(
        "no {} (needs QEMU with a vmgenid device and the qemu_fw_cfg kernel module)",
        .0.display()
    )]
    NoFwCfg(PathBuf),
    /// The fw_cfg GUID blob cannot be read.
    #[error("{}: {source}", path.display())]
    FwCfg {
        /// The blob.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },

    /// The uevent socket cannot be bound.
    #[error("cannot bind a kobject uevent netlink socket: {0}")]
    UeventSocket(#[source] io::Error),

    /// The BPF probe cannot run here.
    #[error(transparent)]
    Probe(#[from] sysgenid_bpf::Unavailable),
    /// The probe's counter cannot be read.
    #[error("cannot read the probe counter: {0}")]
    ProbeCounter(#[source] io::Error),
    /// The probe's acknowledged count cannot be read.
    #[error("cannot read the probe ack: {0}")]
    ProbeAck(#[source] io::Error),
    /// The probe's counter cannot be shared with the backend thread.
    #[error("cannot share the probe counter: {0}")]
    ProbeShare(#[source] io::Error),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn known() -> String {
    BackendKind::ALL.map(BackendKind::name).join(", ")
}
