//! The uevent backend: kernel `NEW_VMGENID=1` change events on the kobject uevent socket.
//!
//! Linux 6.8 made the vmgenid driver send `ACTION=change` with `NEW_VMGENID=1` on a restore;
//! later kernels dropped it again, so this backend hears nothing on most kernels. It binds a
//! `NETLINK_KOBJECT_UEVENT` socket to group 1, where the kernel broadcasts (udev rebroadcasts
//! on group 2, which is not joined).
//!
//! A message counts only if it comes from the kernel, judged by [`from_kernel`] on two facts:
//! the source address has `nl_pid == 0`, and the `SCM_CREDENTIALS` the kernel attaches (the
//! socket sets `SO_PASSCRED`) say pid 0 and uid 0. Both are needed: a process with
//! `CAP_SYS_ADMIN` may hand the kernel a uevent to rebroadcast, and the kernel then sends it
//! from port 0, but with the sender's pid in the credentials.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{BackendError, BackendKind};
use crate::inbox::{Completion, Inbox, Message};

/// The multicast group the kernel sends uevents to.
pub const KERNEL_GROUP: u32 = 1;
/// The kernel's `UEVENT_BUFFER_SIZE`: no kernel uevent is longer.
pub const MAX_UEVENT: usize = 2048;

/// Where a message came from, from its `sockaddr_nl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// `nl_pid`: 0 for the kernel, the port of a userspace sender otherwise.
    pub nl_pid: u32,
    /// `nl_groups`: the group it was sent to.
    pub nl_groups: u32,
}

/// The `SCM_CREDENTIALS` of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    /// Sender pid (0 for the kernel).
    pub pid: i32,
    /// Sender uid.
    pub uid: u32,
    /// Sender gid.
    pub gid: u32,
}

/// Why a message was not believed to come from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotKernel {
    /// The source address is missing or not netlink.
    #[error("no netlink source address")]
    NoAddress,
    /// A userspace port sent it.
    #[error("sent from userspace port {0}")]
    Port(u32),
    /// The credentials are missing.
    #[error("no credentials attached")]
    NoCreds,
    /// The credentials name a process or a non-root user.
    #[error("credentials pid {pid} uid {uid}, not the kernel's")]
    Creds {
        /// Their pid.
        pid: i32,
        /// Their uid.
        uid: u32,
    },
}

/// Whether a message with this source and these credentials comes from the kernel.
pub fn from_kernel(source: Option<Source>, creds: Option<Creds>) -> Result<(), NotKernel> {
    let source = source.ok_or(NotKernel::NoAddress)?;
    if source.nl_pid != 0 {
        return Err(NotKernel::Port(source.nl_pid));
    }
    let creds = creds.ok_or(NotKernel::NoCreds)?;
    if creds.pid != 0 || creds.uid != 0 {
        return Err(NotKernel::Creds {
            pid: creds.pid,
            uid: creds.uid,
        });
    }
    Ok(())
}

/// Why a payload is not a uevent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Longer than any kernel uevent.
    #[error("{0} bytes, longer than any kernel uevent")]
    Oversized(usize),
    /// A udev (libudev) message, not the kernel's format.
    #[error("a libudev message")]
    Udev,
    /// The first field is not `ACTION@DEVPATH`.
    #[error("no ACTION@DEVPATH header")]
    NoHeader,
    /// A field is not `KEY=VALUE`.
    #[error("field {0} is not KEY=VALUE")]
    Field(usize),
}

/// A parsed kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent<'a> {
    /// The `KEY=VALUE` fields after the header, in order.
    pub vars: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Uevent<'a> {
    /// The value of the first field named `key`.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.vars
            .iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| *v)
    }

    /// Whether this is the vmgenid driver's restore event.
    pub fn is_restore(&self) -> bool {
        self.get("ACTION") == Some(b"change") && self.get("NEW_VMGENID") == Some(b"1")
    }
}

/// Parses a kernel uevent: `ACTION@DEVPATH`, then `KEY=VALUE` fields, each ending in NUL.
pub fn parse(payload: &[u8]) -> Result<Uevent<'_>, ParseError> {
    if payload.len() > MAX_UEVENT {
        return Err(ParseError::Oversized(payload.len()));
    }
    if payload.starts_with(b"libudev\0") {
        return Err(ParseError::Udev);
    }
    let payload = payload.strip_suffix(b"\0").unwrap_or(payload);
    let mut fields = payload.split(|&b| b == 0);
    let header = fields.next().unwrap_or_default();
    if !header.contains(&b'@') || header.contains(&b'=') {
        return Err(ParseError::NoHeader);
    }
    let mut vars = Vec::new();
    for (i, field) in fields.enumerate() {
        let eq = field
            .iter()
            .position(|&b| b == b'=')
            .filter(|&p| p > 0)
            .ok_or(ParseError::Field(i + 1))?;
        vars.push((&field[..eq], &field[eq + 1..]));
    }
    Ok(Uevent { vars })
}

/// A bound uevent socket.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

/// One received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The payload (cut at the buffer size if `truncated`).
    pub payload: Vec<u8>,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
    /// The source address.
    pub source: Option<Source>,
    /// The attached credentials.
    pub creds: Option<Creds>,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: a valid socket and a pointer to an `int` with its size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before it is owned.
    let raw = check(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_KOBJECT_UEVENT,
        )
    })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn address(pid: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_pid = pid;
    addr.nl_groups = groups;
    addr
}

impl Socket {
    /// Opens a uevent socket bound to the kernel's group, with credentials passed.
    pub fn bind() -> io::Result<Socket> {
        let fd = netlink_socket()?;
        let addr = address(0, KERNEL_GROUP);
        // SAFETY: a valid socket and a sockaddr_nl with its size.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
        // A big queue, so a burst of unrelated uevents does not push ours out. Forcing it needs
        // CAP_NET_ADMIN; otherwise take what the limit allows.
        let size = 1 << 20;
        if setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
            let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size);
        }
        Ok(Socket { fd })
    }

    /// Sets a receive timeout (tests).
    pub fn set_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: a valid socket and a timeval with its size.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Receives one datagram with its source and credentials.
    pub fn recv(&self) -> io::Result<Received> {
        let mut buf = vec![0u8; MAX_UEVENT + 1024];
        // SAFETY: plain data, zero is valid.
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: plain data, zero is valid.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: every pointer in `msg` points at a live buffer of the stated size.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let source = (msg.msg_namelen as usize >= size_of::<libc::sockaddr_nl>()
            && i32::from(addr.nl_family) == libc::AF_NETLINK)
            .then_some(Source {
                nl_pid: addr.nl_pid,
                nl_groups: addr.nl_groups,
            });
        let mut creds = None;
        if msg.msg_flags & libc::MSG_CTRUNC == 0 {
            // SAFETY: `msg` was filled by recvmsg and its control buffer is still alive; the
            // CMSG macros stay inside `msg_controllen`.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET
                        && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                        && (*cmsg).cmsg_len as usize
                            >= libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as usize
                    {
                        let cred = libc::CMSG_DATA(cmsg).cast::<libc::ucred>().read_unaligned();
                        creds = Some(Creds {
                            pid: cred.pid,
                            uid: cred.uid,
                            gid: cred.gid,
                        });
                    }
                    cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
                }
            }
        }
        let truncated = msg.msg_flags & libc::MSG_TRUNC != 0;
        buf.truncate(n.min(buf.len()));
        Ok(Received {
            payload: buf,
            truncated,
            source,
            creds,
        })
    }
}

/// What to make of one datagram: true if it is a restore event from the kernel.
pub fn judge(received: &Received) -> bool {
    if let Err(why) = from_kernel(received.source, received.creds) {
        tracing::debug!(%why, "uevent ignored: not from the kernel");
        return false;
    }
    if received.truncated {
        tracing::debug!("uevent ignored: longer than any kernel uevent");
        return false;
    }
    match parse(&received.payload) {
        Ok(event) => event.is_restore(),
        Err(why) => {
            tracing::debug!(%why, "uevent ignored: not a uevent");
            false
        }
    }
}

/// Receives forever, calling `restore` for each kernel restore event.
pub fn run(socket: Socket, mut restore: impl FnMut()) {
    let mut failures = 0u32;
    loop {
        match socket.recv() {
            Ok(received) => {
                failures = 0;
                if judge(&received) {
                    restore();
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::error!(
                    "uevent queue overflowed: uevents were lost, and a restore event may be among them"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "receiving uevents failed");
                if failures > 100 {
                    tracing::error!("uevent backend stops after repeated failures");
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// Binds the socket and starts the thread that reports each kernel restore event.
pub fn start(inbox: &Inbox) -> Result<(), BackendError> {
    let socket = Socket::bind().map_err(BackendError::UeventSocket)?;
    let inbox = inbox.clone();
    super::spawn(BackendKind::Uevent, move || {
        run(socket, || {
            inbox.send(Message::Report {
                backend: BackendKind::Uevent,
                key: None,
                completion: Completion::nothing(),
            });
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTORE: &[u8] = b"change@/devices/platform/QEMUVGID:00\0ACTION=change\0\
DEVPATH=/devices/platform/QEMUVGID:00\0SUBSYSTEM=platform\0NEW_VMGENID=1\0\
DRIVER=vmgenid\0SEQNUM=4242\0";

    const KERNEL: Option<Source> = Some(Source {
        nl_pid: 0,
        nl_groups: 1,
    });
    const ROOT0: Option<Creds> = Some(Creds {
        pid: 0,
        uid: 0,
        gid: 0,
    });

    #[test]
    fn the_vmgenid_event_is_a_restore() {
        let e = parse(RESTORE).unwrap();
        assert!(e.is_restore());
        assert_eq!(e.get("SEQNUM"), Some(&b"4242"[..]));
        // Without the final NUL too.
        assert!(parse(&RESTORE[..RESTORE.len() - 1]).unwrap().is_restore());
    }

    #[test]
    fn other_events_are_not_restores() {
        let missing = b"change@/devices/x\0ACTION=change\0DEVPATH=/devices/x\0";
        assert!(!parse(missing).unwrap().is_restore());
        let zero = b"change@/devices/x\0ACTION=change\0NEW_VMGENID=0\0";
        assert!(!parse(zero).unwrap().is_restore());
        let add = b"add@/devices/x\0ACTION=add\0NEW_VMGENID=1\0";
        assert!(!parse(add).unwrap().is_restore());
        let prefix = b"change@/devices/x\0ACTION=change\0NEW_VMGENID=10\0";
        assert!(!parse(prefix).unwrap().is_restore());
        let lower = b"change@/devices/x\0ACTION=change\0new_vmgenid=1\0";
        assert!(!parse(lower).unwrap().is_restore());
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(parse(b""), Err(ParseError::NoHeader));
        assert_eq!(parse(b"\xff\xfe\0\x01"), Err(ParseError::NoHeader));
        assert_eq!(
            parse(b"ACTION=change\0NEW_VMGENID=1\0"),
            Err(ParseError::NoHeader)
        );
        assert_eq!(
            parse(b"change@/x\0ACTION=change\0junk\0NEW_VMGENID=1\0"),
            Err(ParseError::Field(2))
        );
        assert_eq!(parse(b"change@/x\0=1\0"), Err(ParseError::Field(1)));
        assert_eq!(
            parse(b"libudev\0\xfe\xed\xca\xfe rest"),
            Err(ParseError::Udev)
        );
        let mut huge = RESTORE.to_vec();
        huge.resize(MAX_UEVENT + 1, b'A');
        assert_eq!(parse(&huge), Err(ParseError::Oversized(MAX_UEVENT + 1)));
        let mut fits = b"change@/x\0ACTION=change\0NEW_VMGENID=1\0PAD=".to_vec();
        fits.resize(MAX_UEVENT, b'A');
        assert!(parse(&fits).unwrap().is_restore());
    }

    #[test]
    fn only_the_kernel_is_believed() {
        assert_eq!(from_kernel(KERNEL, ROOT0), Ok(()));
        assert_eq!(from_kernel(None, ROOT0), Err(NotKernel::NoAddress));
        let port = Some(Source {
            nl_pid: 1234,
            nl_groups: 1,
        });
        assert_eq!(from_kernel(port, ROOT0), Err(NotKernel::Port(1234)));
        assert_eq!(from_kernel(KERNEL, None), Err(NotKernel::NoCreds));
        let injected = Some(Creds {
            pid: 777,
            uid: 0,
            gid: 0,
        });
        assert_eq!(
            from_kernel(KERNEL, injected),
            Err(NotKernel::Creds { pid: 777, uid: 0 })
        );
        let user = Some(Creds {
            pid: 0,
            uid: 1000,
            gid: 0,
        });
        assert_eq!(
            from_kernel(KERNEL, user),
            Err(NotKernel::Creds { pid: 0, uid: 1000 })
        );
    }

    #[test]
    fn judge_needs_both_sender_and_payload() {
        let good = Received {
            payload: RESTORE.to_vec(),
            truncated: false,
            source: KERNEL,
            creds: ROOT0,
        };
        assert!(judge(&good));
        assert!(!judge(&Received {
            truncated: true,
            ..good.clone()
        }));
        assert!(!judge(&Received {
            creds: Some(Creds {
                pid: 5,
                uid: 0,
                gid: 0
            }),
            ..good.clone()
        }));
        assert!(!judge(&Received {
            payload: b"change@/x\0ACTION=change\0".to_vec(),
            ..good
        }));
    }

    fn token() -> String {
        format!(
            "SYSGENIDD_TEST={}-{:?}",
            std::process::id(),
            std::time::Instant::now()
        )
    }

    /// Waits for the datagram that contains `token`, skipping the host's own uevents.
    fn receive_marked(socket: &Socket, token: &str) -> Option<Received> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < until {
            match socket.recv() {
                Ok(r)
                    if r.payload
                        .windows(token.len())
                        .any(|w| w == token.as_bytes()) =>
                {
                    return Some(r);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => panic!("recv: {e}"),
            }
        }
        None
    }

    fn send(fd: &OwnedFd, to: &libc::sockaddr_nl, data: &[u8]) -> io::Result<()> {
        // SAFETY: a valid socket, buffer and address with their sizes.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                0,
                (to as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// A userspace multicast to group 1 arrives, but from a userspace port: ignored.
    #[test]
    fn a_userspace_multicast_is_ignored() {
        let socket = Socket::bind().expect("bind the uevent socket");
        socket
            .set_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        let token = token();
        // Deliberately not a restore event for anyone else listening on this host.
        let payload = format!("change@/devices/sysgenidd-test\0ACTION=change\0{token}\0");
        let sender = netlink_socket().unwrap();
        match send(&sender, &address(0, KERNEL_GROUP), payload.as_bytes()) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("the kernel refused a userspace multicast to group 1: {e}");
                return;
            }
        }
        let got = receive_marked(&socket, &token).expect("our own multicast arrives");
        eprintln!(
            "userspace multicast: source {:?} creds {:?}",
            got.source, got.creds
        );
        let source = got.source.expect("netlink source");
        assert_ne!(source.nl_pid, 0);
        assert!(matches!(
            from_kernel(got.source, got.creds),
            Err(NotKernel::Port(_))
        ));
    }

    /// A uevent handed to the kernel for rebroadcast (root may) arrives from port 0 but with
    /// the sender's pid in its credentials: ignored too.
    #[test]
    fn a_uevent_rebroadcast_by_the_kernel_is_ignored() {
        let socket = Socket::bind().expect("bind the uevent socket");
        socket
            .set_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        let token = token();
        let body = format!("change@/devices/sysgenidd-test\0ACTION=change\0{token}\0");
        let len = 16 + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes()); // nlmsg_len
        // The kernel skips control types (below 16) and messages that are not requests.
        msg.extend_from_slice(&16u16.to_ne_bytes()); // nlmsg_type
        msg.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes()); // nlmsg_flags
        msg.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        msg.extend_from_slice(body.as_bytes());
        let sender = netlink_socket().unwrap();
        if let Err(e) = send(&sender, &address(0, 0), &msg) {
            eprintln!("the kernel refused the uevent for rebroadcast: {e}");
            return;
        }
        let Some(got) = receive_marked(&socket, &token) else {
            eprintln!("the kernel did not rebroadcast the uevent (needs CAP_SYS_ADMIN)");
            return;
        };
        eprintln!(
            "kernel rebroadcast: source {:?} creds {:?}",
            got.source, got.creds
        );
        assert_eq!(got.source.map(|s| s.nl_pid), Some(0), "sent from port 0");
        let creds = got.creds.expect("credentials");
        assert_eq!(creds.pid, std::process::id() as i32);
        assert!(matches!(
            from_kernel(got.source, got.creds),
            Err(NotKernel::Creds { .. })
        ));
    }
}
