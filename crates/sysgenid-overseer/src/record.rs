//! The record pre-snapshot leaves for post-restore: the generation the snapshot holds.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sysgenid::Paths;

use crate::Error;

/// The record's file name in the state directory.
pub const RECORD_NAME: &str = "overseer.json";

/// What pre-snapshot records: the generation the snapshot will hold.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) generation: u32,
    /// Seconds since the epoch, for people reading the file.
    quiesced_at: u64,
    pid: u32,
}

/// The record's path: `explicit`, or [`RECORD_NAME`] in the state directory.
pub(crate) fn record_path(paths: &Paths, explicit: &Option<PathBuf>) -> PathBuf {
    explicit
        .clone()
        .unwrap_or_else(|| paths.state_dir().join(RECORD_NAME))
}

/// Checks that the record can be written: its directory exists and this user may create files
/// in it.
pub(crate) fn check_record_dir(path: &Path) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let access = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
    rustix::fs::access(dir, access).map_err(|e| Error::WriteRecord {
        path: path.to_owned(),
        source: e.into(),
    })
}

/// Writes the record whole (a temporary file renamed over it), readable by everyone.
pub(crate) fn write_record(path: &Path, generation: u32) -> Result<(), Error> {
    let record = Record {
        generation,
        quiesced_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        pid: std::process::id(),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        let text = serde_json::to_string(&record).map_err(io::Error::other)?;
        writeln!(file, "{text}")?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::WriteRecord {
            path: path.to_owned(),
            source,
        }
    })
}

/// The record, if there is one. It decides whether the generation is bumped, so it must be
/// ours and writable by no one else.
pub(crate) fn read_record(path: &Path) -> Result<Option<Record>, Error> {
    let unreadable = |source: io::Error| Error::ReadRecord {
        path: path.to_owned(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let meta = file.metadata().map_err(unreadable)?;
    if meta.uid() != rustix::process::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(Error::UntrustedRecord {
            path: path.to_owned(),
        });
    }
    serde_json::from_reader(file)
        .map(Some)
        .map_err(|source| Error::NotARecord {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_record_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_NAME);
        assert!(read_record(&path).unwrap().is_none());
        write_record(&path, 41).unwrap();
        assert_eq!(read_record(&path).unwrap().unwrap().generation, 41);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_record_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_NAME);
        write_record(&path, 41).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_record(&path).unwrap_err().to_string();
        assert!(e.contains("writable by no one else"), "{e}");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_record(&path).unwrap_err().to_string();
        assert!(e.contains("not a record"), "{e}");
    }
}
