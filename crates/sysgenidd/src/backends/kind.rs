//! The backends this build knows, by kind, with the names `--backends` and status use.

use std::fmt;
use std::str::FromStr;

use super::BackendError;

/// A hardware backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendKind {
    /// A BPF probe on the kernel's `add_vmfork_randomness()`.
    VmgenidBpf,
    /// `vm_generation_counter` of `/dev/vmclock0`.
    Vmclock,
    /// The kernel's `NEW_VMGENID=1` uevent.
    Uevent,
    /// The GUID QEMU publishes in fw_cfg.
    FwCfg,
}

impl BackendKind {
    /// Every backend, in the order `auto` starts them.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::VmgenidBpf,
        BackendKind::Vmclock,
        BackendKind::Uevent,
        BackendKind::FwCfg,
    ];

    /// The name in `--backends`, in status and in the log.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::VmgenidBpf => "vmgenid-bpf",
            BackendKind::Vmclock => "vmclock",
            BackendKind::Uevent => "uevent",
            BackendKind::FwCfg => "fw-cfg",
        }
    }

    /// Whether it sees a restore at once; under `auto`, polling fw-cfg runs only without one.
    pub const fn immediate(self) -> bool {
        matches!(self, BackendKind::VmgenidBpf | BackendKind::Vmclock)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(name: &str) -> Result<BackendKind, BackendError> {
        BackendKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| BackendError::Unknown(vec![name.to_owned()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_say_what_is_known() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.to_string().parse::<BackendKind>().ok(), Some(kind));
        }
        let err = "vmgenid".parse::<BackendKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown backend \"vmgenid\": this build knows vmgenid-bpf, vmclock, uevent, fw-cfg"
        );
    }
}
