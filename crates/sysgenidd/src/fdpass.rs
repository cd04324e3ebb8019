//! One JSON message with file descriptors over a Unix stream socket (`SCM_RIGHTS`): how the
//! handover and the keeper pass the FUSE connection and the session between processes.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest message, descriptors aside.
const MAX_MESSAGE: usize = 64 * 1024;

/// Sends `value` as one JSON line, with `fds` attached.
pub fn send(stream: &UnixStream, value: &impl Serialize, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many descriptors for one message"));
    }
    let iov = [io::IoSlice::new(&line)];
    let sent = rustix::net::sendmsg(stream, &iov, &mut control, SendFlags::NOSIGNAL)?;
    if sent != line.len() {
        return Err(io::Error::other("short send"));
    }
    Ok(())
}

/// Receives one message sent by [`send`], waiting up to `timeout` (`None`: for good).
/// `Ok(None)` when the peer closed the socket.
pub fn receive<T: DeserializeOwned>(
    stream: &UnixStream,
    timeout: Option<Duration>,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    stream.set_read_timeout(timeout)?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        match rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => break r.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if received == 0 {
        return Ok(None);
    }
    let line = &buf[..received];
    let value = serde_json::from_slice(line.strip_suffix(b"\n").unwrap_or(line))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((value, fds)))
}
