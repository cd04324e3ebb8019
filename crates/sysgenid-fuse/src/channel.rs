//! The `/dev/fuse` connection: read one request at a time, write whole replies.
//!
//! A [`Channel`] is `Send + Sync`: one thread may block in [`Channel::receive`] while others
//! [`Channel::send`] replies and notifications through the same descriptor (share it with an
//! `Arc`). Every message is written with a single `write(2)`, which the kernel handles
//! atomically.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

use crate::wire;

/// Path of the FUSE device.
pub const DEV_FUSE: &str = "/dev/fuse";

/// A reusable buffer for one request.
#[derive(Debug, Clone)]
pub struct RequestBuffer {
    bytes: Vec<u8>,
}

impl RequestBuffer {
    /// A buffer big enough for any request when `max_write` was negotiated:
    /// `max_write` plus 4 KiB of header room, and at least the kernel's 8 KiB minimum.
    pub fn new(max_write: u32) -> Self {
        let size = usize::try_from(max_write)
            .unwrap_or(usize::MAX)
            .saturating_add(4096)
            .max(wire::FUSE_MIN_READ_BUFFER);
        Self {
            bytes: vec![0; size],
        }
    }

    /// Size in bytes.
    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    fn message(&self, len: usize) -> Received<'_> {
        Received::Message(self.bytes.get(..len).unwrap_or_default())
    }
}

impl Default for RequestBuffer {
    /// A buffer for the default `max_write` of 4096.
    fn default() -> Self {
        Self::new(4096)
    }
}

/// What one `read(2)` of the device gave.
enum ReadOutcome {
    Len(usize),
    Nothing,
    Unmounted,
}

/// What [`Channel::receive`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'b> {
    /// One complete request; pass it to [`crate::parse`].
    Message(&'b [u8]),
    /// The file system was unmounted or the connection aborted (`ENODEV`).
    Unmounted,
}

/// What became of a message given to [`Channel::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Sent {
    /// The kernel took it.
    Delivered,
    /// The kernel answered `ENOENT`: the request was already finished (interrupted and
    /// aborted), or a notification named an inode the kernel no longer caches. Harmless.
    NotFound,
    /// The connection is gone (`ENODEV`). Linux 6.18 does not say so after an unmount:
    /// notifications are then accepted and dropped, and replies get [`Sent::NotFound`].
    Unmounted,
}

/// Errors of the FUSE device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The device could not be opened.
    #[error("cannot open {}: {source}{}", path.display(), open_hint(source))]
    Open {
        /// The device path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a request failed.
    #[error("reading a request from {DEV_FUSE} failed (buffer of {buffer_len} bytes): {source}")]
    Read {
        /// Size of the buffer used; `EINVAL` means it is smaller than the kernel needs.
        buffer_len: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a message failed; `EINVAL` means the kernel found it malformed.
    #[error("writing a {len}-byte message to {DEV_FUSE} failed: {source}")]
    Write {
        /// Message length.
        len: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel took only part of a message (never seen in practice).
    #[error("{DEV_FUSE} took {written} of {len} bytes of a message")]
    ShortWrite {
        /// Bytes taken.
        written: usize,
        /// Message length.
        len: usize,
    },
}

fn open_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::NotFound => {
            " (the device node is missing: load the fuse module with `modprobe fuse`, \
             or create it with `mknod /dev/fuse c 10 229`)"
        }
        io::ErrorKind::PermissionDenied => " (only root can open it directly; use fusermount3)",
        _ => "",
    }
}

/// An open `/dev/fuse` descriptor.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// Opens [`DEV_FUSE`] read-write and close-on-exec.
    pub fn open() -> Result<Self, ChannelError> {
        Self::open_path(Path::new(DEV_FUSE))
    }

    /// Opens a FUSE device at `path`.
    pub fn open_path(path: &Path) -> Result<Self, ChannelError> {
        use rustix::fs::{Mode, OFlags};
        let fd =
            rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                ChannelError::Open {
                    path: path.to_owned(),
                    source: e.into(),
                }
            })?;
        Ok(Self { fd })
    }

    /// Wraps an already open FUSE descriptor (from `fusermount3`, or systemd's fd store).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// A second descriptor on this descriptor's connection (`FUSE_DEV_IOC_CLONE`), for another
    /// serving thread. Every descriptor of a connection takes requests from the one queue, but
    /// a reply must be written to the descriptor its request was read from.
    pub fn clone_connection(&self) -> Result<Self, ChannelError> {
        let clone = Self::open()?;
        let session = self.fd.as_raw_fd() as u32;
        // The kernel reads a `u32` through the argument, though the number says `_IOR`.
        type Clone = rustix::ioctl::Setter<{ rustix::ioctl::opcode::read::<u32>(229, 0) }, u32>;
        // SAFETY: FUSE_DEV_IOC_CLONE reads one `u32` (the descriptor to clone) from the pointer
        // the `Setter` passes, which points at `session` for the length of the call, and
        // writes nothing back.
        unsafe { rustix::ioctl::ioctl(&clone.fd, Clone::new(session)) }.map_err(|e| {
            ChannelError::Open {
                path: PathBuf::from(DEV_FUSE),
                source: e.into(),
            }
        })?;
        Ok(clone)
    }

    /// Reads the next request into `buf`.
    ///
    /// Retries on `EINTR`, on `ENOENT` (the request was interrupted before it could be read)
    /// and on `EAGAIN` (after waiting for the descriptor to become readable, so a
    /// non-blocking descriptor also works). Reports `ENODEV` as [`Received::Unmounted`].
    pub fn receive<'b>(&self, buf: &'b mut RequestBuffer) -> Result<Received<'b>, ChannelError> {
        loop {
            match self.read_once(buf)? {
                ReadOutcome::Len(n) => return Ok(buf.message(n)),
                ReadOutcome::Nothing => self.wait_readable()?,
                ReadOutcome::Unmounted => return Ok(Received::Unmounted),
            }
        }
    }

    /// Reads the next request if one is queued, without waiting: `Ok(None)` when there is none.
    ///
    /// For an event loop: make the descriptor non-blocking with [`Channel::set_nonblocking`]
    /// and call this when `poll(2)` says it is readable. A request the kernel withdrew between
    /// the poll and the read (its caller was killed) simply leaves nothing to read.
    pub fn try_receive<'b>(
        &self,
        buf: &'b mut RequestBuffer,
    ) -> Result<Option<Received<'b>>, ChannelError> {
        Ok(match self.read_once(buf)? {
            ReadOutcome::Len(n) => Some(buf.message(n)),
            ReadOutcome::Nothing => None,
            ReadOutcome::Unmounted => Some(Received::Unmounted),
        })
    }

    /// One `read(2)`, retried on `EINTR` and `ENOENT`.
    fn read_once(&self, buf: &mut RequestBuffer) -> Result<ReadOutcome, ChannelError> {
        loop {
            return match rustix::io::read(&self.fd, &mut buf.bytes[..]) {
                Ok(n) => Ok(ReadOutcome::Len(n)),
                Err(Errno::INTR | Errno::NOENT) => continue,
                Err(Errno::AGAIN) => Ok(ReadOutcome::Nothing),
                Err(Errno::NODEV | Errno::CONNABORTED) => Ok(ReadOutcome::Unmounted),
                Err(e) => Err(ChannelError::Read {
                    buffer_len: buf.bytes.len(),
                    source: e.into(),
                }),
            };
        }
    }

    /// Sets or clears `O_NONBLOCK` on the descriptor (shared by every `dup` of it).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        use rustix::fs::OFlags;
        let mut flags = rustix::fs::fcntl_getfl(&self.fd)?;
        flags.set(OFlags::NONBLOCK, nonblocking);
        rustix::fs::fcntl_setfl(&self.fd, flags)?;
        Ok(())
    }

    fn wait_readable(&self) -> Result<(), ChannelError> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => Ok(()),
            Err(e) => Err(ChannelError::Read {
                buffer_len: 0,
                source: e.into(),
            }),
        }
    }

    /// Writes one complete message (a reply or a notification from [`crate::reply`]).
    pub fn send(&self, msg: &[u8]) -> Result<Sent, ChannelError> {
        loop {
            return match rustix::io::write(&self.fd, msg) {
                Ok(n) if n == msg.len() => Ok(Sent::Delivered),
                Ok(written) => Err(ChannelError::ShortWrite {
                    written,
                    len: msg.len(),
                }),
                Err(Errno::INTR) => continue,
                Err(Errno::NOENT) => Ok(Sent::NotFound),
                Err(Errno::NODEV | Errno::CONNABORTED) => Ok(Sent::Unmounted),
                Err(e) => Err(ChannelError::Write {
                    len: msg.len(),
                    source: e.into(),
                }),
            };
        }
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<OwnedFd> for Channel {
    fn from(fd: OwnedFd) -> Self {
        Self::from_fd(fd)
    }
}

impl From<Channel> for OwnedFd {
    fn from(channel: Channel) -> Self {
        channel.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_sizes() {
        assert_eq!(RequestBuffer::default().capacity(), 8192);
        assert_eq!(RequestBuffer::new(0).capacity(), 8192);
        assert_eq!(RequestBuffer::new(65536).capacity(), 65536 + 4096);
    }

    #[test]
    fn missing_device_error_names_the_path() {
        let err = Channel::open_path(Path::new("/nonexistent/fuse")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/fuse"), "{text}");
        assert!(text.contains("modprobe fuse"), "{text}");
    }

    #[test]
    fn channel_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Channel>();
    }

    #[test]
    fn io_on_a_non_fuse_descriptor_reports_errors() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(b);
        let ch = Channel::from_fd(a.into());
        let mut buf = RequestBuffer::default();
        // A socket without a peer reads 0 bytes: an empty message, which parse rejects.
        assert_eq!(ch.receive(&mut buf).unwrap(), Received::Message(&[]));
        assert!(matches!(
            ch.send(&crate::reply::empty(1)),
            Err(ChannelError::Write { .. })
        ));
    }
}
