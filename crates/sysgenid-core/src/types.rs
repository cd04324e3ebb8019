//! Small value types that name things crossing the core's boundary.

use std::fmt;

/// An open file of the device: one watcher. Chosen by the core at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FileId(pub u64);

/// A request of the transport, unique among the requests still pending (a FUSE `unique`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RequestId(pub u64);

/// A poll registration of the transport (a FUSE poll `kh`), woken by [`crate::Action::WakePoll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PollHandle(pub u64);

/// The transport's mark for a hardware bump, opaque to the core and handed back with its
/// outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BumpToken(pub u64);

/// A point on the transport's monotonic clock, in nanoseconds from an epoch of its choosing.
///
/// The core never reads a clock: every time it uses arrives in an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Time(pub u64);

impl Time {
    /// The point `ms` milliseconds after this one, or `None` when that is past the end of the
    /// clock's range (about 584 years), which the core treats as "never".
    pub fn checked_add_millis(self, ms: u64) -> Option<Time> {
        ms.checked_mul(1_000_000)
            .and_then(|ns| self.0.checked_add(ns))
            .map(Time)
    }
}

/// Who caused a bump.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum BumpSource {
    /// A trigger: the `TRIGGER_GEN_UPDATE` ioctl, or the control socket's conditional
    /// `trigger-if`, from the process with this pid.
    Trigger {
        /// The calling thread's id, as the transport saw it.
        pid: u32,
    },
    /// A hardware backend, by name (for example `"vmgenid-bpf"`).
    Backend(String),
}

impl fmt::Display for BumpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BumpSource::Trigger { pid } => write!(f, "trigger from pid {pid}"),
            BumpSource::Backend(name) => write!(f, "backend {name}"),
        }
    }
}

/// The caller of an ioctl, as the transport judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The calling thread's id.
    pub pid: u32,
    /// Whether it holds `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`, effective, in the user
    /// namespace that owns the device.
    pub privileged: bool,
}
