//! Encoding of replies and notifications into complete messages for `/dev/fuse`.
//!
//! Each function returns one whole message (header included) to hand to
//! [`crate::Channel::send`]. Notifications carry `unique == 0` and the notify code in the
//! header's error field.
//!
//! # Panics
//!
//! Functions taking a payload panic if the whole message would exceed `u32::MAX` bytes; the
//! kernel accepts far less, so such a payload is a caller bug.

use std::time::Duration;

use crate::init::Negotiated;
use crate::wire::{self, Wire};

/// Largest errno the kernel accepts in a reply.
const MAX_ERRNO: i32 = 511;

fn message(unique: u64, error: i32, parts: &[&[u8]]) -> Vec<u8> {
    let body_len: usize = parts.iter().map(|p| p.len()).sum();
    let len =
        u32::try_from(wire::OutHeader::SIZE + body_len).expect("FUSE message larger than 4 GiB");
    let mut out = Vec::with_capacity(wire::OutHeader::SIZE + body_len);
    wire::OutHeader { len, error, unique }.write(&mut out);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

fn ok(unique: u64, body: &impl Wire, tail: &[u8]) -> Vec<u8> {
    message(unique, 0, &[&body.to_bytes(), tail])
}

fn split(d: Duration) -> (u64, u32) {
    (d.as_secs(), d.subsec_nanos())
}

/// An error reply. `errno` is positive (`libc::ENOSYS`); values outside 1..=511, which the
/// kernel would reject, are sent as `EIO`.
pub fn error(unique: u64, errno: i32) -> Vec<u8> {
    const EIO: i32 = 5;
    let errno = if (1..=MAX_ERRNO).contains(&errno) {
        errno
    } else {
        EIO
    };
    message(unique, -errno, &[])
}

/// A success reply without a body (FLUSH, RELEASE, DESTROY).
pub fn empty(unique: u64) -> Vec<u8> {
    message(unique, 0, &[])
}

/// The INIT reply for what [`crate::negotiate`] agreed.
pub fn init(unique: u64, agreed: &Negotiated) -> Vec<u8> {
    let body = wire::InitOut {
        major: wire::FUSE_KERNEL_VERSION,
        minor: wire::FUSE_KERNEL_MINOR_VERSION,
        max_readahead: agreed.max_readahead,
        flags: agreed.flags as u32,
        max_background: 0,
        congestion_threshold: 0,
        max_write: agreed.max_write,
        time_gran: 1,
        max_pages: agreed.max_pages,
        map_alignment: 0,
        flags2: (agreed.flags >> 32) as u32,
        unused: [0; 7],
    };
    ok(unique, &body, &[])
}

/// A GETATTR or SETATTR reply; the kernel caches `attr` for `valid`.
pub fn attr(unique: u64, attr: &wire::Attr, valid: Duration) -> Vec<u8> {
    let (attr_valid, attr_valid_nsec) = split(valid);
    let body = wire::AttrOut {
        attr_valid,
        attr_valid_nsec,
        dummy: 0,
        attr: *attr,
    };
    ok(unique, &body, &[])
}

/// An OPEN reply with file handle `fh` and `FOPEN_*` flags.
pub fn open(unique: u64, fh: u64, open_flags: u32) -> Vec<u8> {
    let body = wire::OpenOut {
        fh,
        open_flags,
        padding: 0,
    };
    ok(unique, &body, &[])
}

/// A READ reply carrying `data` (at most the requested size; fewer bytes is a short read).
pub fn data(unique: u64, data: &[u8]) -> Vec<u8> {
    message(unique, 0, &[data])
}

/// A WRITE reply saying `size` bytes were written.
pub fn write(unique: u64, size: u32) -> Vec<u8> {
    ok(unique, &wire::WriteOut { size, padding: 0 }, &[])
}

/// A POLL reply with the ready `POLL*` events.
pub fn poll(unique: u64, revents: u32) -> Vec<u8> {
    ok(
        unique,
        &wire::PollOut {
            revents,
            padding: 0,
        },
        &[],
    )
}

/// An IOCTL reply: `ioctl(2)` returns `result` (negative values become the caller's errno)
/// and `out` (at most the request's `out_size` bytes) is copied to the caller.
pub fn ioctl(unique: u64, result: i32, out: &[u8]) -> Vec<u8> {
    let body = wire::IoctlOut {
        result,
        flags: 0,
        in_iovs: 0,
        out_iovs: 0,
    };
    ok(unique, &body, out)
}

/// A STATFS reply.
pub fn statfs(unique: u64, st: &wire::Kstatfs) -> Vec<u8> {
    ok(unique, st, &[])
}

/// A `FUSE_NOTIFY_POLL` waking everyone polling with kernel handle `kh`.
pub fn notify_poll(kh: u64) -> Vec<u8> {
    message(
        0,
        wire::FUSE_NOTIFY_POLL,
        &[&wire::NotifyPollWakeupOut { kh }.to_bytes()],
    )
}

/// A `FUSE_NOTIFY_RESEND`: a server that took over a connection asks for every request the
/// previous one read and never answered. Kernels before 6.9 refuse it with `EINVAL`.
pub fn notify_resend() -> Vec<u8> {
    message(0, wire::FUSE_NOTIFY_RESEND, &[])
}

/// A `FUSE_NOTIFY_STORE` putting `data` at `offset` into node `nodeid`'s page cache, which
/// existing shared mappings then see.
pub fn notify_store(nodeid: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let body = wire::NotifyStoreOut {
        nodeid,
        offset,
        size: u32::try_from(data.len()).expect("FUSE message larger than 4 GiB"),
        padding: 0,
    };
    message(0, wire::FUSE_NOTIFY_STORE, &[&body.to_bytes(), data])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    fn header(msg: &[u8]) -> OutHeader {
        OutHeader::decode(msg).unwrap()
    }

    #[test]
    fn error_reply_is_a_bare_header_with_negative_errno() {
        let msg = error(0x1234, 38);
        assert_eq!(msg.len(), 16);
        let mut want = 16u32.to_ne_bytes().to_vec();
        want.extend_from_slice(&(-38i32).to_ne_bytes());
        want.extend_from_slice(&0x1234u64.to_ne_bytes());
        assert_eq!(msg, want);
        assert_eq!(header(&error(1, 0)).error, -5);
        assert_eq!(header(&error(1, -4)).error, -5);
        assert_eq!(header(&error(1, 512)).error, -5);
        assert_eq!(header(&error(1, 511)).error, -511);
    }

    #[test]
    fn empty_reply() {
        assert_eq!(
            header(&empty(8)),
            OutHeader {
                len: 16,
                error: 0,
                unique: 8
            }
        );
    }

    #[test]
    fn init_reply_layout() {
        let agreed = Negotiated {
            kernel_minor: 45,
            minor: 39,
            flags: FUSE_INIT_EXT | FUSE_DIRECT_IO_ALLOW_MMAP | FUSE_BIG_WRITES,
            max_write: 8192,
            max_readahead: 65536,
            max_pages: 0,
            direct_io_allow_mmap: true,
        };
        let msg = init(2, &agreed);
        assert_eq!(msg.len(), 16 + 64);
        assert_eq!(header(&msg).len, 80);
        let out = InitOut::decode(&msg[16..]).unwrap();
        assert_eq!((out.major, out.minor), (7, FUSE_KERNEL_MINOR_VERSION));
        assert_eq!(out.flags, (FUSE_INIT_EXT | FUSE_BIG_WRITES) as u32);
        assert_eq!(out.flags2, 1 << 4);
        assert_eq!(out.max_write, 8192);
        assert_eq!(out.max_readahead, 65536);
        assert_eq!(out.time_gran, 1);
        // flags2 sits at byte 32 of fuse_init_out.
        assert_eq!(msg[16 + 32..16 + 36], (1u32 << 4).to_ne_bytes());
    }

    #[test]
    fn attr_layout() {
        let a = Attr {
            ino: 1,
            size: 4096,
            mode: 0o100644,
            nlink: 1,
            blksize: 4096,
            ..Default::default()
        };
        let msg = attr(3, &a, Duration::new(1, 500));
        assert_eq!(msg.len(), 16 + 104);
        let out = AttrOut::decode(&msg[16..]).unwrap();
        assert_eq!((out.attr_valid, out.attr_valid_nsec), (1, 500));
        assert_eq!(out.attr, a);
        // size is the second u64 of fuse_attr, which starts at byte 16 of fuse_attr_out.
        assert_eq!(msg[16 + 16 + 8..16 + 16 + 16], 4096u64.to_ne_bytes());
    }

    #[test]
    fn open_write_poll_layout() {
        let msg = open(5, 9, FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE);
        assert_eq!(msg.len(), 32);
        assert_eq!(msg[16..24], 9u64.to_ne_bytes());
        assert_eq!(msg[24..28], 5u32.to_ne_bytes());
        assert_eq!(msg[28..32], [0; 4]);

        let msg = write(6, 2);
        assert_eq!(msg.len(), 24);
        assert_eq!(msg[16..20], 2u32.to_ne_bytes());

        let msg = poll(7, 1);
        assert_eq!(msg.len(), 24);
        assert_eq!(header(&msg).unique, 7);
        assert_eq!(msg[16..20], 1u32.to_ne_bytes());
    }

    #[test]
    fn data_and_ioctl_layout() {
        let msg = data(8, b"abcd");
        assert_eq!(msg.len(), 20);
        assert_eq!(header(&msg).len, 20);
        assert_eq!(&msg[16..], b"abcd");

        let msg = ioctl(9, -22, b"xy");
        assert_eq!(msg.len(), 16 + 16 + 2);
        assert_eq!(header(&msg).error, 0);
        assert_eq!(msg[16..20], (-22i32).to_ne_bytes());
        assert_eq!(msg[20..32], [0; 12]);
        assert_eq!(&msg[32..], b"xy");
    }

    #[test]
    fn statfs_layout() {
        let msg = statfs(
            3,
            &Kstatfs {
                bsize: 4096,
                namelen: 255,
                ..Default::default()
            },
        );
        assert_eq!(msg.len(), 16 + 80);
        assert_eq!(msg[16 + 40..16 + 44], 4096u32.to_ne_bytes());
    }

    #[test]
    fn notifications_have_unique_zero_and_code_in_error() {
        let msg = notify_poll(0xAB);
        assert_eq!(
            header(&msg),
            OutHeader {
                len: 24,
                error: FUSE_NOTIFY_POLL,
                unique: 0
            }
        );
        assert_eq!(msg[16..], 0xABu64.to_ne_bytes());

        let msg = notify_store(1, 0, &[7; 4096]);
        assert_eq!(msg.len(), 16 + 24 + 4096);
        assert_eq!(
            header(&msg),
            OutHeader {
                len: 16 + 24 + 4096,
                error: FUSE_NOTIFY_STORE,
                unique: 0
            }
        );
        let out = NotifyStoreOut::decode(&msg[16..]).unwrap();
        assert_eq!((out.nodeid, out.offset, out.size), (1, 0, 4096));
        assert!(msg[40..].iter().all(|&b| b == 7));
    }
}
