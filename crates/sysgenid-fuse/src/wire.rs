//! FUSE wire definitions: opcodes, flag bits and the `#[repr(C)]` message structs.
//!
//! Names follow the kernel's `include/uapi/linux/fuse.h` so they are easy to look up there.
//! Every struct implements [`Wire`], which reads and writes its fields one by one from byte
//! slices, so decoding untrusted bytes needs no `unsafe` and cannot read out of bounds.
//!
//! FUSE messages use the host's byte order; on the little-endian hosts this crate targets
//! (x86-64, aarch64) that is little-endian.

/// Major protocol version; Linux has only ever used 7.
pub const FUSE_KERNEL_VERSION: u32 = 7;
/// Minor protocol version this crate speaks (7.39 added `FUSE_DIRECT_IO_ALLOW_MMAP`).
pub const FUSE_KERNEL_MINOR_VERSION: u32 = 39;
/// Oldest kernel minor version accepted: 7.23 (Linux 3.15) has every struct at full size.
pub const MIN_KERNEL_MINOR_VERSION: u32 = 23;
/// Node id of the mount's root, which for a file mount is the file itself.
pub const FUSE_ROOT_ID: u64 = 1;
/// The kernel refuses reads from `/dev/fuse` into buffers smaller than this.
pub const FUSE_MIN_READ_BUFFER: usize = 8192;

// Opcodes.
/// Look up a name in a directory.
pub const FUSE_LOOKUP: u32 = 1;
/// Drop lookup references to a node; never answered.
pub const FUSE_FORGET: u32 = 2;
/// Get attributes.
pub const FUSE_GETATTR: u32 = 3;
/// Set attributes (truncate, chmod, chown, utimes).
pub const FUSE_SETATTR: u32 = 4;
/// Read a symlink.
pub const FUSE_READLINK: u32 = 5;
/// Create a symlink.
pub const FUSE_SYMLINK: u32 = 6;
/// Create a node.
pub const FUSE_MKNOD: u32 = 8;
/// Create a directory.
pub const FUSE_MKDIR: u32 = 9;
/// Remove a file.
pub const FUSE_UNLINK: u32 = 10;
/// Remove a directory.
pub const FUSE_RMDIR: u32 = 11;
/// Rename.
pub const FUSE_RENAME: u32 = 12;
/// Hard link.
pub const FUSE_LINK: u32 = 13;
/// Open a file.
pub const FUSE_OPEN: u32 = 14;
/// Read from an open file.
pub const FUSE_READ: u32 = 15;
/// Write to an open file.
pub const FUSE_WRITE: u32 = 16;
/// File system statistics.
pub const FUSE_STATFS: u32 = 17;
/// Last close of an open file; arrives with pid 0.
pub const FUSE_RELEASE: u32 = 18;
/// Sync a file.
pub const FUSE_FSYNC: u32 = 20;
/// Set an extended attribute.
pub const FUSE_SETXATTR: u32 = 21;
/// Get an extended attribute.
pub const FUSE_GETXATTR: u32 = 22;
/// List extended attributes.
pub const FUSE_LISTXATTR: u32 = 23;
/// Remove an extended attribute.
pub const FUSE_REMOVEXATTR: u32 = 24;
/// A `close(2)` of one file descriptor.
pub const FUSE_FLUSH: u32 = 25;
/// Connection setup; the first request on every mount.
pub const FUSE_INIT: u32 = 26;
/// Open a directory.
pub const FUSE_OPENDIR: u32 = 27;
/// Read a directory.
pub const FUSE_READDIR: u32 = 28;
/// Release a directory.
pub const FUSE_RELEASEDIR: u32 = 29;
/// Sync a directory.
pub const FUSE_FSYNCDIR: u32 = 30;
/// Test a POSIX lock.
pub const FUSE_GETLK: u32 = 31;
/// Set a POSIX lock.
pub const FUSE_SETLK: u32 = 32;
/// Set a POSIX lock, waiting.
pub const FUSE_SETLKW: u32 = 33;
/// `access(2)` check.
pub const FUSE_ACCESS: u32 = 34;
/// Create and open a file.
pub const FUSE_CREATE: u32 = 35;
/// Ask the daemon to abort an outstanding request.
pub const FUSE_INTERRUPT: u32 = 36;
/// Map a block (fuseblk only).
pub const FUSE_BMAP: u32 = 37;
/// Connection teardown (fuseblk and virtiofs only).
pub const FUSE_DESTROY: u32 = 38;
/// An `ioctl(2)` on an open file.
pub const FUSE_IOCTL: u32 = 39;
/// A `poll(2)`/`select(2)`/`epoll` readiness query.
pub const FUSE_POLL: u32 = 40;
/// Answer to a `FUSE_NOTIFY_RETRIEVE`.
pub const FUSE_NOTIFY_REPLY: u32 = 41;
/// Several forgets in one message; never answered.
pub const FUSE_BATCH_FORGET: u32 = 42;
/// Allocate space.
pub const FUSE_FALLOCATE: u32 = 43;
/// Read a directory with attributes.
pub const FUSE_READDIRPLUS: u32 = 44;
/// Rename with flags.
pub const FUSE_RENAME2: u32 = 45;
/// `SEEK_DATA`/`SEEK_HOLE`.
pub const FUSE_LSEEK: u32 = 46;
/// Copy a range between files.
pub const FUSE_COPY_FILE_RANGE: u32 = 47;
/// DAX mapping setup (virtiofs).
pub const FUSE_SETUPMAPPING: u32 = 48;
/// DAX mapping removal (virtiofs).
pub const FUSE_REMOVEMAPPING: u32 = 49;
/// Sync the whole file system.
pub const FUSE_SYNCFS: u32 = 50;
/// Create an unnamed temporary file.
pub const FUSE_TMPFILE: u32 = 51;
/// Extended attributes (`statx`).
pub const FUSE_STATX: u32 = 52;

/// The kernel's name of an opcode, for logs.
pub fn opcode_name(opcode: u32) -> Option<&'static str> {
    Some(match opcode {
        FUSE_LOOKUP => "LOOKUP",
        FUSE_FORGET => "FORGET",
        FUSE_GETATTR => "GETATTR",
        FUSE_SETATTR => "SETATTR",
        FUSE_READLINK => "READLINK",
        FUSE_SYMLINK => "SYMLINK",
        FUSE_MKNOD => "MKNOD",
        FUSE_MKDIR => "MKDIR",
        FUSE_UNLINK => "UNLINK",
        FUSE_RMDIR => "RMDIR",
        FUSE_RENAME => "RENAME",
        FUSE_LINK => "LINK",
        FUSE_OPEN => "OPEN",
        FUSE_READ => "READ",
        FUSE_WRITE => "WRITE",
        FUSE_STATFS => "STATFS",
        FUSE_RELEASE => "RELEASE",
        FUSE_FSYNC => "FSYNC",
        FUSE_SETXATTR => "SETXATTR",
        FUSE_GETXATTR => "GETXATTR",
        FUSE_LISTXATTR => "LISTXATTR",
        FUSE_REMOVEXATTR => "REMOVEXATTR",
        FUSE_FLUSH => "FLUSH",
        FUSE_INIT => "INIT",
        FUSE_OPENDIR => "OPENDIR",
        FUSE_READDIR => "READDIR",
        FUSE_RELEASEDIR => "RELEASEDIR",
        FUSE_FSYNCDIR => "FSYNCDIR",
        FUSE_GETLK => "GETLK",
        FUSE_SETLK => "SETLK",
        FUSE_SETLKW => "SETLKW",
        FUSE_ACCESS => "ACCESS",
        FUSE_CREATE => "CREATE",
        FUSE_INTERRUPT => "INTERRUPT",
        FUSE_BMAP => "BMAP",
        FUSE_DESTROY => "DESTROY",
        FUSE_IOCTL => "IOCTL",
        FUSE_POLL => "POLL",
        FUSE_NOTIFY_REPLY => "NOTIFY_REPLY",
        FUSE_BATCH_FORGET => "BATCH_FORGET",
        FUSE_FALLOCATE => "FALLOCATE",
        FUSE_READDIRPLUS => "READDIRPLUS",
        FUSE_RENAME2 => "RENAME2",
        FUSE_LSEEK => "LSEEK",
        FUSE_COPY_FILE_RANGE => "COPY_FILE_RANGE",
        FUSE_SETUPMAPPING => "SETUPMAPPING",
        FUSE_REMOVEMAPPING => "REMOVEMAPPING",
        FUSE_SYNCFS => "SYNCFS",
        FUSE_TMPFILE => "TMPFILE",
        FUSE_STATX => "STATX",
        _ => return None,
    })
}

// Notification codes, sent in `OutHeader::error` with `unique == 0`.
/// Wake pollers waiting on a poll handle (`kh`).
pub const FUSE_NOTIFY_POLL: i32 = 1;
/// Drop cached attributes and data of an inode.
pub const FUSE_NOTIFY_INVAL_INODE: i32 = 2;
/// Drop a cached directory entry.
pub const FUSE_NOTIFY_INVAL_ENTRY: i32 = 3;
/// Put data into an inode's page cache.
pub const FUSE_NOTIFY_STORE: i32 = 4;
/// `FUSE_NOTIFY_RESEND` (protocol 7.40, Linux 6.9): the kernel sends every request that was
/// read but not answered again, with [`FUSE_UNIQUE_RESEND`] set in its `unique`.
pub const FUSE_NOTIFY_RESEND: i32 = 7;
/// The bit the kernel sets in the `unique` of a request it sends again.
pub const FUSE_UNIQUE_RESEND: u64 = 1 << 63;
/// Ask the kernel to send page cache data back.
pub const FUSE_NOTIFY_RETRIEVE: i32 = 5;
/// Tell the kernel a directory entry was deleted.
pub const FUSE_NOTIFY_DELETE: i32 = 6;

// INIT flags, as one u64: bits 32..63 travel in `flags2` when `FUSE_INIT_EXT` is set.
/// Reads may be sent asynchronously and out of order.
pub const FUSE_ASYNC_READ: u64 = 1 << 0;
/// The daemon implements POSIX locks.
pub const FUSE_POSIX_LOCKS: u64 = 1 << 1;
/// Unused by Linux.
pub const FUSE_FILE_OPS: u64 = 1 << 2;
/// The daemon handles `O_TRUNC` in OPEN itself. Never negotiated by this crate.
pub const FUSE_ATOMIC_O_TRUNC: u64 = 1 << 3;
/// The daemon handles lookups of "." and "..".
pub const FUSE_EXPORT_SUPPORT: u64 = 1 << 4;
/// Writes larger than 4 KiB are allowed.
pub const FUSE_BIG_WRITES: u64 = 1 << 5;
/// Do not apply the umask on create.
pub const FUSE_DONT_MASK: u64 = 1 << 6;
/// The kernel can splice into the device.
pub const FUSE_SPLICE_WRITE: u64 = 1 << 7;
/// The kernel can move pages when splicing.
pub const FUSE_SPLICE_MOVE: u64 = 1 << 8;
/// The kernel can splice from the device.
pub const FUSE_SPLICE_READ: u64 = 1 << 9;
/// The daemon implements BSD `flock` locks.
pub const FUSE_FLOCK_LOCKS: u64 = 1 << 10;
/// ioctl on directories is supported.
pub const FUSE_HAS_IOCTL_DIR: u64 = 1 << 11;
/// Invalidate cached data when mtime changes.
pub const FUSE_AUTO_INVAL_DATA: u64 = 1 << 12;
/// Use READDIRPLUS.
pub const FUSE_DO_READDIRPLUS: u64 = 1 << 13;
/// Use READDIRPLUS adaptively.
pub const FUSE_READDIRPLUS_AUTO: u64 = 1 << 14;
/// Asynchronous direct I/O.
pub const FUSE_ASYNC_DIO: u64 = 1 << 15;
/// Write-back page cache.
pub const FUSE_WRITEBACK_CACHE: u64 = 1 << 16;
/// Opens may be answered with ENOSYS to skip them.
pub const FUSE_NO_OPEN_SUPPORT: u64 = 1 << 17;
/// Parallel lookups and readdir.
pub const FUSE_PARALLEL_DIROPS: u64 = 1 << 18;
/// The daemon clears suid/sgid on write/chown/truncate.
pub const FUSE_HANDLE_KILLPRIV: u64 = 1 << 19;
/// The daemon supports POSIX ACLs.
pub const FUSE_POSIX_ACL: u64 = 1 << 20;
/// Reading an aborted connection gives ECONNABORTED instead of ENODEV.
pub const FUSE_ABORT_ERROR: u64 = 1 << 21;
/// `InitOut::max_pages` is valid.
pub const FUSE_MAX_PAGES: u64 = 1 << 22;
/// Cache READLINK answers.
pub const FUSE_CACHE_SYMLINKS: u64 = 1 << 23;
/// Opendirs may be answered with ENOSYS to skip them.
pub const FUSE_NO_OPENDIR_SUPPORT: u64 = 1 << 24;
/// Cached data is only dropped on explicit request.
pub const FUSE_EXPLICIT_INVAL_DATA: u64 = 1 << 25;
/// `InitOut::map_alignment` is valid.
pub const FUSE_MAP_ALIGNMENT: u64 = 1 << 26;
/// Automatic submounts.
pub const FUSE_SUBMOUNTS: u64 = 1 << 27;
/// Second version of `FUSE_HANDLE_KILLPRIV`.
pub const FUSE_HANDLE_KILLPRIV_V2: u64 = 1 << 28;
/// Extended SETXATTR input.
pub const FUSE_SETXATTR_EXT: u64 = 1 << 29;
/// INIT carries `flags2` (bits 32..63); kernel 5.17+, protocol 7.36.
pub const FUSE_INIT_EXT: u64 = 1 << 30;
/// Reserved.
pub const FUSE_INIT_RESERVED: u64 = 1 << 31;
/// Security context on create requests.
pub const FUSE_SECURITY_CTX: u64 = 1 << 32;
/// Per-inode DAX.
pub const FUSE_HAS_INODE_DAX: u64 = 1 << 33;
/// Supplementary groups extension on create requests.
pub const FUSE_CREATE_SUPP_GROUP: u64 = 1 << 34;
/// Expire-only entry invalidation.
pub const FUSE_HAS_EXPIRE_ONLY: u64 = 1 << 35;
/// Shared mmap of `FOPEN_DIRECT_IO` files; kernel 6.6+ (named `FUSE_DIRECT_IO_RELAX` in 6.6).
pub const FUSE_DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;

// OPEN reply flags.
/// Bypass the page cache for this open file: every read(2)/write(2) reaches the daemon.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// Keep the page cache from earlier opens.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// The file has no seek position semantics (`lseek` fails with ESPIPE).
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
/// Cache directory contents.
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;
/// Stream-like file without a position.
pub const FOPEN_STREAM: u32 = 1 << 4;
/// Skip FLUSH on close.
pub const FOPEN_NOFLUSH: u32 = 1 << 5;
/// Writes of this open file within its size may run in parallel: the kernel takes the inode
/// lock shared instead of exclusive for each direct write (Linux 6.2+; older kernels ignore it).
pub const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;

// SETATTR `valid` bits.
/// `mode` is set.
pub const FATTR_MODE: u32 = 1 << 0;
/// `uid` is set.
pub const FATTR_UID: u32 = 1 << 1;
/// `gid` is set.
pub const FATTR_GID: u32 = 1 << 2;
/// `size` is set (truncate).
pub const FATTR_SIZE: u32 = 1 << 3;
/// `atime` is set.
pub const FATTR_ATIME: u32 = 1 << 4;
/// `mtime` is set.
pub const FATTR_MTIME: u32 = 1 << 5;
/// `fh` is valid.
pub const FATTR_FH: u32 = 1 << 6;
/// Set atime to now.
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
/// Set mtime to now.
pub const FATTR_MTIME_NOW: u32 = 1 << 8;
/// `lock_owner` is valid.
pub const FATTR_LOCKOWNER: u32 = 1 << 9;
/// `ctime` is set.
pub const FATTR_CTIME: u32 = 1 << 10;
/// Clear suid/sgid.
pub const FATTR_KILL_SUIDGID: u32 = 1 << 11;

/// GETATTR: `fh` is valid (the call came through an open file, e.g. `fstat`).
pub const FUSE_GETATTR_FH: u32 = 1 << 0;
/// READ: `lock_owner` is valid. Set for read(2); page-cache fills (mmap faults) lack it.
pub const FUSE_READ_LOCKOWNER: u32 = 1 << 1;
/// WRITE: delayed write from the page cache.
pub const FUSE_WRITE_CACHE: u32 = 1 << 0;
/// WRITE: `lock_owner` is valid.
pub const FUSE_WRITE_LOCKOWNER: u32 = 1 << 1;
/// WRITE: clear suid/sgid.
pub const FUSE_WRITE_KILL_SUIDGID: u32 = 1 << 2;
/// RELEASE: flush as well.
pub const FUSE_RELEASE_FLUSH: u32 = 1 << 0;
/// RELEASE: drop `flock` locks of `lock_owner`.
pub const FUSE_RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;

// IOCTL flags.
/// A 32-bit caller on a 64-bit kernel (compat ioctl); `arg` is its 32-bit value zero-extended.
pub const FUSE_IOCTL_COMPAT: u32 = 1 << 0;
/// Unrestricted ioctl (CUSE only); never set for a FUSE file.
pub const FUSE_IOCTL_UNRESTRICTED: u32 = 1 << 1;
/// Reply flag asking for a retry with other buffers (unrestricted ioctls only).
pub const FUSE_IOCTL_RETRY: u32 = 1 << 2;
/// The caller uses 32-bit pointers and longs (set together with `FUSE_IOCTL_COMPAT`).
pub const FUSE_IOCTL_32BIT: u32 = 1 << 3;
/// The ioctl is on a directory.
pub const FUSE_IOCTL_DIR: u32 = 1 << 4;
/// An x32 caller (32-bit pointers, 64-bit time).
pub const FUSE_IOCTL_COMPAT_X32: u32 = 1 << 5;
/// Most input plus output iovecs of an unrestricted ioctl.
pub const FUSE_IOCTL_MAX_IOV: u32 = 256;

/// POLL: the kernel wants a `FUSE_NOTIFY_POLL` with this request's `kh` when readiness changes.
pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;

/// Reads and writes one wire struct field by field in host byte order.
pub trait Wire: Sized {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Reads a value from the front of `bytes` and advances it; `None` if too short.
    fn read(bytes: &mut &[u8]) -> Option<Self>;
    /// Appends the encoded value to `out`.
    fn write(&self, out: &mut Vec<u8>);
    /// Decodes a value from the front of `bytes`, ignoring any bytes after it.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes;
        Self::read(&mut rest)
    }
    /// Encodes the value into a new vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::SIZE);
        self.write(&mut out);
        out
    }
}

macro_rules! wire_scalar {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const SIZE: usize = size_of::<$t>();
            fn read(bytes: &mut &[u8]) -> Option<Self> {
                let (head, tail) = bytes.split_first_chunk::<{ size_of::<$t>() }>()?;
                *bytes = tail;
                Some(<$t>::from_ne_bytes(*head))
            }
            fn write(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_ne_bytes());
            }
        }
    )*};
}
wire_scalar!(u16, u32, u64, i32, i64);

impl<const N: usize> Wire for [u32; N] {
    const SIZE: usize = 4 * N;
    fn read(bytes: &mut &[u8]) -> Option<Self> {
        let mut out = [0u32; N];
        for slot in &mut out {
            *slot = u32::read(bytes)?;
        }
        Some(out)
    }
    fn write(&self, out: &mut Vec<u8>) {
        for v in self {
            v.write(out);
        }
    }
}

/// Declares a `#[repr(C)]` wire struct, its [`Wire`] impl and a check that its encoded size
/// equals both its in-memory size (no hidden padding) and the kernel's size.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident = $kernel_size:literal {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Wire for $name {
            const SIZE: usize = 0 $( + <$ty as Wire>::SIZE )*;
            fn read(bytes: &mut &[u8]) -> Option<Self> {
                Some(Self { $( $field: <$ty as Wire>::read(bytes)?, )* })
            }
            fn write(&self, out: &mut Vec<u8>) {
                $( <$ty as Wire>::write(&self.$field, out); )*
            }
        }

        const _: () = assert!(<$name as Wire>::SIZE == size_of::<$name>());
        const _: () = assert!(<$name as Wire>::SIZE == $kernel_size);
    };
}

wire_struct! {
    /// Header of every request the kernel sends (`fuse_in_header`).
    pub struct InHeader = 40 {
        /// Total message length, header included.
        pub len: u32,
        /// Operation code (`FUSE_*`).
        pub opcode: u32,
        /// Request id to echo in the reply.
        pub unique: u64,
        /// Inode the request is about ([`FUSE_ROOT_ID`] for the mounted file).
        pub nodeid: u64,
        /// Caller's fs uid.
        pub uid: u32,
        /// Caller's fs gid.
        pub gid: u32,
        /// Caller's thread id (0 for RELEASE and other kernel-internal requests).
        pub pid: u32,
        /// Length of request extensions at the end of the message, in 8-byte units (7.38+).
        pub total_extlen: u16,
        /// Unused.
        pub padding: u16,
    }
}

wire_struct! {
    /// Header of every reply and notification (`fuse_out_header`).
    pub struct OutHeader = 16 {
        /// Total message length, header included.
        pub len: u32,
        /// Negative errno for replies, notify code for notifications.
        pub error: i32,
        /// Request id being answered; 0 for notifications.
        pub unique: u64,
    }
}

wire_struct! {
    /// INIT request body as sent by every kernel (`fuse_init_in` before 7.36).
    ///
    /// Kernels from 7.36 append `flags2` (bits 32..63 of the flags) and reserved words, and
    /// set `FUSE_INIT_EXT` in `flags` to say so.
    pub struct InitIn = 16 {
        /// Kernel's major version.
        pub major: u32,
        /// Kernel's minor version.
        pub minor: u32,
        /// Kernel's readahead limit.
        pub max_readahead: u32,
        /// Low 32 bits of the offered INIT flags.
        pub flags: u32,
    }
}

wire_struct! {
    /// INIT reply body (`fuse_init_out`, full size since 7.23).
    pub struct InitOut = 64 {
        /// Daemon's major version.
        pub major: u32,
        /// Daemon's minor version.
        pub minor: u32,
        /// Readahead limit.
        pub max_readahead: u32,
        /// Low 32 bits of the accepted INIT flags.
        pub flags: u32,
        /// Background request limit (0 keeps the kernel default).
        pub max_background: u16,
        /// Congestion threshold (0 keeps the kernel default).
        pub congestion_threshold: u16,
        /// Largest WRITE payload the daemon accepts.
        pub max_write: u32,
        /// Timestamp granularity in ns.
        pub time_gran: u32,
        /// Largest request in pages (with `FUSE_MAX_PAGES`).
        pub max_pages: u16,
        /// DAX map alignment (with `FUSE_MAP_ALIGNMENT`).
        pub map_alignment: u16,
        /// High 32 bits of the accepted INIT flags (with `FUSE_INIT_EXT`).
        pub flags2: u32,
        /// Reserved, zero.
        pub unused: [u32; 7],
    }
}

wire_struct! {
    /// File attributes (`fuse_attr`).
    pub struct Attr = 88 {
        /// Inode number.
        pub ino: u64,
        /// Size in bytes.
        pub size: u64,
        /// Allocated 512-byte blocks.
        pub blocks: u64,
        /// Access time, seconds.
        pub atime: u64,
        /// Modification time, seconds.
        pub mtime: u64,
        /// Status change time, seconds.
        pub ctime: u64,
        /// Access time, nanoseconds.
        pub atimensec: u32,
        /// Modification time, nanoseconds.
        pub mtimensec: u32,
        /// Status change time, nanoseconds.
        pub ctimensec: u32,
        /// File type and permission bits (`S_IFREG | 0o644`).
        pub mode: u32,
        /// Link count.
        pub nlink: u32,
        /// Owner.
        pub uid: u32,
        /// Group.
        pub gid: u32,
        /// Device number for device nodes.
        pub rdev: u32,
        /// Preferred I/O size.
        pub blksize: u32,
        /// `FUSE_ATTR_*` flags.
        pub flags: u32,
    }
}

wire_struct! {
    /// GETATTR request body (`fuse_getattr_in`).
    pub struct GetattrIn = 16 {
        /// `FUSE_GETATTR_*` flags.
        pub getattr_flags: u32,
        /// Unused.
        pub dummy: u32,
        /// File handle, valid with `FUSE_GETATTR_FH`.
        pub fh: u64,
    }
}

wire_struct! {
    /// GETATTR and SETATTR reply body (`fuse_attr_out`).
    pub struct AttrOut = 104 {
        /// Attribute cache timeout, seconds.
        pub attr_valid: u64,
        /// Attribute cache timeout, nanoseconds.
        pub attr_valid_nsec: u32,
        /// Unused.
        pub dummy: u32,
        /// Attributes.
        pub attr: Attr,
    }
}

wire_struct! {
    /// SETATTR request body (`fuse_setattr_in`).
    pub struct SetattrIn = 88 {
        /// `FATTR_*` bits saying which fields are set.
        pub valid: u32,
        /// Unused.
        pub padding: u32,
        /// File handle, with `FATTR_FH`.
        pub fh: u64,
        /// New size, with `FATTR_SIZE`.
        pub size: u64,
        /// Lock owner, with `FATTR_LOCKOWNER`.
        pub lock_owner: u64,
        /// New atime, mtime and ctime (`u64` seconds each), then their `u32` nanoseconds,
        /// with `FATTR_ATIME`, `FATTR_MTIME` and `FATTR_CTIME`; kept raw, as a one-file
        /// daemon never stores times.
        pub times: [u32; 9],
        /// New mode, with `FATTR_MODE`.
        pub mode: u32,
        /// Unused.
        pub unused4: u32,
        /// New owner, with `FATTR_UID`.
        pub uid: u32,
        /// New group, with `FATTR_GID`.
        pub gid: u32,
        /// Unused.
        pub unused5: u32,
    }
}

wire_struct! {
    /// OPEN request body (`fuse_open_in`).
    pub struct OpenIn = 8 {
        /// `open(2)` flags, without `O_CREAT`, `O_EXCL`, `O_NOCTTY` and (unless
        /// `FUSE_ATOMIC_O_TRUNC`) `O_TRUNC`.
        pub flags: u32,
        /// `FUSE_OPEN_*` flags (7.33+), zero before.
        pub open_flags: u32,
    }
}

wire_struct! {
    /// OPEN reply body (`fuse_open_out`).
    pub struct OpenOut = 16 {
        /// File handle the kernel passes back on later requests.
        pub fh: u64,
        /// `FOPEN_*` flags.
        pub open_flags: u32,
        /// Unused (a passthrough backing id on 7.40+), zero.
        pub padding: u32,
    }
}

wire_struct! {
    /// READ request body (`fuse_read_in`).
    pub struct ReadIn = 40 {
        /// File handle.
        pub fh: u64,
        /// File offset.
        pub offset: u64,
        /// Bytes wanted.
        pub size: u32,
        /// `FUSE_READ_*` flags.
        pub read_flags: u32,
        /// Lock owner, with `FUSE_READ_LOCKOWNER`.
        pub lock_owner: u64,
        /// `open(2)` flags of the file.
        pub flags: u32,
        /// Unused.
        pub padding: u32,
    }
}

wire_struct! {
    /// WRITE request body (`fuse_write_in`), followed by `size` bytes of data.
    pub struct WriteIn = 40 {
        /// File handle.
        pub fh: u64,
        /// File offset.
        pub offset: u64,
        /// Data length.
        pub size: u32,
        /// `FUSE_WRITE_*` flags.
        pub write_flags: u32,
        /// Lock owner, with `FUSE_WRITE_LOCKOWNER`.
        pub lock_owner: u64,
        /// `open(2)` flags of the file.
        pub flags: u32,
        /// Unused.
        pub padding: u32,
    }
}

wire_struct! {
    /// WRITE reply body (`fuse_write_out`).
    pub struct WriteOut = 8 {
        /// Bytes written.
        pub size: u32,
        /// Unused.
        pub padding: u32,
    }
}

wire_struct! {
    /// FLUSH request body (`fuse_flush_in`).
    pub struct FlushIn = 24 {
        /// File handle.
        pub fh: u64,
        /// Unused.
        pub unused: u32,
        /// Unused.
        pub padding: u32,
        /// Lock owner of the closing file table.
        pub lock_owner: u64,
    }
}

wire_struct! {
    /// RELEASE request body (`fuse_release_in`).
    pub struct ReleaseIn = 24 {
        /// File handle.
        pub fh: u64,
        /// `open(2)` flags of the file.
        pub flags: u32,
        /// `FUSE_RELEASE_*` flags.
        pub release_flags: u32,
        /// Lock owner, with `FUSE_RELEASE_FLOCK_UNLOCK`.
        pub lock_owner: u64,
    }
}

wire_struct! {
    /// FORGET request body (`fuse_forget_in`).
    pub struct ForgetIn = 8 {
        /// Lookups to drop.
        pub nlookup: u64,
    }
}

wire_struct! {
    /// BATCH_FORGET request body (`fuse_batch_forget_in`), followed by `count` [`ForgetOne`].
    pub struct BatchForgetIn = 8 {
        /// Number of entries.
        pub count: u32,
        /// Unused.
        pub dummy: u32,
    }
}

wire_struct! {
    /// One BATCH_FORGET entry (`fuse_forget_one`).
    pub struct ForgetOne = 16 {
        /// Node id.
        pub nodeid: u64,
        /// Lookups to drop.
        pub nlookup: u64,
    }
}

wire_struct! {
    /// INTERRUPT request body (`fuse_interrupt_in`).
    pub struct InterruptIn = 8 {
        /// `unique` of the request to interrupt.
        pub unique: u64,
    }
}

wire_struct! {
    /// IOCTL request body (`fuse_ioctl_in`), followed by `in_size` bytes of input.
    pub struct IoctlIn = 32 {
        /// File handle.
        pub fh: u64,
        /// `FUSE_IOCTL_*` flags.
        pub flags: u32,
        /// ioctl command number.
        pub cmd: u32,
        /// The caller's integer argument (a user address for commands with a size).
        pub arg: u64,
        /// Input bytes that follow (the `_IOC_SIZE` of a `_IOW` command).
        pub in_size: u32,
        /// Largest output the caller accepts (the `_IOC_SIZE` of an `_IOR` command).
        pub out_size: u32,
    }
}

wire_struct! {
    /// IOCTL reply body (`fuse_ioctl_out`), followed by at most `out_size` bytes of output.
    pub struct IoctlOut = 16 {
        /// Value `ioctl(2)` returns; negative values become the caller's errno.
        pub result: i32,
        /// `FUSE_IOCTL_*` reply flags (0 for a restricted ioctl).
        pub flags: u32,
        /// Input iovecs for a retry (unrestricted only).
        pub in_iovs: u32,
        /// Output iovecs for a retry (unrestricted only).
        pub out_iovs: u32,
    }
}

wire_struct! {
    /// POLL request body (`fuse_poll_in`).
    pub struct PollIn = 24 {
        /// File handle.
        pub fh: u64,
        /// Kernel poll handle to pass to `FUSE_NOTIFY_POLL`.
        pub kh: u64,
        /// `FUSE_POLL_*` flags.
        pub flags: u32,
        /// Requested `POLL*` events (7.21+).
        pub events: u32,
    }
}

wire_struct! {
    /// POLL reply body (`fuse_poll_out`).
    pub struct PollOut = 8 {
        /// Ready `POLL*` events.
        pub revents: u32,
        /// Unused.
        pub padding: u32,
    }
}

wire_struct! {
    /// `FUSE_NOTIFY_POLL` body (`fuse_notify_poll_wakeup_out`).
    pub struct NotifyPollWakeupOut = 8 {
        /// Kernel poll handle from a POLL request.
        pub kh: u64,
    }
}

wire_struct! {
    /// `FUSE_NOTIFY_STORE` body (`fuse_notify_store_out`), followed by `size` bytes.
    pub struct NotifyStoreOut = 24 {
        /// Node id.
        pub nodeid: u64,
        /// File offset of the data.
        pub offset: u64,
        /// Data length.
        pub size: u32,
        /// Unused.
        pub padding: u32,
    }
}

wire_struct! {
    /// STATFS reply body (`fuse_kstatfs`, wrapped as `fuse_statfs_out`).
    pub struct Kstatfs = 80 {
        /// Total blocks.
        pub blocks: u64,
        /// Free blocks.
        pub bfree: u64,
        /// Free blocks for unprivileged users.
        pub bavail: u64,
        /// Total inodes.
        pub files: u64,
        /// Free inodes.
        pub ffree: u64,
        /// Block size.
        pub bsize: u32,
        /// Longest name.
        pub namelen: u32,
        /// Fragment size.
        pub frsize: u32,
        /// Unused.
        pub padding: u32,
        /// Unused.
        pub spare: [u32; 6],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_round_trip_and_refuse_short_input() {
        let bytes = 0x1122_3344_5566_7788u64.to_ne_bytes();
        assert_eq!(u64::decode(&bytes), Some(0x1122_3344_5566_7788));
        assert_eq!(u64::decode(&bytes[..7]), None);
        let mut rest = &bytes[..];
        let first: [u8; 4] = bytes[..4].try_into().unwrap();
        assert_eq!(u32::read(&mut rest), Some(u32::from_ne_bytes(first)));
        assert_eq!(rest.len(), 4);
    }

    #[test]
    fn structs_round_trip() {
        let read = ReadIn {
            fh: 1,
            offset: 2,
            size: 3,
            read_flags: FUSE_READ_LOCKOWNER,
            lock_owner: 5,
            flags: 6,
            padding: 0,
        };
        let bytes = read.to_bytes();
        assert_eq!(bytes.len(), ReadIn::SIZE);
        assert_eq!(ReadIn::decode(&bytes), Some(read));
        assert_eq!(ReadIn::decode(&bytes[..39]), None);
    }

    #[test]
    fn nested_struct_sizes_match_kernel() {
        assert_eq!(AttrOut::SIZE, 16 + Attr::SIZE);
        assert_eq!(AttrOut::default().to_bytes().len(), 104);
    }

    #[test]
    fn opcode_names() {
        assert_eq!(opcode_name(FUSE_IOCTL), Some("IOCTL"));
        assert_eq!(opcode_name(7), None);
    }

    #[test]
    fn flags2_bit_of_direct_io_allow_mmap() {
        assert_eq!(FUSE_DIRECT_IO_ALLOW_MMAP >> 32, 1 << 4);
    }
}
