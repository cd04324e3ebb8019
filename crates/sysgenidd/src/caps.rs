//! Whether the calling thread of a request may trigger a bump.
//!
//! The rule: `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN` in the caller's effective set, and the
//! caller's user namespace is the daemon's own or one of its ancestors. A process that made its
//! own user namespace (`unshare -Ur`) holds every capability there, but that namespace is a
//! descendant of the daemon's, so it is refused.
//!
//! A trigger's caller is judged with `capget(2)` on its thread (one system call, no `/proc` text),
//! and only a caller holding a capability then costs the look-up of its user namespace.
//!
//! Pid reuse: FUSE gives the calling thread's id. A caller blocked in a FUSE request that the
//! daemon has read cannot finish exiting until the daemon answers: once a request has been read,
//! the kernel waits for its answer without regard to signals, SIGKILL included
//! (`request_wait_answer` in `fs/fuse/dev.c`). So that thread id names the caller for the whole
//! check, and nothing needs pinning it.
//!
//! The control socket's `trigger-if` is judged by the same rule, for the peer process
//! (`SO_PEERCRED`; capabilities of its main thread). The peer is pinned with the pidfd the kernel
//! took at `connect` (`SO_PEERPIDFD`, Linux 6.5+), else with a pidfd opened when the request
//! arrives; it is refused if it has exited by the end of the check.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, pidfd_open};

/// `CAP_SYS_ADMIN`.
pub const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_CHECKPOINT_RESTORE`.
pub const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// A user namespace, by its inode number: every namespace is an inode of the one `nsfs` file
/// system, so the number alone names it. `readlink` of a `/proc/*/ns/user` link shows it as
/// `user:[N]` without the path walk and inode set-up that a `stat` through the link costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserNs {
    ino: u64,
}

impl UserNs {
    fn of(path: &str) -> io::Result<UserNs> {
        let link = fs::read_link(path)?;
        parse_user_ns_link(&link.to_string_lossy())
            .map(|ino| UserNs { ino })
            .ok_or_else(|| io::Error::other(format!("{path} is not a user namespace: {link:?}")))
    }
}

/// The inode number of a `user:[N]` namespace link.
fn parse_user_ns_link(link: &str) -> Option<u64> {
    link.strip_prefix("user:[")?.strip_suffix(']')?.parse().ok()
}

/// Judges trigger callers against the daemon's user namespace and its ancestors.
#[derive(Debug)]
pub struct TriggerPolicy {
    /// The daemon's own user namespace first, then each parent up to the one it can see last.
    trusted: Vec<UserNs>,
}

impl TriggerPolicy {
    /// The policy for the running daemon.
    pub fn for_this_process() -> io::Result<TriggerPolicy> {
        let own = UserNs::of("/proc/self/ns/user")?;
        let mut trusted = vec![own];
        trusted.extend(ancestors_of_own_user_ns());
        Ok(TriggerPolicy { trusted })
    }

    /// Whether thread `tid` may trigger a bump. Any error reading its state means no.
    pub fn may_trigger(&self, tid: u32) -> bool {
        match self.check(tid) {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::debug!(tid, error = %e, "cannot judge trigger caller; refusing");
                false
            }
        }
    }

    /// Whether the process at the other end of a control connection may trigger a bump.
    ///
    /// Unlike an ioctl caller, a socket peer is not blocked while it is judged: it may have
    /// exec'd a setuid or file-capability program since it connected (or handed the socket to
    /// a child and then done so). So besides the capability rule, its credentials now must be
    /// those it connected with (every uid and gid of `/proc/PID/status` equal to
    /// `SO_PEERCRED`'s), it must still own its `/proc/PID` (an exec that gains privileges
    /// makes a process non-dumpable, and `/proc/PID` then belongs to root), and a non-root
    /// peer must hold the capability as an ambient one.
    pub fn may_trigger_peer(&self, peer: &Peer) -> bool {
        match self.check_peer(peer) {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::debug!(pid = peer.pid, error = %e, "cannot judge control peer; refusing");
                false
            }
        }
    }

    fn check_peer(&self, peer: &Peer) -> io::Result<bool> {
        let ns = UserNs::of(&format!("/proc/{}/ns/user", peer.pid))?;
        let status = fs::read_to_string(format!("/proc/{}/status", peer.pid))?;
        let cap_eff = parse_cap_eff(&status).ok_or_else(|| io::Error::other("no CapEff"))?;
        let cap_amb = parse_cap(&status, "CapAmb:").unwrap_or(0);
        let unchanged = same_ids(&status, "Uid:", peer.uid) && same_ids(&status, "Gid:", peer.gid);
        // After the status read: an exec that had already gained privileges shows here.
        let owner = fs::metadata(format!("/proc/{}", peer.pid))?.uid();
        if let Some(pidfd) = &peer.pidfd
            && thread_has_exited(pidfd)?
        {
            return Ok(false);
        }
        if !unchanged || owner != peer.uid {
            tracing::info!(
                pid = peer.pid,
                uid = peer.uid,
                owner,
                "control peer's credentials changed since it connected (an exec?); refusing"
            );
            return Ok(false);
        }
        // A non-root peer's capability must be ambient: an exec of a setuid or file-capability
        // program clears the ambient set, even where it leaves the process dumpable
        // (fs.suid_dumpable, or the program re-enabling it).
        let held = if peer.uid == 0 {
            cap_eff
        } else {
            cap_eff & cap_amb
        };
        Ok(self.trusted.contains(&ns) && has_trigger_capability(held))
    }

    /// Judges thread `tid`: its effective capabilities first, its user namespace only if they
    /// would allow a trigger.
    fn check(&self, tid: u32) -> io::Result<bool> {
        let pid = Pid::from_raw(tid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
        let caps = rustix::thread::capabilities(Some(pid))?;
        if !has_trigger_capability(caps.effective.bits()) {
            return Ok(false);
        }
        let ns = UserNs::of(&format!("/proc/{tid}/ns/user"))?;
        Ok(self.trusted.contains(&ns))
    }
}

/// The process at the other end of a connected Unix socket.
#[derive(Debug)]
pub struct Peer {
    /// Its process id, in the daemon's pid namespace.
    pub pid: u32,
    /// Its user id when it connected, in the daemon's user namespace.
    pub uid: u32,
    /// Its group id when it connected.
    pub gid: u32,
    /// A pidfd that pins it, where the kernel gives one.
    pidfd: Option<OwnedFd>,
}

impl Peer {
    /// The peer of `socket`, pinned by the pidfd the kernel took at `connect` (Linux 6.5+) or,
    /// on older kernels, by one opened now.
    pub fn of(socket: BorrowedFd<'_>) -> io::Result<Peer> {
        let cred: libc::ucred = getsockopt(socket, libc::SO_PEERCRED)?;
        let pid = u32::try_from(cred.pid)
            .ok()
            .filter(|&pid| pid != 0)
            .ok_or_else(|| io::Error::other("the peer is outside the daemon's pid namespace"))?;
        let pidfd = match getsockopt::<libc::c_int>(socket, libc::SO_PEERPIDFD) {
            // SAFETY: SO_PEERPIDFD returned a new file descriptor that nothing else owns.
            Ok(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                let raw = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
                Some(pidfd_open(raw, PidfdFlags::empty())?)
            }
            Err(e) => return Err(e),
        };
        Ok(Peer {
            pid,
            uid: cred.uid,
            gid: cred.gid,
            pidfd,
        })
    }
}

/// The user id the process at the other end of `socket` had when it connected (`SO_PEERCRED`),
/// in the daemon's user namespace; known even where its pid is not.
pub fn peer_uid(socket: BorrowedFd<'_>) -> io::Result<u32> {
    let cred: libc::ucred = getsockopt(socket, libc::SO_PEERCRED)?;
    Ok(cred.uid)
}

/// `getsockopt(SOL_SOCKET, name)` for an option whose value is a plain `T`.
fn getsockopt<T: Copy>(socket: BorrowedFd<'_>, name: libc::c_int) -> io::Result<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a writable buffer of `len` bytes that outlives the call, and the
    // kernel writes at most `len` bytes to it; `socket` is a valid descriptor.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            value.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<T>() {
        return Err(io::Error::other(
            "getsockopt returned a value of another size",
        ));
    }
    // SAFETY: the buffer was zeroed and the kernel filled all of it; `T` is a plain C type
    // (`ucred`, `int`) for which any bytes are a valid value.
    Ok(unsafe { value.assume_init() })
}

/// Whether the pinned thread is gone: a pidfd turns readable when its thread exits.
fn thread_has_exited(pidfd: &OwnedFd) -> io::Result<bool> {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let ready = rustix::event::poll(&mut fds, Some(&Timespec::default()))?;
    Ok(ready > 0)
}

/// Whether an effective capability mask holds a capability that allows a trigger.
pub fn has_trigger_capability(cap_eff: u64) -> bool {
    cap_eff & (1 << CAP_SYS_ADMIN) != 0 || cap_eff & (1 << CAP_CHECKPOINT_RESTORE) != 0
}

/// Whether the real, effective, saved and filesystem ids of a `/proc/*/status` line (`Uid:` or
/// `Gid:`) are all `id`.
pub fn same_ids(status: &str, field: &str, id: u32) -> bool {
    let Some(ids) = status.lines().find_map(|l| l.strip_prefix(field)) else {
        return false;
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    ids.len() == 4 && ids.iter().all(|v| v.parse::<u32>() == Ok(id))
}

/// The `CapEff:` mask of a `/proc/*/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    parse_cap(status, "CapEff:")
}

/// A capability mask line (`CapEff:`, `CapAmb:`, ...) of a `/proc/*/status` text.
pub fn parse_cap(status: &str, field: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix(field))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The parents of the daemon's user namespace, nearest first, as far as it can see.
fn ancestors_of_own_user_ns() -> Vec<UserNs> {
    let mut out = Vec::new();
    let Ok(file) = fs::File::open("/proc/self/ns/user") else {
        return out;
    };
    let mut current = OwnedFd::from(file);
    while let Some(parent) = ns_get_parent(&current) {
        let Ok(st) = rustix::fs::fstat(&parent) else {
            break;
        };
        out.push(UserNs { ino: st.st_ino });
        current = parent;
    }
    out
}

/// `ioctl(NS_GET_PARENT)`: the parent namespace, or `None` at the top of what we may see.
fn ns_get_parent(ns: &OwnedFd) -> Option<OwnedFd> {
    const NS_GET_PARENT: libc::c_ulong = 0xB702;
    // SAFETY: NS_GET_PARENT takes no argument and returns a new fd or -1; `ns` is a valid fd.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the ioctl returned a new file descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambient_capabilities_are_parsed() {
        let status = "CapEff:\t0000010000000000\nCapAmb:\t0000010000000000\n";
        assert_eq!(
            parse_cap(status, "CapAmb:"),
            Some(1 << CAP_CHECKPOINT_RESTORE)
        );
        assert_eq!(parse_cap("CapEff:\t0\n", "CapAmb:"), None);
    }

    #[test]
    fn ids_must_all_match_the_connect_time_id() {
        let status = "Uid:\t1000\t1000\t1000\t1000\nGid:\t100\t100\t100\t100\n";
        assert!(same_ids(status, "Uid:", 1000));
        assert!(same_ids(status, "Gid:", 100));
        assert!(!same_ids(status, "Uid:", 0));
        // A setuid exec: the effective and saved ids changed.
        let setuid = "Uid:\t1000\t0\t0\t0\n";
        assert!(!same_ids(setuid, "Uid:", 1000));
        assert!(!same_ids(setuid, "Uid:", 0));
        assert!(!same_ids("Name:\tx\n", "Uid:", 0), "no line means no");
        assert!(
            !same_ids("Uid:\t0\t0\n", "Uid:", 0),
            "a short line means no"
        );
    }

    #[test]
    fn cap_eff_is_parsed_from_proc_status() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn either_capability_allows_a_trigger() {
        assert!(has_trigger_capability(1 << CAP_SYS_ADMIN));
        assert!(has_trigger_capability(1 << CAP_CHECKPOINT_RESTORE));
        assert!(!has_trigger_capability(0));
        assert!(!has_trigger_capability(
            !(1 << CAP_SYS_ADMIN | 1 << CAP_CHECKPOINT_RESTORE)
        ));
    }

    #[test]
    fn this_thread_as_root_may_trigger() {
        let policy = TriggerPolicy::for_this_process().unwrap();
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let cap_eff = parse_cap_eff(&fs::read_to_string("/proc/thread-self/status").unwrap());
        assert_eq!(
            policy.may_trigger(tid),
            has_trigger_capability(cap_eff.unwrap())
        );
    }

    #[test]
    fn the_peer_of_a_socket_pair_is_this_process_and_judged_like_a_thread() {
        use std::os::fd::AsFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let peer = Peer::of(a.as_fd()).unwrap();
        assert_eq!(peer.pid, std::process::id());
        assert!(peer.pidfd.is_some());
        let policy = TriggerPolicy::for_this_process().unwrap();
        let cap_eff = parse_cap_eff(&fs::read_to_string("/proc/self/status").unwrap());
        assert_eq!(
            policy.may_trigger_peer(&peer),
            has_trigger_capability(cap_eff.unwrap())
        );
    }

    #[test]
    fn a_user_namespace_link_names_its_inode() {
        assert_eq!(parse_user_ns_link("user:[4026531837]"), Some(4_026_531_837));
        assert_eq!(parse_user_ns_link("pid:[4026531837]"), None);
        assert_eq!(parse_user_ns_link("user:[x]"), None);
        let link = UserNs::of("/proc/self/ns/user").unwrap();
        let stat = fs::metadata("/proc/self/ns/user").unwrap();
        assert_eq!(link.ino, stat.ino(), "the link and stat through it agree");
    }

    #[test]
    fn a_missing_thread_may_not() {
        let policy = TriggerPolicy::for_this_process().unwrap();
        assert!(!policy.may_trigger(i32::MAX as u32));
    }
}
