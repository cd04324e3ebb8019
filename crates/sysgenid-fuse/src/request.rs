//! Bounds-checked parsing of one request read from `/dev/fuse`.
//!
//! [`parse`] checks every length against the header and the buffer and returns a typed
//! [`ParseError`] for anything short or inconsistent; it never panics. Opcodes the crate does
//! not model come back as [`Operation::Unknown`] so the daemon can answer `ENOSYS`.

use crate::wire::{self, Wire};

/// The fixed header of a request: the kernel's `fuse_in_header`, decoded by
/// [`RequestHeader::parse`].
pub type RequestHeader = wire::InHeader;

impl RequestHeader {
    /// Decodes the header at the front of `buf` without checking the rest of the message.
    ///
    /// Useful to answer a request whose body [`parse`] rejected.
    pub fn parse(buf: &[u8]) -> Result<Self, ParseError> {
        Self::decode(buf).ok_or(ParseError::TruncatedHeader { got: buf.len() })
    }

    /// Bytes of request extensions at the end of the message (only with create-time
    /// extensions this crate never negotiates, so normally 0).
    pub fn extensions_len(&self) -> usize {
        usize::from(self.total_extlen) * 8
    }
}

/// One decoded request: its header and its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The header.
    pub header: RequestHeader,
    /// The decoded body.
    pub op: Operation<'a>,
}

/// The parameters the kernel offers in INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelInit {
    /// Kernel's major version (7).
    pub major: u32,
    /// Kernel's minor version.
    pub minor: u32,
    /// Kernel's readahead limit.
    pub max_readahead: u32,
    /// Offered INIT flags: `flags | flags2 << 32` (the high half only with `FUSE_INIT_EXT`).
    pub flags: u64,
}

/// The entries of a BATCH_FORGET, decoded lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForgetEntries<'a> {
    raw: &'a [u8],
}

impl<'a> ForgetEntries<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.raw.len() / wire::ForgetOne::SIZE
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = wire::ForgetOne> + 'a {
        self.raw
            .chunks_exact(wire::ForgetOne::SIZE)
            .filter_map(wire::ForgetOne::decode)
    }
}

/// The operation of a request, with the fields a single-file daemon needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation<'a> {
    /// `FUSE_INIT`: answer with [`crate::reply::init`] after [`crate::negotiate`].
    Init(KernelInit),
    /// `FUSE_LOOKUP` of `name` (without its NUL) in directory `header.nodeid`.
    Lookup {
        /// The name.
        name: &'a [u8],
    },
    /// `FUSE_FORGET`: never answered.
    Forget {
        /// Lookups to drop from `header.nodeid`.
        nlookup: u64,
    },
    /// `FUSE_BATCH_FORGET`: never answered.
    BatchForget {
        /// The nodes and counts.
        entries: ForgetEntries<'a>,
    },
    /// `FUSE_GETATTR`: answer with [`crate::reply::attr`].
    Getattr {
        /// File handle when the call came through an open file (`fstat`).
        fh: Option<u64>,
    },
    /// `FUSE_SETATTR`: answer with [`crate::reply::attr`] giving the resulting attributes.
    ///
    /// `open(O_TRUNC)` arrives as OPEN then a SETATTR with `size == Some(0)`.
    Setattr {
        /// Raw `FATTR_*` bits.
        valid: u32,
        /// File handle (`FATTR_FH`).
        fh: Option<u64>,
        /// New size (`FATTR_SIZE`).
        size: Option<u64>,
        /// New mode (`FATTR_MODE`).
        mode: Option<u32>,
        /// New owner (`FATTR_UID`).
        uid: Option<u32>,
        /// New group (`FATTR_GID`).
        gid: Option<u32>,
        /// Lock owner (`FATTR_LOCKOWNER`).
        lock_owner: Option<u64>,
    },
    /// `FUSE_OPEN`: answer with [`crate::reply::open`].
    Open {
        /// `open(2)` flags (`O_TRUNC` is stripped; it comes as a SETATTR).
        flags: u32,
        /// `FUSE_OPEN_*` flags (7.33+).
        open_flags: u32,
    },
    /// `FUSE_READ`: answer with [`crate::reply::data`] of at most `size` bytes.
    Read {
        /// File handle.
        fh: u64,
        /// File offset.
        offset: u64,
        /// Bytes wanted.
        size: u32,
        /// Raw `FUSE_READ_*` flags.
        read_flags: u32,
        /// Lock owner: `Some` for read(2) calls, `None` for page-cache fills such as
        /// the first touch of a shared mapping.
        lock_owner: Option<u64>,
        /// `open(2)` flags of the file.
        flags: u32,
    },
    /// `FUSE_WRITE`: answer with [`crate::reply::write`].
    Write {
        /// File handle.
        fh: u64,
        /// File offset.
        offset: u64,
        /// Raw `FUSE_WRITE_*` flags.
        write_flags: u32,
        /// Lock owner (`FUSE_WRITE_LOCKOWNER`).
        lock_owner: Option<u64>,
        /// `open(2)` flags of the file.
        flags: u32,
        /// The data; never empty in practice, a 0-byte write does not reach the daemon.
        data: &'a [u8],
    },
    /// `FUSE_FLUSH` (each `close(2)`): answer with [`crate::reply::empty`].
    Flush {
        /// File handle.
        fh: u64,
        /// Lock owner of the closing file table.
        lock_owner: u64,
    },
    /// `FUSE_RELEASE` (last close, pid 0): answer with [`crate::reply::empty`].
    Release {
        /// File handle.
        fh: u64,
        /// `open(2)` flags of the file.
        flags: u32,
        /// Raw `FUSE_RELEASE_*` flags.
        release_flags: u32,
        /// Lock owner (meaningful with `FUSE_RELEASE_FLOCK_UNLOCK`).
        lock_owner: u64,
    },
    /// `FUSE_POLL`: answer with [`crate::reply::poll`]; when `flags` has
    /// `FUSE_POLL_SCHEDULE_NOTIFY`, later send [`crate::reply::notify_poll`] with `kh`
    /// once readiness changes.
    Poll {
        /// File handle.
        fh: u64,
        /// Kernel poll handle.
        kh: u64,
        /// Raw `FUSE_POLL_*` flags.
        flags: u32,
        /// Requested `POLL*` events.
        events: u32,
    },
    /// `FUSE_IOCTL`: answer with [`crate::reply::ioctl`].
    ///
    /// For a FUSE file the kernel sizes the buffers from the command number: `in_data`
    /// holds `_IOC_SIZE(cmd)` bytes for `_IOW` commands and the reply may carry up to
    /// `out_size` bytes for `_IOR` commands. A command without a size (`_IO`) passes `arg`
    /// unchanged, all 64 bits of it on a 64-bit caller.
    ///
    /// With `FUSE_IOCTL_COMPAT` in `flags` (always with `FUSE_IOCTL_32BIT`) the caller is a
    /// 32-bit process on a 64-bit kernel: `arg` is its 32-bit value zero-extended, and any
    /// struct in `in_data` uses the 32-bit layout. `FUSE_IOCTL_COMPAT_X32` marks x32 callers.
    Ioctl {
        /// File handle.
        fh: u64,
        /// Raw `FUSE_IOCTL_*` flags.
        flags: u32,
        /// Command number.
        cmd: u32,
        /// The caller's integer argument.
        arg: u64,
        /// Length of `in_data`.
        in_size: u32,
        /// Largest output the caller accepts.
        out_size: u32,
        /// Input copied from the caller.
        in_data: &'a [u8],
    },
    /// `FUSE_INTERRUPT` of the request with id `unique`.
    ///
    /// Answer the interrupted request (usually with `EINTR`); send nothing for the interrupt
    /// itself, unless `unique` is not known yet: then reply `EAGAIN` to this request's own
    /// `header.unique` and the kernel queues the interrupt again.
    Interrupt {
        /// Id of the request to interrupt.
        unique: u64,
    },
    /// `FUSE_DESTROY`: answer with [`crate::reply::empty`].
    Destroy,
    /// `FUSE_STATFS`: answer with [`crate::reply::statfs`].
    Statfs,
    /// Any other opcode: answer `ENOSYS`. Linux 6.18 sends STATX on `stat(2)` and GETXATTR
    /// before writes; after `ENOSYS` it falls back to GETATTR or stops asking.
    Unknown {
        /// The opcode.
        opcode: u32,
    },
}

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Fewer bytes than the 40-byte header.
    #[error(
        "FUSE request of {got} bytes is shorter than the {} byte header",
        RequestHeader::SIZE
    )]
    TruncatedHeader {
        /// Bytes available.
        got: usize,
    },
    /// The header's length disagrees with the bytes read.
    #[error("FUSE request header says {header_len} bytes but {buffer_len} bytes were read")]
    LengthMismatch {
        /// Length in the header.
        header_len: u32,
        /// Length of the buffer.
        buffer_len: usize,
    },
    /// The extension length in the header exceeds the body.
    #[error("FUSE {} request claims {extensions_len} bytes of extensions but its body has {body_len}", op_name(*.opcode))]
    ExtensionsTooLong {
        /// The opcode.
        opcode: u32,
        /// Claimed extension bytes.
        extensions_len: usize,
        /// Body bytes.
        body_len: usize,
    },
    /// The body is shorter than the operation's fixed part.
    #[error("FUSE {} request body has {got} bytes, needs at least {need}", op_name(*.opcode))]
    TruncatedBody {
        /// The opcode.
        opcode: u32,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// A name is not NUL-terminated.
    #[error("FUSE {} request has a name without a terminating NUL", op_name(*.opcode))]
    MissingNul {
        /// The opcode.
        opcode: u32,
    },
    /// A WRITE's data length differs from its `size` field.
    #[error("FUSE WRITE says {size} bytes but carries {data_len}")]
    WriteSizeMismatch {
        /// The `size` field.
        size: u32,
        /// Bytes of data present.
        data_len: usize,
    },
    /// An IOCTL's input length differs from its `in_size` field.
    #[error("FUSE IOCTL says {in_size} input bytes but carries {data_len}")]
    IoctlSizeMismatch {
        /// The `in_size` field.
        in_size: u32,
        /// Bytes of input present.
        data_len: usize,
    },
    /// A BATCH_FORGET's entries do not match its count.
    #[error("FUSE BATCH_FORGET says {count} entries but carries {data_len} bytes of entries")]
    BatchForgetCountMismatch {
        /// The `count` field.
        count: u32,
        /// Bytes of entries present.
        data_len: usize,
    },
}

fn op_name(opcode: u32) -> String {
    match wire::opcode_name(opcode) {
        Some(name) => name.to_owned(),
        None => format!("opcode {opcode}"),
    }
}

/// Reads the fixed struct `T` at the front of `body`, returning it and the bytes after it.
fn fixed<T: Wire>(opcode: u32, body: &[u8]) -> Result<(T, &[u8]), ParseError> {
    let mut rest = body;
    let value = T::read(&mut rest).ok_or(ParseError::TruncatedBody {
        opcode,
        need: T::SIZE,
        got: body.len(),
    })?;
    Ok((value, rest))
}

fn flag<T>(flags: u32, bit: u32, value: T) -> Option<T> {
    (flags & bit != 0).then_some(value)
}

/// Parses one complete request as read from `/dev/fuse`.
///
/// `buf` must be exactly the bytes one `read(2)` returned: the header's `len` must equal
/// `buf.len()`. Fixed-size bodies may be followed by bytes a newer kernel added; those are
/// ignored. Variable parts (WRITE data, IOCTL input, BATCH_FORGET entries) must match their
/// declared sizes exactly.
pub fn parse(buf: &[u8]) -> Result<Request<'_>, ParseError> {
    let header = RequestHeader::parse(buf)?;
    if usize::try_from(header.len).ok() != Some(buf.len()) {
        return Err(ParseError::LengthMismatch {
            header_len: header.len,
            buffer_len: buf.len(),
        });
    }
    let op = operation(header.opcode, body(&header, buf)?)?;
    Ok(Request { header, op })
}

/// The bytes between the header and the request extensions.
fn body<'a>(header: &RequestHeader, buf: &'a [u8]) -> Result<&'a [u8], ParseError> {
    let after_header = buf.get(RequestHeader::SIZE..).unwrap_or_default();
    after_header
        .len()
        .checked_sub(header.extensions_len())
        .and_then(|end| after_header.get(..end))
        .ok_or(ParseError::ExtensionsTooLong {
            opcode: header.opcode,
            extensions_len: header.extensions_len(),
            body_len: after_header.len(),
        })
}

/// Decodes the body of an `opcode` request.
fn operation(opcode: u32, body: &[u8]) -> Result<Operation<'_>, ParseError> {
    Ok(match opcode {
        wire::FUSE_INIT => init(body)?,
        wire::FUSE_LOOKUP => lookup(body)?,
        wire::FUSE_FORGET => {
            let (forget, _) = fixed::<wire::ForgetIn>(opcode, body)?;
            Operation::Forget {
                nlookup: forget.nlookup,
            }
        }
        wire::FUSE_BATCH_FORGET => batch_forget(body)?,
        wire::FUSE_GETATTR => {
            let (getattr, _) = fixed::<wire::GetattrIn>(opcode, body)?;
            Operation::Getattr {
                fh: flag(getattr.getattr_flags, wire::FUSE_GETATTR_FH, getattr.fh),
            }
        }
        wire::FUSE_SETATTR => setattr(body)?,
        wire::FUSE_OPEN => {
            let (open, _) = fixed::<wire::OpenIn>(opcode, body)?;
            Operation::Open {
                flags: open.flags,
                open_flags: open.open_flags,
            }
        }
        wire::FUSE_READ => read(body)?,
        wire::FUSE_WRITE => write(body)?,
        wire::FUSE_FLUSH => {
            let (flush, _) = fixed::<wire::FlushIn>(opcode, body)?;
            Operation::Flush {
                fh: flush.fh,
                lock_owner: flush.lock_owner,
            }
        }
        wire::FUSE_RELEASE => {
            let (release, _) = fixed::<wire::ReleaseIn>(opcode, body)?;
            Operation::Release {
                fh: release.fh,
                flags: release.flags,
                release_flags: release.release_flags,
                lock_owner: release.lock_owner,
            }
        }
        wire::FUSE_POLL => {
            let (poll, _) = fixed::<wire::PollIn>(opcode, body)?;
            Operation::Poll {
                fh: poll.fh,
                kh: poll.kh,
                flags: poll.flags,
                events: poll.events,
            }
        }
        wire::FUSE_IOCTL => ioctl(body)?,
        wire::FUSE_INTERRUPT => {
            let (interrupt, _) = fixed::<wire::InterruptIn>(opcode, body)?;
            Operation::Interrupt {
                unique: interrupt.unique,
            }
        }
        wire::FUSE_DESTROY => Operation::Destroy,
        wire::FUSE_STATFS => Operation::Statfs,
        _ => Operation::Unknown { opcode },
    })
}

fn init(body: &[u8]) -> Result<Operation<'_>, ParseError> {
    let (init, mut rest) = fixed::<wire::InitIn>(wire::FUSE_INIT, body)?;
    let mut flags = u64::from(init.flags);
    if flags & wire::FUSE_INIT_EXT != 0
        && let Some(flags2) = u32::read(&mut rest)
    {
        flags |= u64::from(flags2) << 32;
    }
    Ok(Operation::Init(KernelInit {
        major: init.major,
        minor: init.minor,
        max_readahead: init.max_readahead,
        flags,
    }))
}

fn lookup(body: &[u8]) -> Result<Operation<'_>, ParseError> {
    let nul = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::MissingNul {
            opcode: wire::FUSE_LOOKUP,
        })?;
    let (name, _) = body.split_at(nul);
    Ok(Operation::Lookup { name })
}

fn batch_forget(body: &[u8]) -> Result<Operation<'_>, ParseError> {
    let (batch, rest) = fixed::<wire::BatchForgetIn>(wire::FUSE_BATCH_FORGET, body)?;
    let want = usize::try_from(batch.count)
        .ok()
        .and_then(|n| n.checked_mul(wire::ForgetOne::SIZE));
    if want != Some(rest.len()) {
        return Err(ParseError::BatchForgetCountMismatch {
            count: batch.count,
            data_len: rest.len(),
        });
    }
    Ok(Operation::BatchForget {
        entries: ForgetEntries { raw: rest },
    })
}

fn setattr(body: &[u8]) -> Result<Operation<'_>, ParseError> {
    let (s, _) = fixed::<wire::SetattrIn>(wire::FUSE_SETATTR, body)?;
    let v = s.valid;
    Ok(Operation::Setattr {
        valid: v,
        fh: flag(v, wire::FATTR_FH, s.fh),
        size: flag(v, wire::FATTR_SIZE, s.size),
        mode: flag(v, wire::FATTR_MODE, s.mode),
        uid: flag(v, wire::FATTR_UID, s.uid),
        gid: flag(v, wire::FATTR_GID, s.gid),
        lock_owner: flag(v, wire::FATTR_LOCKOWNER, s.lock_owner),
    })
}

fn read(body: &[u8]) -> Result<Operation<'_>, ParseError> {
    let (read, _) = fixed::<wire::ReadIn>(wire::FUSE_READ, body)?;
    Ok(Operation::Read {
        fh: read.fh,
        offset: read.offset,
        size: read.size,
        read_flags: read.read_flags,
        lock_owner: flag(read.read_flags, wire::FUSE_READ_LOCKOWNER, read.lock_owner),
        flags: read.flags,
    })
}

fn write(body: &[u8]) -> Result<Operation<'_>, ParseError> {
    let (write, data) = fixed::<wire::WriteIn>(wire::FUSE_WRITE, body)?;
    if usize::try_from(write.size).ok() != Some(data.len()) {
        return Err(ParseError::WriteSizeMismatch {
            size: write.size,
            data_len: data.len(),
        });
    }
    Ok(Operation::Write {
        fh: write.fh,
        offset: write.offset,
        write_flags: write.write_flags,
        lock_owner: flag(
            write.write_flags,
            wire::FUSE_WRITE_LOCKOWNER,
            write.lock_owner,
        ),
        flags: write.flags,
        data,
    })
}

fn ioctl(body: &[u8]) -> Result<Operation<'_>, ParseError> {
    let (ioctl, in_data) = fixed::<wire::IoctlIn>(wire::FUSE_IOCTL, body)?;
    if usize::try_from(ioctl.in_size).ok() != Some(in_data.len()) {
        return Err(ParseError::IoctlSizeMismatch {
            in_size: ioctl.in_size,
            data_len: in_data.len(),
        });
    }
    Ok(Operation::Ioctl {
        fh: ioctl.fh,
        flags: ioctl.flags,
        cmd: ioctl.cmd,
        arg: ioctl.arg,
        in_size: ioctl.in_size,
        out_size: ioctl.out_size,
        in_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    const UNIQUE: u64 = 0x42;

    /// Builds a request: header (with the right `len`) followed by `body`.
    fn message(opcode: u32, body: &[u8]) -> Vec<u8> {
        let header = InHeader {
            len: u32::try_from(InHeader::SIZE + body.len()).unwrap(),
            opcode,
            unique: UNIQUE,
            nodeid: FUSE_ROOT_ID,
            uid: 1000,
            gid: 1001,
            pid: 4242,
            total_extlen: 0,
            padding: 0,
        };
        let mut out = header.to_bytes();
        out.extend_from_slice(body);
        out
    }

    /// Builds a body from raw little pieces, like the kernel's C structs.
    fn body(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn op(buf: &[u8]) -> Operation<'_> {
        let req = parse(buf).expect("valid request");
        assert_eq!(req.header.unique, UNIQUE);
        req.op
    }

    #[test]
    fn header_fields() {
        let buf = message(FUSE_STATFS, &[]);
        let req = parse(&buf).unwrap();
        assert_eq!(
            req.header,
            RequestHeader {
                len: 40,
                opcode: FUSE_STATFS,
                unique: UNIQUE,
                nodeid: 1,
                uid: 1000,
                gid: 1001,
                pid: 4242,
                total_extlen: 0,
                padding: 0,
            }
        );
        assert_eq!(req.op, Operation::Statfs);
    }

    #[test]
    fn init_old_kernel_without_flags2() {
        let b = body(&[
            &7u32.to_ne_bytes(),
            &31u32.to_ne_bytes(),
            &131072u32.to_ne_bytes(),
            &0x0000_1001u32.to_ne_bytes(),
        ]);
        assert_eq!(
            op(&message(FUSE_INIT, &b)),
            Operation::Init(KernelInit {
                major: 7,
                minor: 31,
                max_readahead: 131072,
                flags: 0x1001
            })
        );
    }

    #[test]
    fn init_with_flags2() {
        let flags = (FUSE_INIT_EXT | FUSE_ASYNC_READ) as u32;
        let mut b = body(&[
            &7u32.to_ne_bytes(),
            &45u32.to_ne_bytes(),
            &131072u32.to_ne_bytes(),
            &flags.to_ne_bytes(),
            &(1u32 << 4).to_ne_bytes(),
        ]);
        b.resize(64, 0);
        let Operation::Init(init) = op(&message(FUSE_INIT, &b)) else {
            panic!("not init")
        };
        assert_eq!(init.minor, 45);
        assert_eq!(
            init.flags,
            FUSE_INIT_EXT | FUSE_ASYNC_READ | FUSE_DIRECT_IO_ALLOW_MMAP
        );
    }

    #[test]
    fn init_flags2_ignored_without_init_ext() {
        let b = body(&[
            &7u32.to_ne_bytes(),
            &45u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &u32::MAX.to_ne_bytes(),
        ]);
        let Operation::Init(init) = op(&message(FUSE_INIT, &b)) else {
            panic!("not init")
        };
        assert_eq!(init.flags, 0);
    }

    #[test]
    fn lookup_name() {
        assert_eq!(
            op(&message(FUSE_LOOKUP, b"sysgenid\0")),
            Operation::Lookup { name: b"sysgenid" }
        );
        assert_eq!(
            parse(&message(FUSE_LOOKUP, b"sysgenid")),
            Err(ParseError::MissingNul {
                opcode: FUSE_LOOKUP
            })
        );
    }

    #[test]
    fn forget_and_batch_forget() {
        assert_eq!(
            op(&message(FUSE_FORGET, &9u64.to_ne_bytes())),
            Operation::Forget { nlookup: 9 }
        );
        let b = body(&[
            &2u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &1u64.to_ne_bytes(),
            &3u64.to_ne_bytes(),
            &5u64.to_ne_bytes(),
            &7u64.to_ne_bytes(),
        ]);
        let buf = message(FUSE_BATCH_FORGET, &b);
        let Operation::BatchForget { entries } = op(&buf) else {
            panic!("not batch forget")
        };
        assert_eq!(entries.len(), 2);
        let got: Vec<_> = entries.iter().map(|e| (e.nodeid, e.nlookup)).collect();
        assert_eq!(got, [(1, 3), (5, 7)]);

        let short = message(FUSE_BATCH_FORGET, &b[..b.len() - 1]);
        assert_eq!(
            parse(&short),
            Err(ParseError::BatchForgetCountMismatch {
                count: 2,
                data_len: 31
            })
        );
    }

    #[test]
    fn getattr_with_and_without_fh() {
        let with = body(&[
            &FUSE_GETATTR_FH.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &77u64.to_ne_bytes(),
        ]);
        assert_eq!(
            op(&message(FUSE_GETATTR, &with)),
            Operation::Getattr { fh: Some(77) }
        );
        let without = body(&[
            &0u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &77u64.to_ne_bytes(),
        ]);
        assert_eq!(
            op(&message(FUSE_GETATTR, &without)),
            Operation::Getattr { fh: None }
        );
    }

    #[test]
    fn setattr_truncate() {
        let s = SetattrIn {
            valid: FATTR_SIZE | FATTR_FH | FATTR_MTIME_NOW,
            fh: 3,
            size: 0,
            mode: 0o644,
            ..Default::default()
        };
        assert_eq!(
            op(&message(FUSE_SETATTR, &s.to_bytes())),
            Operation::Setattr {
                valid: FATTR_SIZE | FATTR_FH | FATTR_MTIME_NOW,
                fh: Some(3),
                size: Some(0),
                mode: None,
                uid: None,
                gid: None,
                lock_owner: None,
            }
        );
        // A SETATTR that sets times parses; the times themselves are not exposed.
        let times = SetattrIn {
            valid: FATTR_ATIME | FATTR_MODE,
            times: [10, 0, 0, 0, 0, 0, 11, 0, 0],
            mode: 0o100600,
            ..Default::default()
        };
        let Operation::Setattr { valid, mode, .. } = op(&message(FUSE_SETATTR, &times.to_bytes()))
        else {
            panic!("not setattr")
        };
        assert_eq!(valid, FATTR_ATIME | FATTR_MODE);
        assert_eq!(mode, Some(0o100600));
    }

    #[test]
    fn open_flags() {
        let b = body(&[&0o2u32.to_ne_bytes(), &0u32.to_ne_bytes()]);
        assert_eq!(
            op(&message(FUSE_OPEN, &b)),
            Operation::Open {
                flags: 0o2,
                open_flags: 0
            }
        );
    }

    #[test]
    fn read_lock_owner_distinguishes_read_calls_from_page_fills() {
        let read = |read_flags: u32| {
            body(&[
                &5u64.to_ne_bytes(),
                &0u64.to_ne_bytes(),
                &4096u32.to_ne_bytes(),
                &read_flags.to_ne_bytes(),
                &0xABCDu64.to_ne_bytes(),
                &0o100000u32.to_ne_bytes(),
                &0u32.to_ne_bytes(),
            ])
        };
        assert_eq!(
            op(&message(FUSE_READ, &read(FUSE_READ_LOCKOWNER))),
            Operation::Read {
                fh: 5,
                offset: 0,
                size: 4096,
                read_flags: FUSE_READ_LOCKOWNER,
                lock_owner: Some(0xABCD),
                flags: 0o100000,
            }
        );
        let Operation::Read { lock_owner, .. } = op(&message(FUSE_READ, &read(0))) else {
            panic!("not read")
        };
        assert_eq!(lock_owner, None);
    }

    fn write_body(size: u32, data: &[u8]) -> Vec<u8> {
        body(&[
            &5u64.to_ne_bytes(),
            &0u64.to_ne_bytes(),
            &size.to_ne_bytes(),
            &FUSE_WRITE_LOCKOWNER.to_ne_bytes(),
            &9u64.to_ne_bytes(),
            &1u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            data,
        ])
    }

    #[test]
    fn write_data() {
        assert_eq!(
            op(&message(FUSE_WRITE, &write_body(2, b"x\n"))),
            Operation::Write {
                fh: 5,
                offset: 0,
                write_flags: FUSE_WRITE_LOCKOWNER,
                lock_owner: Some(9),
                flags: 1,
                data: b"x\n",
            }
        );
    }

    #[test]
    fn write_size_mismatch() {
        for (size, data) in [(3, &b"x\n"[..]), (1, b"x\n"), (u32::MAX, b"")] {
            assert_eq!(
                parse(&message(FUSE_WRITE, &write_body(size, data))),
                Err(ParseError::WriteSizeMismatch {
                    size,
                    data_len: data.len()
                })
            );
        }
    }

    #[test]
    fn flush_and_release() {
        let flush = body(&[
            &5u64.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &0u32.to_ne_bytes(),
            &6u64.to_ne_bytes(),
        ]);
        assert_eq!(
            op(&message(FUSE_FLUSH, &flush)),
            Operation::Flush {
                fh: 5,
                lock_owner: 6
            }
        );
        let release = body(&[
            &5u64.to_ne_bytes(),
            &2u32.to_ne_bytes(),
            &FUSE_RELEASE_FLUSH.to_ne_bytes(),
            &6u64.to_ne_bytes(),
        ]);
        assert_eq!(
            op(&message(FUSE_RELEASE, &release)),
            Operation::Release {
                fh: 5,
                flags: 2,
                release_flags: FUSE_RELEASE_FLUSH,
                lock_owner: 6
            }
        );
    }

    #[test]
    fn poll_fields() {
        let b = body(&[
            &5u64.to_ne_bytes(),
            &0x1234u64.to_ne_bytes(),
            &FUSE_POLL_SCHEDULE_NOTIFY.to_ne_bytes(),
            &1u32.to_ne_bytes(),
        ]);
        assert_eq!(
            op(&message(FUSE_POLL, &b)),
            Operation::Poll {
                fh: 5,
                kh: 0x1234,
                flags: FUSE_POLL_SCHEDULE_NOTIFY,
                events: 1
            }
        );
    }

    fn ioctl_body(flags: u32, arg: u64, in_size: u32, data: &[u8]) -> Vec<u8> {
        body(&[
            &5u64.to_ne_bytes(),
            &flags.to_ne_bytes(),
            &0xE403u32.to_ne_bytes(),
            &arg.to_ne_bytes(),
            &in_size.to_ne_bytes(),
            &8u32.to_ne_bytes(),
            data,
        ])
    }

    #[test]
    fn ioctl_keeps_the_full_64_bit_argument() {
        assert_eq!(
            op(&message(FUSE_IOCTL, &ioctl_body(0, 0x1_0000_0005, 0, &[]))),
            Operation::Ioctl {
                fh: 5,
                flags: 0,
                cmd: 0xE403,
                arg: 0x1_0000_0005,
                in_size: 0,
                out_size: 8,
                in_data: &[],
            }
        );
    }

    #[test]
    fn ioctl_compat_and_input() {
        let flags = FUSE_IOCTL_COMPAT | FUSE_IOCTL_32BIT;
        let buf = message(FUSE_IOCTL, &ioctl_body(flags, 0xFFFF_0000, 4, b"abcd"));
        let Operation::Ioctl {
            flags: got,
            arg,
            in_data,
            ..
        } = op(&buf)
        else {
            panic!("not ioctl")
        };
        assert_eq!(got, flags);
        assert_eq!(arg, 0xFFFF_0000);
        assert_eq!(in_data, b"abcd");
        assert_eq!(
            parse(&message(FUSE_IOCTL, &ioctl_body(0, 0, 5, b"abcd"))),
            Err(ParseError::IoctlSizeMismatch {
                in_size: 5,
                data_len: 4
            })
        );
    }

    #[test]
    fn interrupt_destroy_unknown() {
        assert_eq!(
            op(&message(FUSE_INTERRUPT, &0x40u64.to_ne_bytes())),
            Operation::Interrupt { unique: 0x40 }
        );
        assert_eq!(op(&message(FUSE_DESTROY, &[])), Operation::Destroy);
        assert_eq!(
            op(&message(FUSE_FSYNC, &[0; 16])),
            Operation::Unknown { opcode: FUSE_FSYNC }
        );
        assert_eq!(
            op(&message(0xFFFF, &[])),
            Operation::Unknown { opcode: 0xFFFF }
        );
    }

    #[test]
    fn truncated_header() {
        let buf = message(FUSE_STATFS, &[]);
        for cut in 0..InHeader::SIZE {
            assert_eq!(
                parse(&buf[..cut]),
                Err(ParseError::TruncatedHeader { got: cut })
            );
        }
    }

    #[test]
    fn length_mismatch() {
        let mut buf = message(FUSE_STATFS, &[]);
        buf.push(0);
        assert_eq!(
            parse(&buf),
            Err(ParseError::LengthMismatch {
                header_len: 40,
                buffer_len: 41
            })
        );
        let buf = message(FUSE_FORGET, &9u64.to_ne_bytes());
        assert_eq!(
            parse(&buf[..44]),
            Err(ParseError::LengthMismatch {
                header_len: 48,
                buffer_len: 44
            })
        );
    }

    #[test]
    fn truncated_bodies() {
        let cases = [
            (FUSE_INIT, InitIn::SIZE),
            (FUSE_FORGET, ForgetIn::SIZE),
            (FUSE_BATCH_FORGET, BatchForgetIn::SIZE),
            (FUSE_GETATTR, GetattrIn::SIZE),
            (FUSE_SETATTR, SetattrIn::SIZE),
            (FUSE_OPEN, OpenIn::SIZE),
            (FUSE_READ, ReadIn::SIZE),
            (FUSE_WRITE, WriteIn::SIZE),
            (FUSE_FLUSH, FlushIn::SIZE),
            (FUSE_RELEASE, ReleaseIn::SIZE),
            (FUSE_POLL, PollIn::SIZE),
            (FUSE_IOCTL, IoctlIn::SIZE),
            (FUSE_INTERRUPT, InterruptIn::SIZE),
        ];
        for (opcode, need) in cases {
            let got = need - 1;
            let err = parse(&message(opcode, &vec![0; got])).unwrap_err();
            assert_eq!(err, ParseError::TruncatedBody { opcode, need, got });
            assert!(err.to_string().contains(opcode_name(opcode).unwrap()));
        }
    }

    #[test]
    fn extensions_are_stripped_and_checked() {
        let mut buf = message(
            FUSE_FORGET,
            &[
                9, 0, 0, 0, 0, 0, 0, 0, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
            ],
        );
        buf[36] = 1; // total_extlen = 1 (8 bytes)
        let req = parse(&buf).unwrap();
        assert_eq!(req.header.extensions_len(), 8);
        assert_eq!(
            req.op,
            Operation::Forget {
                nlookup: u64::from_ne_bytes([9, 0, 0, 0, 0, 0, 0, 0])
            }
        );

        buf[36] = 3;
        assert_eq!(
            parse(&buf),
            Err(ParseError::ExtensionsTooLong {
                opcode: FUSE_FORGET,
                extensions_len: 24,
                body_len: 16
            })
        );
    }

    #[test]
    fn error_messages_are_clear() {
        assert_eq!(
            ParseError::TruncatedHeader { got: 3 }.to_string(),
            "FUSE request of 3 bytes is shorter than the 40 byte header"
        );
        assert_eq!(
            ParseError::TruncatedBody {
                opcode: 999,
                need: 8,
                got: 1
            }
            .to_string(),
            "FUSE opcode 999 request body has 1 bytes, needs at least 8"
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::wire::*;
    use proptest::prelude::*;

    fn valid_messages() -> Vec<Vec<u8>> {
        let with_header = |opcode: u32, body: Vec<u8>| {
            let mut out = InHeader {
                len: u32::try_from(InHeader::SIZE + body.len()).unwrap(),
                opcode,
                unique: 2,
                nodeid: 1,
                ..Default::default()
            }
            .to_bytes();
            out.extend_from_slice(&body);
            out
        };
        let mut write = WriteIn {
            size: 4,
            ..Default::default()
        }
        .to_bytes();
        write.extend_from_slice(b"abcd");
        let mut ioctl = IoctlIn {
            in_size: 2,
            ..Default::default()
        }
        .to_bytes();
        ioctl.extend_from_slice(b"zz");
        let mut init = InitIn {
            major: 7,
            minor: 45,
            flags: FUSE_INIT_EXT as u32,
            ..Default::default()
        }
        .to_bytes();
        init.resize(64, 0xFF);
        vec![
            with_header(FUSE_INIT, init),
            with_header(FUSE_LOOKUP, b"name\0".to_vec()),
            with_header(FUSE_GETATTR, GetattrIn::default().to_bytes()),
            with_header(FUSE_SETATTR, SetattrIn::default().to_bytes()),
            with_header(FUSE_READ, ReadIn::default().to_bytes()),
            with_header(FUSE_WRITE, write),
            with_header(FUSE_IOCTL, ioctl),
            with_header(FUSE_POLL, PollIn::default().to_bytes()),
            with_header(
                FUSE_BATCH_FORGET,
                [
                    BatchForgetIn { count: 1, dummy: 0 }.to_bytes(),
                    ForgetOne::default().to_bytes(),
                ]
                .concat(),
            ),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_mutated_valid_messages(
            which in 0usize..9,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let mut buf = valid_messages().swap_remove(which);
            prop_assert!(parse(&buf).is_ok());
            for (pos, byte) in edits {
                let len = buf.len();
                buf[pos % len] = byte;
            }
            if let Some(cut) = cut {
                buf.truncate(cut % (buf.len() + 1));
            }
            if let Ok(req) = parse(&buf) {
                prop_assert_eq!(req.header.len as usize, buf.len());
            }
        }

        #[test]
        fn parse_never_panics_with_consistent_length(
            opcode in 0u32..60,
            body in proptest::collection::vec(any::<u8>(), 0..200),
            extlen in 0u16..4,
        ) {
            let mut buf = InHeader {
                len: u32::try_from(InHeader::SIZE + body.len()).unwrap(),
                opcode,
                total_extlen: extlen,
                ..Default::default()
            }
            .to_bytes();
            buf.extend_from_slice(&body);
            let _ = parse(&buf);
        }
    }
}
