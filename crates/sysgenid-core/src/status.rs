//! A read-only snapshot of the device, for the status channel and for tests.

use sysgenid_abi::{Errno, GenerationId};

use crate::types::{BumpSource, FileId};

/// Everything the device knows, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The current generation.
    pub generation: u32,
    /// The current generation's random ID ([`GenerationId::NONE`] if the transport gave none).
    pub generation_id: GenerationId,
    /// How many files are open.
    pub open_files: usize,
    /// How many open files are tracked watchers.
    pub tracked: usize,
    /// How many tracked watchers have not acknowledged the current generation.
    pub outdated: usize,
    /// Each open file, by id.
    pub files: Vec<FileStatus>,
    /// How many blocking reads are waiting for a bump.
    pub pending_reads: usize,
    /// How many `WAIT_WATCHERS` calls are waiting.
    pub pending_waits: usize,
    /// Whether a bump is queued or being persisted.
    pub bump_in_progress: bool,
    /// The last bump that was applied.
    pub last_bump: Option<BumpRecord>,
    /// How many bumps could not be applied since start.
    pub failed_bumps: u64,
    /// The last bump that could not be applied.
    pub last_failure: Option<BumpFailure>,
    /// Whether the last persist failed, so the counter is not durable past its last good value.
    pub degraded: bool,
}

/// One open file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// The file.
    pub file: FileId,
    /// The process that opened it.
    pub pid: u32,
    /// Whether it is a tracked watcher.
    pub tracked: bool,
    /// Whether it has not acknowledged the current generation.
    pub outdated: bool,
}

/// A bump that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BumpRecord {
    /// The generation it set.
    pub generation: u32,
    /// Who caused it.
    pub source: BumpSource,
}

/// A bump that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BumpFailure {
    /// Who asked for it.
    pub source: BumpSource,
    /// [`Errno::Overflow`] or [`Errno::Io`].
    pub error: Errno,
    /// What the persist step said, for [`Errno::Io`].
    pub detail: Option<String>,
}
