//! The persisted counter: `<state-dir>/state`, tied to the boot it was written in.
//!
//! A daemon restart on the same boot continues from the persisted value, so the generation
//! never goes backwards; a new boot starts from 0, as the driver did (the daemon still never
//! publishes less than an existing page file shows).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File name of the persisted counter inside the state directory.
pub const STATE_FILE_NAME: &str = "state";
const HEADER: &str = "sysgenid-state 1";
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Errors of the persisted counter.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The state file is damaged; starting anyway could move the counter backwards.
    #[error(
        "{} is not a sysgenid state file ({why}); the counter must not go backwards, so \
         sysgenidd will not guess: restore the file, or remove it if this is a fresh boot",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A new generation could not be made durable.
    #[error("cannot persist generation {generation} to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The value that was not persisted.
        generation: u32,
        /// Why.
        source: io::Error,
    },
}

/// Where the counter is persisted, and which boot it belongs to.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    boot_id: String,
}

/// What was found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No state file: a fresh start at 0.
    Fresh,
    /// A state file from an earlier boot: a fresh start at 0.
    OtherBoot {
        /// The boot it was written in.
        boot_id: String,
    },
    /// The value persisted on this boot.
    Continued(u32),
}

impl Loaded {
    /// The generation to start from.
    pub fn generation(&self) -> u32 {
        match self {
            Loaded::Continued(g) => *g,
            Loaded::Fresh | Loaded::OtherBoot { .. } => 0,
        }
    }
}

impl StateFile {
    /// The state file in `state_dir`, for the running boot.
    pub fn new(state_dir: &Path) -> io::Result<StateFile> {
        let boot_id = fs::read_to_string(BOOT_ID_PATH)?.trim().to_owned();
        Ok(StateFile::with_boot_id(state_dir, boot_id))
    }

    /// The state file in `state_dir`, for a given boot id.
    pub fn with_boot_id(state_dir: &Path, boot_id: String) -> StateFile {
        StateFile {
            path: state_dir.join(STATE_FILE_NAME),
            boot_id,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the persisted counter.
    pub fn load(&self) -> Result<Loaded, StateError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Fresh),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let corrupt = |why: &str| StateError::Corrupt {
            path: self.path.clone(),
            why: why.to_owned(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(corrupt("no header"));
        }
        let mut boot_id = None;
        let mut generation = None;
        for line in lines {
            match line.split_once('=') {
                Some(("boot_id", v)) => boot_id = Some(v.to_owned()),
                Some(("generation", v)) => {
                    generation = Some(v.parse::<u32>().map_err(|_| corrupt("bad generation"))?)
                }
                _ => return Err(corrupt("unknown line")),
            }
        }
        let boot_id = boot_id.ok_or_else(|| corrupt("no boot_id"))?;
        let generation = generation.ok_or_else(|| corrupt("no generation"))?;
        if boot_id != self.boot_id {
            return Ok(Loaded::OtherBoot { boot_id });
        }
        Ok(Loaded::Continued(generation))
    }

    /// Makes `generation` durable: write a temporary file, sync it, rename it over the old one.
    pub fn persist(&self, generation: u32) -> Result<(), StateError> {
        let tmp = self.path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            write!(
                file,
                "{HEADER}\nboot_id={}\ngeneration={generation}\n",
                self.boot_id
            )?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StateError::Write {
                path: self.path.clone(),
                generation,
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dir: &Path, boot: &str) -> StateFile {
        StateFile::with_boot_id(dir, boot.to_owned())
    }

    #[test]
    fn missing_file_is_a_fresh_start_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(state(dir.path(), "a").load().unwrap(), Loaded::Fresh);
    }

    #[test]
    fn same_boot_continues_other_boot_starts_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        state(dir.path(), "a").persist(41).unwrap();
        state(dir.path(), "a").persist(42).unwrap();
        assert_eq!(
            state(dir.path(), "a").load().unwrap(),
            Loaded::Continued(42)
        );
        let other = state(dir.path(), "b").load().unwrap();
        assert_eq!(
            other,
            Loaded::OtherBoot {
                boot_id: "a".into()
            }
        );
        assert_eq!(other.generation(), 0);
        assert!(!dir.path().join("state.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_refused_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "",
            "garbage",
            "sysgenid-state 1\nboot_id=a\n",
            "sysgenid-state 1\nboot_id=a\ngeneration=-1\n",
            "sysgenid-state 1\nboot_id=a\ngeneration=4294967296\n",
        ] {
            fs::write(dir.path().join(STATE_FILE_NAME), text).unwrap();
            let err = state(dir.path(), "a").load().unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "{text:?}: {err}");
            assert!(err.to_string().contains("will not guess"));
        }
    }

    #[test]
    fn failed_persist_reports_the_value_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path(), "a");
        s.persist(7).unwrap();
        // A directory in the way of the temporary file makes the write fail.
        fs::create_dir(dir.path().join("state.tmp")).unwrap();
        let err = s.persist(8).unwrap_err();
        assert!(
            matches!(err, StateError::Write { generation: 8, .. }),
            "{err}"
        );
        assert_eq!(s.load().unwrap(), Loaded::Continued(7));
    }
}
