//! What can go wrong in the overseer's steps, with messages that say what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::criu::CriuError;

/// An error of a step: the step did not reach its outcome.
///
/// Its `Debug` prints the message, as `Display` does, so that `main` returning it reads well.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client library failed: no daemon, the bump refused or failed, the wait failed.
    #[error(transparent)]
    Client(#[from] sysgenid::Error),
    /// A hooks directory cannot be read (or a directory named explicitly does not exist).
    #[error("hooks directory {}: {source}", dir.display())]
    HooksDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// post-restore with a trigger, but no generation to expect: no record and none given.
    #[error(
        "no generation to expect: {} does not exist; run `sysgenid overseer pre-snapshot` before \
         taking the snapshot, or pass --expect G",
        record.display()
    )]
    NoExpectedGeneration {
        /// Where the record was looked for.
        record: PathBuf,
    },
    /// The record exists but cannot be read.
    #[error("record {}: {source}", path.display())]
    ReadRecord {
        /// The record.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The record belongs to another user, or others may write it: it is not trusted.
    #[error(
        "record {}: refusing it: it must belong to this user and be writable by no one else",
        path.display()
    )]
    UntrustedRecord {
        /// The record.
        path: PathBuf,
    },
    /// The record is not what pre-snapshot writes.
    #[error("record {}: not a record of pre-snapshot: {source}", path.display())]
    NotARecord {
        /// The record.
        path: PathBuf,
        /// What is wrong with it.
        source: serde_json::Error,
    },
    /// pre-snapshot cannot write the record.
    #[error("cannot write the record {}: {source}", path.display())]
    WriteRecord {
        /// The record.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Waiting for a backend's bump failed.
    #[error("poll: {0}")]
    Poll(rustix::io::Errno),
    /// The thread waiting for the watchers ended without an answer.
    #[error("the wait for watchers ended abruptly")]
    WaitEnded,
    /// CRIU's action script failed.
    #[error(transparent)]
    Criu(#[from] CriuError),
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_the_message_not_the_fields() {
        let err = Error::NoExpectedGeneration {
            record: PathBuf::from("/run/sysgenid/overseer.json"),
        };
        assert_eq!(format!("{err:?}"), err.to_string());
        assert!(format!("{err:?}").contains("run `sysgenid overseer pre-snapshot`"));
    }
}
