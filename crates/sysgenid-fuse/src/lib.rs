//! A small FUSE protocol layer for serving one file from userspace.
#![deny(missing_docs)]
