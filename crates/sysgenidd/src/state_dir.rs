//! The state directory, trusted only when it is the daemon's own: opened once, locked against a
//! second daemon, and every file in it reached relative to it without following links.
//!
//! Rules, checked at start:
//! - the directory and every entry in it belong to the daemon's uid;
//! - no one else may write the directory or a regular file in it (the control socket is the one
//!   entry everyone may write: that is how they connect);
//! - no entry is a symbolic link;
//! - one daemon at a time: an exclusive `flock` on the directory, which the kernel drops when its
//!   holder dies, with the holder's pid written in `<dir>/lock` for the error message.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The lock file's name inside the state directory.
pub const LOCK_FILE_NAME: &str = "lock";

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// A file system call failed.
    #[error("state directory {}: {source}", path.display())]
    Io {
        /// The directory or entry.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The directory or an entry in it belongs to another user.
    #[error(
        "{} belongs to uid {owner}, and sysgenidd (uid {ours}) trusts only a state directory \
         and files of its own: anyone who owns them could forge or roll back the generation; \
         remove it, or pass another --state-dir",
        path.display()
    )]
    NotOurs {
        /// The directory or entry.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's uid.
        ours: u32,
    },
    /// Someone else may write the directory or a file in it.
    #[error(
        "{} is writable by others (mode {mode:04o}): they could forge or roll back the \
         generation; run `chmod go-w` on it, or pass another --state-dir",
        path.display()
    )]
    WritableByOthers {
        /// The directory or entry.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// An entry is a symbolic link, or the directory path itself ends in one.
    #[error(
        "{} is a symbolic link: sysgenidd follows none in its state directory; remove it",
        path.display()
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Another daemon holds the lock.
    #[error(
        "state directory {} is in use by another sysgenidd{}: two daemons on one state \
         directory would hand out the same generations; stop it first, or pass another \
         --state-dir",
        path.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        /// The directory.
        path: PathBuf,
        /// The holder's pid, as it wrote it.
        holder: Option<u32>,
    },
}

/// The opened, checked and locked state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// Also holds the daemon's lock (an exclusive `flock`), which the kernel drops with it.
    dir: OwnedFd,
}

impl StateDir {
    /// Opens `path` (creating it, mode 0755, if missing), checks that it and its entries are
    /// the daemon's own, and takes the lock.
    pub fn open(path: &Path) -> Result<StateDir, StateDirError> {
        let io_err = |source: io::Error| StateDirError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::DirBuilder::new().mode(0o755).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(e)),
        }
        let dir = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR if is_symlink(path) => {
                StateDirError::Symlink {
                    path: path.to_owned(),
                }
            }
            e => io_err(e.into()),
        })?;
        let stat = rustix::fs::fstat(&dir).map_err(|e| io_err(e.into()))?;
        check_owner_and_mode(path, stat.st_uid, stat.st_mode)?;
        take_lock(path, &dir)?;
        let state_dir = StateDir {
            path: path.to_owned(),
            dir,
        };
        state_dir.check_entries()?;
        Ok(state_dir)
    }

    /// [`StateDir::open`], retried while another daemon holds the lock, for up to `limit`.
    pub fn open_waiting(
        path: &Path,
        limit: std::time::Duration,
    ) -> Result<StateDir, StateDirError> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match StateDir::open(path) {
                Err(StateDirError::InUse { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// The directory's path, for messages and for clients.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of an entry, for messages.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Checks every entry: the daemon's own, not a link, and (but for sockets) not writable by
    /// others.
    fn check_entries(&self) -> Result<(), StateDirError> {
        let io_err = |source: io::Error| StateDirError::Io {
            path: self.path.clone(),
            source,
        };
        let dup = rustix::io::fcntl_dupfd_cloexec(&self.dir, 0).map_err(|e| io_err(e.into()))?;
        let entries = rustix::fs::Dir::new(dup).map_err(|e| io_err(e.into()))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err(e.into()))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let path = self.path.join(OsStr::from_bytes(name));
            let stat = rustix::fs::statat(&self.dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| StateDirError::Io {
                    path: path.clone(),
                    source: e.into(),
                })?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Symlink => return Err(StateDirError::Symlink { path }),
                FileType::Socket => check_owner_and_mode(&path, stat.st_uid, 0)?,
                _ => check_owner_and_mode(&path, stat.st_uid, stat.st_mode)?,
            }
        }
        Ok(())
    }

    /// Opens an entry without following a link; `O_CLOEXEC` and `O_NOFOLLOW` are added.
    pub fn open_at(&self, name: &str, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            &self.dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?)
    }

    /// The whole content of an entry, or `None` if it does not exist.
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match self.open_at(name, OFlags::RDONLY, 0) {
            Ok(fd) => {
                let mut bytes = Vec::new();
                File::from(fd).read_to_end(&mut bytes)?;
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces an entry whole: writes `<name>.tmp` (created anew, never through a link), then
    /// renames it over `name`.
    pub fn replace(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        let tmp = format!("{name}.tmp");
        self.remove(&tmp)?;
        let fd = self.open_at(&tmp, OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, mode)?;
        let mut file = File::from(fd);
        let written = file
            .write_all(bytes)
            .and_then(|()| rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(Into::into))
            .and_then(|()| {
                rustix::fs::renameat(&self.dir, tmp.as_str(), &self.dir, name).map_err(Into::into)
            });
        if written.is_err() {
            let _ = self.remove(&tmp);
        }
        written
    }

    /// Removes an entry; a missing one is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.dir, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for StateDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn check_owner_and_mode(path: &Path, owner: u32, mode: u32) -> Result<(), StateDirError> {
    let ours = rustix::process::geteuid().as_raw();
    if owner != ours {
        return Err(StateDirError::NotOurs {
            path: path.to_owned(),
            owner,
            ours,
        });
    }
    if mode & 0o022 != 0 {
        return Err(StateDirError::WritableByOthers {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Takes the exclusive lock on the directory itself and writes our pid in `<dir>/lock` for the
/// next daemon's message, or names the holder. The lock needs no write access, so a read-only
/// state directory can still be served (degraded); the pid file is then left as it is.
fn take_lock(path: &Path, dir: &OwnedFd) -> Result<(), StateDirError> {
    let lock_path = path.join(LOCK_FILE_NAME);
    match rustix::fs::flock(dir, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = rustix::fs::openat(
                dir,
                LOCK_FILE_NAME,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
            .and_then(|fd| {
                let mut text = String::new();
                File::from(fd).read_to_string(&mut text).ok()?;
                text.trim().parse().ok()
            });
            return Err(StateDirError::InUse {
                path: path.to_owned(),
                holder,
            });
        }
        Err(e) => {
            return Err(StateDirError::Io {
                path: path.to_owned(),
                source: e.into(),
            });
        }
    }
    let written = rustix::fs::openat(
        dir,
        LOCK_FILE_NAME,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(io::Error::from)
    .and_then(|fd| {
        File::from(fd).write_all(format!("{}\n", crate::keeper::service_pid()).as_bytes())
    });
    if let Err(e) = written {
        tracing::warn!(path = %lock_path.display(), error = %e, "cannot write the pid file");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fresh() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        (tmp, path)
    }

    #[test]
    fn creates_locks_and_names_the_holder_to_a_second_daemon() {
        let (_tmp, path) = fresh();
        let first = StateDir::open(&path).unwrap();
        let err = StateDir::open(&path).unwrap_err();
        match &err {
            StateDirError::InUse { holder, .. } => assert_eq!(*holder, Some(std::process::id())),
            other => panic!("{other}"),
        }
        assert!(
            err.to_string()
                .contains("in use by another sysgenidd (pid "),
            "{err}"
        );
        drop(first);
        StateDir::open(&path).expect("the lock goes with its holder");
    }

    #[test]
    fn a_directory_writable_by_others_is_refused() {
        let (_tmp, path) = fresh();
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StateDir::open(&path).unwrap_err();
        assert!(
            matches!(err, StateDirError::WritableByOthers { mode: 0o777, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_planted_link_or_writable_file_is_refused() {
        let (_tmp, path) = fresh();
        drop(StateDir::open(&path).unwrap());
        std::os::unix::fs::symlink("/etc/passwd", path.join("state.tmp")).unwrap();
        let err = StateDir::open(&path).unwrap_err();
        assert!(matches!(err, StateDirError::Symlink { .. }), "{err}");
        std::fs::remove_file(path.join("state.tmp")).unwrap();
        std::fs::write(path.join("state"), "x").unwrap();
        std::fs::set_permissions(path.join("state"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let err = StateDir::open(&path).unwrap_err();
        assert!(
            matches!(err, StateDirError::WritableByOthers { .. }),
            "{err}"
        );
    }

    #[test]
    fn the_directory_itself_may_not_be_a_link() {
        let (tmp, path) = fresh();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        let err = StateDir::open(&path).unwrap_err();
        assert!(matches!(err, StateDirError::Symlink { .. }), "{err}");
    }

    #[test]
    fn replace_never_writes_through_a_link() {
        let (tmp, path) = fresh();
        let dir = StateDir::open(&path).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, path.join("record.tmp")).unwrap();
        dir.replace("record", b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(dir.read("record").unwrap().as_deref(), Some(&b"new"[..]));
        std::os::unix::fs::symlink(&victim, path.join("link")).unwrap();
        assert!(dir.read("link").is_err(), "reads follow no link either");
    }
}
