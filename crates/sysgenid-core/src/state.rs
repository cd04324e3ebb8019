//! The device's state between events as plain data, so that another instance can continue
//! where this one stopped (rust-vmm's `state()`/`from_state()`).

use std::fmt;

use sysgenid_abi::GenerationId;

use crate::status::{BumpFailure, BumpRecord};
use crate::types::{FileId, PollHandle, RequestId, Time};

/// Everything a device knows between events, when no bump is under way: the counter, every
/// open file and every blocked read or wait. [`crate::Device::state`] takes it and
/// [`crate::Device::from_state`] continues from it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DeviceState {
    /// The current generation.
    pub generation: u32,
    /// The current generation's random ID. A state written before the field existed reads as
    /// [`GenerationId::NONE`]; the transport then gives it the ID its records show, or a fresh
    /// one.
    #[cfg_attr(feature = "serde", serde(default))]
    pub generation_id: GenerationId,
    /// The id the next open file gets; above every id in `files`.
    pub next_file: u64,
    /// Every open file, by id.
    pub files: Vec<FileState>,
    /// Every blocked read and wait, by request.
    pub pending: Vec<PendingState>,
    /// The last bump that was applied.
    pub last_bump: Option<BumpRecord>,
    /// How many bumps could not be applied.
    pub failed_bumps: u64,
    /// The last bump that could not be applied.
    pub last_failure: Option<BumpFailure>,
    /// Whether the last persist failed.
    pub degraded: bool,
}

/// One open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FileState {
    /// The file.
    pub id: FileId,
    /// The generation it acknowledged.
    pub acked: u32,
    /// Whether it is a tracked watcher.
    pub tracked: bool,
    /// Whether it was opened for writing.
    pub writable: bool,
    /// Its poll registration, woken on every bump.
    pub poll_handle: Option<PollHandle>,
    /// The process that opened it.
    pub pid: u32,
    /// The open request that made it.
    pub opened_by: RequestId,
}

/// A request still waiting for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PendingState {
    /// A blocking read of an up-to-date file.
    Read {
        /// The request to answer.
        request: RequestId,
        /// The file read from.
        file: FileId,
    },
    /// A `WAIT_WATCHERS` call.
    Wait {
        /// The request to answer.
        request: RequestId,
        /// The file it was made on.
        file: FileId,
        /// When it ends with `ETIME`, on the transport's clock; `None` waits for good.
        deadline: Option<Time>,
    },
}

impl PendingState {
    /// The request waiting.
    pub fn request(&self) -> RequestId {
        match *self {
            PendingState::Read { request, .. } | PendingState::Wait { request, .. } => request,
        }
    }

    /// The file it was made on.
    pub fn file(&self) -> FileId {
        match *self {
            PendingState::Read { file, .. } | PendingState::Wait { file, .. } => file,
        }
    }

    /// The same call under another request id (the id the kernel sent it again under).
    pub fn with_request(self, request: RequestId) -> PendingState {
        match self {
            PendingState::Read { file, .. } => PendingState::Read { request, file },
            PendingState::Wait { file, deadline, .. } => PendingState::Wait {
                request,
                file,
                deadline,
            },
        }
    }
}

/// Why [`crate::Device::state`] cannot be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQuiet {
    /// Actions are waiting to be carried out.
    ActionsQueued,
    /// A bump is queued or being persisted; take the state once its outcome is in.
    BumpUnderWay,
}

impl fmt::Display for NotQuiet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotQuiet::ActionsQueued => "actions are waiting to be carried out",
            NotQuiet::BumpUnderWay => "a bump is under way",
        })
    }
}

impl std::error::Error for NotQuiet {}

/// Why [`crate::Device::from_state`] refused a state: it breaks a rule no device can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadState {
    /// Two files share an id, or an id is not below `next_file`.
    FileId(FileId),
    /// A tracked file that cannot acknowledge.
    TrackedReadOnly(FileId),
    /// A pending request on a file that is not open, or a wait on an outdated file.
    Pending(RequestId),
    /// Two pending entries share a request id.
    DuplicateRequest(RequestId),
}

impl fmt::Display for BadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadState::FileId(id) => write!(f, "file id {} is repeated or too high", id.0),
            BadState::TrackedReadOnly(id) => write!(f, "file {} is tracked but read-only", id.0),
            BadState::Pending(r) => {
                write!(
                    f,
                    "request {} waits on a file that is gone, or is a wait on an outdated file",
                    r.0
                )
            }
            BadState::DuplicateRequest(r) => write!(f, "request {} is pending twice", r.0),
        }
    }
}

impl std::error::Error for BadState {}
