//! The device path: made ready to mount on (stale mounts replaced, live ones refused), then mounted.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sysgenid_fuse::{Channel, Mount, MountOptions, MountState};

/// Errors preparing the device path.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Another daemon serves the path.
    #[error(
        "{} is already served by a live FUSE mount ({fstype}): another sysgenidd is running; \
         stop it first",
        path.display()
    )]
    Live {
        /// The device path.
        path: std::path::PathBuf,
        /// The mount's file system type.
        fstype: String,
    },
    /// Something other than FUSE is mounted there.
    #[error("{} has a {fstype} mount on it; refusing to mount over it", path.display())]
    Foreign {
        /// The device path.
        path: std::path::PathBuf,
        /// The mount's file system type.
        fstype: String,
    },
    /// The path exists and is not a regular file.
    #[error("{} exists and is not a regular file", path.display())]
    NotAFile {
        /// The device path.
        path: std::path::PathBuf,
    },
    /// The directory that should hold the device's directory does not exist.
    #[error("{} does not exist: create the directory that holds the device first", dir.display())]
    NoDirectory {
        /// The missing directory.
        dir: std::path::PathBuf,
    },
    /// A file system call failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Probing or unmounting failed.
    #[error(transparent)]
    Mount(#[from] sysgenid_fuse::MountError),
}

/// Makes `path` ready to mount on: replaces a stale mount, refuses a live one, and leaves a
/// regular file that no one else can read, so that a namespace without the mount never finds a
/// readable empty file there: mode 0000 as root, 0600 otherwise (`fusermount3` needs the owner
/// to be able to open its mountpoint).
///
/// Returns whether it made the file, so a clean stop removes it again.
pub fn prepare_device_path(path: &Path) -> Result<bool, PrepareError> {
    let mode = if rustix::process::geteuid().is_root() {
        0o000
    } else {
        0o600
    };
    let io = |source| PrepareError::Io {
        path: path.to_owned(),
        source,
    };
    // Ask the mount table, not stat: a stale mount can answer stat with ENOTCONN.
    let parent_exists = path
        .parent()
        .is_none_or(|p| p.as_os_str().is_empty() || p.exists());
    if parent_exists {
        match sysgenid_fuse::mount_state(path)? {
            MountState::NotMounted => {}
            state @ MountState::Stale { .. } => {
                tracing::warn!(path = %path.display(), ?state, "replacing a stale mount left by a dead daemon");
                sysgenid_fuse::unmount(path, true)?;
            }
            MountState::Live { fstype } if fstype.starts_with("fuse") => {
                return Err(PrepareError::Live {
                    path: path.to_owned(),
                    fstype,
                });
            }
            MountState::Live { fstype } => {
                return Err(PrepareError::Foreign {
                    path: path.to_owned(),
                    fstype,
                });
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map(|()| false)
                .map_err(io)
        }
        Ok(_) => Err(PrepareError::NotAFile {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            make_directory(path)?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)
                .map(|_| true)
                .map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// Makes the directory of `path` if it is missing, one level only (the per-user default
/// `$XDG_RUNTIME_DIR/sysgenid`); a path whose parent directory is missing too is refused.
fn make_directory(path: &Path) -> Result<(), PrepareError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PrepareError::NoDirectory {
            dir: dir.parent().unwrap_or(dir).to_owned(),
        }),
        Err(source) => Err(PrepareError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Removes the mountpoint file after the unmount if this daemon made it, so nothing that looks
/// like a device (an empty file) stays behind; a file someone else made is left alone.
pub fn remove_if_made(path: &Path, made: bool) {
    let still_ours = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
    if made
        && still_ours
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the mountpoint file");
    }
}

/// Mounts the device: directly as root, through `fusermount3` otherwise.
pub fn mount_device(path: &Path) -> Result<(Mount, Channel), MountDeviceError> {
    if !rustix::process::geteuid().is_root() {
        check_user_mount(Path::new(sysgenid_fuse::DEV_FUSE))?;
    }
    Ok(mount_as_configured(path)?)
}

/// Why the device could not be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountDeviceError {
    /// A mount without root needs `/dev/fuse` open to the user.
    #[error(
        "mounting without root needs {} readable and writable by this user, and it is not \
         (mode {mode:04o}; Debian ships it 0666): fix its mode, or run sysgenidd as root",
        path.display()
    )]
    DevFuseNotOpen {
        /// The device node.
        path: std::path::PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Mounting failed.
    #[error(transparent)]
    Mount(#[from] sysgenid_fuse::MountError),
}

fn check_user_mount(dev_fuse: &Path) -> Result<(), MountDeviceError> {
    use rustix::fs::Access;
    match rustix::fs::access(dev_fuse, Access::READ_OK | Access::WRITE_OK) {
        Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => {
            let mode = std::fs::metadata(dev_fuse).map(|m| m.permissions().mode() & 0o7777);
            Err(MountDeviceError::DevFuseNotOpen {
                path: dev_fuse.to_owned(),
                mode: mode.unwrap_or(0),
            })
        }
        // A missing node or any other problem is reported by the mount itself.
        _ => Ok(()),
    }
}

fn mount_as_configured(path: &Path) -> Result<(Mount, Channel), sysgenid_fuse::MountError> {
    let options = MountOptions {
        allow_other: rustix::process::geteuid().is_root(),
        default_permissions: true,
        ..MountOptions::default()
    };
    sysgenid_fuse::mount(path, &options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_missing_directory_level_is_made_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("sysgenid/device");
        assert!(prepare_device_path(&device).unwrap(), "made the file");
        assert!(device.is_file());
        let deep = dir.path().join("a/b/device");
        let err = prepare_device_path(&deep).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{} does not exist",
                dir.path().join("a").display()
            )),
            "{err}"
        );
        assert!(!dir.path().join("a").exists(), "nothing made");
    }
}
