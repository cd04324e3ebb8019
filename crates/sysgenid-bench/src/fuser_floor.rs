//! The second floor: the same one-file server written on the `fuser` crate.
//!
//! A directory holding one file, `floor`, mounted by `fuser` itself (as root it calls `mount(2)`;
//! no libfuse and no `fusermount`). One `fuser` thread of this process answers LOOKUP and
//! GETATTR (cached for an hour), OPEN (`FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE`), READ (4 bytes),
//! WRITE and IOCTL (result 0); `fuser` answers the rest with its defaults. The per-call rows time
//! `read(2)`, `write(2)` and `ioctl(2)` on the open file, exactly as for the first floor.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, IoctlFlags, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyEntry, ReplyIoctl, ReplyOpen, ReplyWrite, Request, SessionACL, WriteFlags,
};

use crate::fuse_floor::DATA;

const TTL: Duration = Duration::from_secs(3600);
const FILE_INO: INodeNo = INodeNo(2);
const NAME: &str = "floor";

/// The file system: a root directory and one file.
struct OneFile;

fn attr(ino: INodeNo, kind: FileType, perm: u16) -> FileAttr {
    FileAttr {
        ino,
        size: 4096,
        blocks: 8,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind,
        perm,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for OneFile {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent == INodeNo::ROOT && name == NAME {
            let file = attr(FILE_INO, FileType::RegularFile, 0o600);
            reply.entry(&TTL, &file, Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match ino {
            INodeNo::ROOT => reply.attr(&TTL, &attr(ino, FileType::Directory, 0o700)),
            FILE_INO => reply.attr(&TTL, &attr(ino, FileType::RegularFile, 0o600)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let flags = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE;
        reply.opened(FileHandle(1), flags);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply.data(&DATA[..DATA.len().min(size as usize)]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.written(data.len() as u32);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.ioctl(0, &[]);
    }
}

/// A mounted `fuser` floor.
pub struct FuserFloor {
    session: BackgroundSession,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for FuserFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuserFloor")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl FuserFloor {
    /// Mounts the file system on a new temporary directory, served by one `fuser` thread.
    pub fn start() -> FuserFloor {
        let dir = tempfile::Builder::new()
            .prefix("sysgenid-bench-fuser-")
            .tempdir()
            .expect("temp dir");
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("sysgenid-bench-fuser".to_owned())];
        config.acl = SessionACL::Owner;
        config.n_threads = Some(1);
        config.clone_fd = false;
        let session = fuser::Session::new(OneFile, dir.path(), &config)
            .expect("mount the fuser floor")
            .spawn()
            .expect("start the fuser floor thread");
        FuserFloor {
            session,
            file: dir.path().join(NAME),
            _dir: dir,
        }
    }

    /// The file to open.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Unmounts and waits for the server thread to end.
    pub fn stop(self) {
        self.session
            .umount_and_join()
            .expect("unmount the fuser floor");
    }
}
