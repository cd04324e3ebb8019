//! Whom a client trusts: root and its own user (effective uid). The page file and its
//! directory, the daemon listening on the control socket and the FUSE mount serving the device
//! must belong to one of them, and the page file must be one regular page that no one else may
//! write. Whoever else controls one of them could make a client read a forged generation or a
//! forged bump.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use rustix::fs::{FileType, Stat};
use sysgenid_abi::PAGE_SIZE;

/// Why a client refuses a file or a daemon; part of [`Error::Untrusted`](crate::Error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Distrust {
    /// The page file or its directory belongs to another user.
    #[error(
        "it belongs to uid {owner}, and this process trusts only root and its own user \
         (uid {ours})"
    )]
    Owner {
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        ours: u32,
    },
    /// The group or others may write the page file or its directory.
    #[error("the group or others may write it (mode {mode:04o})")]
    Writable {
        /// Its mode bits.
        mode: u32,
    },
    /// The page file is a link, a pipe, a device or a directory.
    #[error("it is not a regular file (a link, a pipe or a device)")]
    NotRegular,
    /// The page file is not exactly one page.
    #[error("it holds {len} bytes, not exactly one page of {PAGE_SIZE}")]
    Size {
        /// Its length.
        len: u64,
    },
    /// The process listening on the control socket runs as another user.
    #[error(
        "the process listening on it runs as uid {uid}, and this process trusts only a daemon \
         of root or of its own user (uid {ours})"
    )]
    Listener {
        /// The listener's effective uid when it started listening (`SO_PEERCRED`).
        uid: u32,
        /// This process's effective uid.
        ours: u32,
    },
    /// The FUSE file system serving the device was mounted by another user.
    #[error(
        "the FUSE file system serving it was mounted by uid {uid}, and this process trusts \
         only root's or its own user's (uid {ours})"
    )]
    Mounter {
        /// The mount's `user_id`.
        uid: u32,
        /// This process's effective uid.
        ours: u32,
    },
}

/// This process's effective uid.
fn ours() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether `uid` is root or this process's own user.
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == ours()
}

/// A directory or file that root or this user owns and that neither group nor others may
/// write.
pub(crate) fn check_owned(stat: &Stat) -> Result<(), Distrust> {
    if !trusted(stat.st_uid) {
        return Err(Distrust::Owner {
            owner: stat.st_uid,
            ours: ours(),
        });
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Distrust::Writable { mode });
    }
    Ok(())
}

/// A page file: regular, owned as [`check_owned`] says, exactly one page.
pub(crate) fn check_page(stat: &Stat) -> Result<(), Distrust> {
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(Distrust::NotRegular);
    }
    check_owned(stat)?;
    let len = u64::try_from(stat.st_size).unwrap_or(0);
    if len != PAGE_SIZE as u64 {
        return Err(Distrust::Size { len });
    }
    Ok(())
}

/// The process listening at the other end of a connected control socket: root or this user.
pub(crate) fn check_listener(socket: impl AsFd) -> io::Result<Result<(), Distrust>> {
    let uid = peer_uid(socket)?;
    if trusted(uid) {
        return Ok(Ok(()));
    }
    Ok(Err(Distrust::Listener { uid, ours: ours() }))
}

/// The effective uid of the process at the other end of `socket` (`SO_PEERCRED`; for a
/// connected client, the listener's when it called `listen`).
fn peer_uid(socket: impl AsFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable `ucred` of `len` bytes that outlives the call, and the
    // kernel writes at most `len` bytes to it; the descriptor is valid for the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The FUSE file system of a device (`stat` of it): mounted by root or this user, as its
/// `user_id` in `/proc/self/mountinfo` says. Where mountinfo cannot be read or does not name
/// an owner, nothing is checked.
pub(crate) fn check_mounter(stat: &Stat) -> Result<(), Distrust> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let dev = format!(
        "{}:{}",
        rustix::fs::major(stat.st_dev),
        rustix::fs::minor(stat.st_dev)
    );
    match mount_owner(&mountinfo, &dev) {
        Some(uid) if !trusted(uid) => Err(Distrust::Mounter { uid, ours: ours() }),
        _ => Ok(()),
    }
}

/// The `user_id` option of the mount of device `dev` (`major:minor`) in mountinfo text.
fn mount_owner(mountinfo: &str, dev: &str) -> Option<u32> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if mount.split(' ').nth(2)? != dev {
            return None;
        }
        let options = fs.split(' ').nth(2)?;
        let uid = options
            .split(',')
            .find_map(|o| o.strip_prefix("user_id="))?;
        uid.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
40 36 0:45 / /tmp/a/device rw,nosuid,nodev,relatime - fuse.sysgenid sysgenid rw,user_id=65534,group_id=65534
41 36 0:46 / /dev/sysgenid rw,nosuid,nodev,relatime - fuse.sysgenid sysgenid rw,user_id=0,group_id=0,allow_other
";

    #[test]
    fn the_mount_owner_is_found_by_device_number() {
        assert_eq!(mount_owner(MOUNTINFO, "0:45"), Some(65534));
        assert_eq!(mount_owner(MOUNTINFO, "0:46"), Some(0));
        assert_eq!(mount_owner(MOUNTINFO, "0:21"), None, "no user_id");
        assert_eq!(mount_owner(MOUNTINFO, "0:99"), None, "not mounted");
    }

    #[test]
    fn the_listener_of_a_socket_pair_is_this_process_and_trusted() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), ours());
        assert_eq!(check_listener(&a).unwrap(), Ok(()));
    }

    #[test]
    fn refusals_name_the_uids() {
        let owner = Distrust::Owner {
            owner: 65534,
            ours: 1000,
        };
        assert!(owner.to_string().contains("uid 65534") && owner.to_string().contains("1000"));
        let mode = Distrust::Writable { mode: 0o666 }.to_string();
        assert!(mode.contains("mode 0666"), "{mode}");
    }
}
