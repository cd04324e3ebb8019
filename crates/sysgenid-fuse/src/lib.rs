//! A small FUSE protocol layer for serving one file from userspace.
//!
//! The pieces, in the order a daemon uses them:
//!
//! - [`mount()`] a FUSE file system on a regular file and get a [`Channel`] to `/dev/fuse`;
//! - [`Channel::receive`] one request into a [`RequestBuffer`] and [`parse`] it into a
//!   [`Request`];
//! - answer INIT with [`negotiate`] and [`reply::init`], everything else with the other
//!   [`reply`] functions, and wake or update clients with the `reply::notify_*` messages,
//!   all sent with [`Channel::send`] (from any thread);
//! - [`Mount::unmount`], and [`mount_state`] to find stale mounts left by a dead daemon.
//!
//! Only `mount.rs` (to keep a socket open across `exec` for `fusermount3`) and
//! [`Channel::clone_connection`] (one ioctl) use `unsafe`;
//! parsing reads every field from byte slices with bounds checks.
#![deny(missing_docs)]

pub mod channel;
pub mod init;
pub mod mount;
pub mod reply;
pub mod request;
pub mod wire;

pub use channel::{Channel, ChannelError, DEV_FUSE, Received, RequestBuffer, Sent};
pub use init::{InitWants, Negotiated, NegotiationError, negotiate};
pub use mount::{
    FUSERMOUNT, Mount, MountError, MountMethod, MountOptions, MountState, mount, mount_state,
    unmount,
};
pub use request::{
    ForgetEntries, KernelInit, Operation, ParseError, Request, RequestHeader, parse,
};
