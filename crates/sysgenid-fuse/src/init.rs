//! INIT negotiation: what the daemon wants, what the kernel offers, what was agreed.
//!
//! POLL, IOCTL and INTERRUPT need no INIT flag: the kernel sends them until the daemon answers
//! one with `ENOSYS`. `FUSE_ATOMIC_O_TRUNC` is never accepted, so `O_TRUNC` always arrives as a
//! SETATTR the daemon can answer without changing the file.

use crate::request::KernelInit;
use crate::wire;

/// Largest `max_write` this crate agrees to (256 pages of 4 KiB).
pub const MAX_WRITE_LIMIT: u32 = 1 << 20;
const PAGE: u32 = 4096;
const DEFAULT_MAX_PAGES: u32 = 32;

/// What the daemon asks for in INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitWants {
    /// Largest WRITE payload the daemon accepts; clamped to 4096..=[`MAX_WRITE_LIMIT`].
    /// Size the [`crate::RequestBuffer`] with the same value.
    pub max_write: u32,
    /// Readahead limit; `None` keeps the kernel's.
    pub max_readahead: Option<u32>,
    /// Let the kernel send page-cache reads concurrently (`FUSE_ASYNC_READ`).
    pub async_read: bool,
    /// Allow shared mmap of `FOPEN_DIRECT_IO` files if the kernel offers it (6.6+).
    pub direct_io_allow_mmap: bool,
}

impl Default for InitWants {
    fn default() -> Self {
        Self {
            max_write: PAGE,
            max_readahead: None,
            async_read: false,
            direct_io_allow_mmap: true,
        }
    }
}

/// The agreed connection parameters; [`crate::reply::init`] encodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Kernel's minor version.
    pub kernel_minor: u32,
    /// Minor version both sides speak: the smaller of the kernel's and ours.
    pub minor: u32,
    /// Accepted INIT flags (a subset of what the kernel offered).
    pub flags: u64,
    /// Agreed largest WRITE payload.
    pub max_write: u32,
    /// Agreed readahead limit.
    pub max_readahead: u32,
    /// Largest request in pages, sent with `FUSE_MAX_PAGES`; 0 keeps the kernel default (32).
    pub max_pages: u16,
    /// Whether `FUSE_DIRECT_IO_ALLOW_MMAP` was accepted: shared mappings of direct-io files
    /// work and `FUSE_NOTIFY_STORE` updates what they see.
    pub direct_io_allow_mmap: bool,
}

impl Negotiated {
    /// Whether all bits of `flag` were accepted.
    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag == flag
    }
}

/// Why INIT cannot be accepted; answer it with `EPROTO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// The kernel speaks another major version.
    #[error("kernel offers FUSE protocol {major}.{minor}; only major version 7 is supported")]
    UnsupportedMajor {
        /// Kernel's major version.
        major: u32,
        /// Kernel's minor version.
        minor: u32,
    },
    /// The kernel is older than [`wire::MIN_KERNEL_MINOR_VERSION`].
    #[error(
        "kernel offers FUSE protocol 7.{minor}; at least 7.{} (Linux 3.15) is needed",
        wire::MIN_KERNEL_MINOR_VERSION
    )]
    KernelTooOld {
        /// Kernel's minor version.
        minor: u32,
    },
}

/// Agrees on connection parameters from the kernel's INIT and the daemon's wishes.
pub fn negotiate(kernel: &KernelInit, wants: &InitWants) -> Result<Negotiated, NegotiationError> {
    if kernel.major != wire::FUSE_KERNEL_VERSION {
        return Err(NegotiationError::UnsupportedMajor {
            major: kernel.major,
            minor: kernel.minor,
        });
    }
    if kernel.minor < wire::MIN_KERNEL_MINOR_VERSION {
        return Err(NegotiationError::KernelTooOld {
            minor: kernel.minor,
        });
    }
    let offered = kernel.flags;

    let mut max_write = wants.max_write.clamp(PAGE, MAX_WRITE_LIMIT);
    let pages = max_write.div_ceil(PAGE);
    let mut max_pages = 0;
    let mut want = 0;
    if pages > DEFAULT_MAX_PAGES {
        if offered & wire::FUSE_MAX_PAGES != 0 {
            want |= wire::FUSE_MAX_PAGES;
            max_pages = u16::try_from(pages).unwrap_or(u16::MAX);
        } else {
            max_write = DEFAULT_MAX_PAGES * PAGE;
        }
    }
    if max_write > PAGE {
        want |= wire::FUSE_BIG_WRITES;
    }
    if wants.async_read {
        want |= wire::FUSE_ASYNC_READ;
    }
    if wants.direct_io_allow_mmap {
        want |= wire::FUSE_DIRECT_IO_ALLOW_MMAP;
    }
    // The kernel reads flags2 only when the reply has FUSE_INIT_EXT.
    want |= wire::FUSE_INIT_EXT;

    let mut flags = want & offered & !wire::FUSE_ATOMIC_O_TRUNC;
    if flags >> 32 == 0 {
        flags &= !wire::FUSE_INIT_EXT;
    }
    let max_readahead = wants
        .max_readahead
        .map_or(kernel.max_readahead, |r| r.min(kernel.max_readahead));

    Ok(Negotiated {
        kernel_minor: kernel.minor,
        minor: kernel.minor.min(wire::FUSE_KERNEL_MINOR_VERSION),
        flags,
        max_write,
        max_readahead,
        max_pages,
        direct_io_allow_mmap: flags & wire::FUSE_DIRECT_IO_ALLOW_MMAP != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    /// What a 6.18 kernel offers (a representative subset).
    fn modern() -> KernelInit {
        KernelInit {
            major: 7,
            minor: 45,
            max_readahead: 131072,
            flags: FUSE_ASYNC_READ
                | FUSE_POSIX_LOCKS
                | FUSE_ATOMIC_O_TRUNC
                | FUSE_BIG_WRITES
                | FUSE_MAX_PAGES
                | FUSE_INIT_EXT
                | FUSE_DIRECT_IO_ALLOW_MMAP,
        }
    }

    /// What Debian 12's 6.1 kernel offers: protocol 7.37, no `FUSE_DIRECT_IO_ALLOW_MMAP`.
    fn debian12() -> KernelInit {
        KernelInit {
            minor: 37,
            flags: modern().flags & !FUSE_DIRECT_IO_ALLOW_MMAP,
            ..modern()
        }
    }

    #[test]
    fn modern_kernel_accepts_direct_io_mmap() {
        let n = negotiate(&modern(), &InitWants::default()).unwrap();
        assert!(n.direct_io_allow_mmap);
        assert_eq!(n.flags, FUSE_INIT_EXT | FUSE_DIRECT_IO_ALLOW_MMAP);
        assert_eq!(n.minor, FUSE_KERNEL_MINOR_VERSION);
        assert_eq!(n.kernel_minor, 45);
        assert_eq!(n.max_write, 4096);
        assert_eq!(n.max_pages, 0);
        assert_eq!(n.max_readahead, 131072);
        assert!(!n.has(FUSE_ATOMIC_O_TRUNC));
    }

    #[test]
    fn older_kernel_without_direct_io_mmap() {
        let n = negotiate(&debian12(), &InitWants::default()).unwrap();
        assert!(!n.direct_io_allow_mmap);
        assert_eq!(n.flags, 0);
        assert_eq!(n.minor, 37);
    }

    #[test]
    fn never_atomic_o_trunc_and_opt_in_async_read() {
        let wants = InitWants {
            async_read: true,
            direct_io_allow_mmap: false,
            max_readahead: Some(4096),
            ..InitWants::default()
        };
        let n = negotiate(&modern(), &wants).unwrap();
        assert_eq!(n.flags, FUSE_ASYNC_READ);
        assert_eq!(n.max_readahead, 4096);
    }

    #[test]
    fn max_write_is_clamped_and_needs_max_pages() {
        let big = InitWants {
            max_write: 512 * 1024,
            ..InitWants::default()
        };
        let n = negotiate(&modern(), &big).unwrap();
        assert_eq!((n.max_write, n.max_pages), (512 * 1024, 128));
        assert!(n.has(FUSE_MAX_PAGES | FUSE_BIG_WRITES));

        let no_max_pages = KernelInit {
            flags: modern().flags & !FUSE_MAX_PAGES,
            ..modern()
        };
        let n = negotiate(&no_max_pages, &big).unwrap();
        assert_eq!((n.max_write, n.max_pages), (128 * 1024, 0));

        let tiny = InitWants {
            max_write: 1,
            ..InitWants::default()
        };
        assert_eq!(negotiate(&modern(), &tiny).unwrap().max_write, 4096);
        let huge = InitWants {
            max_write: u32::MAX,
            ..InitWants::default()
        };
        let n = negotiate(&modern(), &huge).unwrap();
        assert_eq!((n.max_write, n.max_pages), (MAX_WRITE_LIMIT, 256));
    }

    #[test]
    fn refuses_other_majors_and_ancient_minors() {
        let other = KernelInit {
            major: 8,
            ..modern()
        };
        assert_eq!(
            negotiate(&other, &InitWants::default()),
            Err(NegotiationError::UnsupportedMajor {
                major: 8,
                minor: 45
            })
        );
        let old = KernelInit {
            minor: 22,
            ..modern()
        };
        let err = negotiate(&old, &InitWants::default()).unwrap_err();
        assert_eq!(err, NegotiationError::KernelTooOld { minor: 22 });
        assert!(err.to_string().contains("7.23"));
    }
}
