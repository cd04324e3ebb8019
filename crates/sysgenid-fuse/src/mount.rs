//! Mounting a FUSE file system on a regular file, unmounting it, and probing a mount's state.
//!
//! Root mounts with `mount(2)` directly. Other users go through `fusermount3` (Debian package
//! `fuse3`), which mounts and passes the `/dev/fuse` descriptor back over a socket.

use std::ffi::CString;
use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use rustix::fs::FileType;
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};

use crate::channel::{Channel, ChannelError};

/// The helper used for mounts without root.
pub const FUSERMOUNT: &str = "fusermount3";
/// Environment variable through which `fusermount3` learns its socket.
const COMMFD_ENV: &str = "_FUSE_COMMFD";
/// `rootmode` of a mount whose root is a regular file (`S_IFREG`, octal).
const ROOTMODE_REGULAR_FILE: u32 = 0o100000;
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// How to mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMethod {
    /// `mount(2)` when running as root (falling back to `fusermount3` on `EPERM`),
    /// `fusermount3` otherwise.
    Auto,
    /// `mount(2)` directly; needs root (`CAP_SYS_ADMIN`).
    Syscall,
    /// Through `fusermount3`.
    Fusermount,
}

/// Mount settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Source shown in `/proc/mounts`.
    pub fsname: String,
    /// Subtype: the file system type becomes `fuse.<subtype>`.
    pub subtype: Option<String>,
    /// Let users other than the mounter use the file (`allow_other`; without root this needs
    /// `user_allow_other` in `/etc/fuse.conf`).
    pub allow_other: bool,
    /// Let the kernel check permissions from the file's mode (`default_permissions`).
    pub default_permissions: bool,
    /// How to mount.
    pub method: MountMethod,
    /// The `fusermount3` program to run, looked up in `PATH` unless it has a slash.
    pub fusermount: PathBuf,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            fsname: "sysgenid".to_owned(),
            subtype: Some("sysgenid".to_owned()),
            allow_other: false,
            default_permissions: false,
            method: MountMethod::Auto,
            fusermount: PathBuf::from(FUSERMOUNT),
        }
    }
}

/// Errors of mounting, unmounting and probing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// `/dev/fuse` could not be opened.
    #[error(transparent)]
    Device(#[from] ChannelError),
    /// The mount target cannot be examined.
    #[error("mount target {}: {source}", path.display())]
    Target {
        /// The target.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The mount target is a FUSE mount whose daemon is gone.
    #[error(
        "mount target {} is a stale FUSE mount whose daemon is gone; unmount it first \
         (umount -l, or fusermount3 -uz)",
        path.display()
    )]
    StaleTarget {
        /// The target.
        path: PathBuf,
    },
    /// The mount target is not a regular file.
    #[error("mount target {} is not a regular file", path.display())]
    NotRegularFile {
        /// The target.
        path: PathBuf,
    },
    /// A mount option value cannot be passed on.
    #[error("invalid mount option {name}={value:?}: {reason}")]
    InvalidOption {
        /// Option name.
        name: &'static str,
        /// Rejected value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// `mount(2)` failed.
    #[error("mount(2) of {fstype} on {} failed: {source}", path.display())]
    Mount {
        /// The target.
        path: PathBuf,
        /// File system type passed.
        fstype: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `umount2(2)` failed.
    #[error("unmounting {} failed: {source}", path.display())]
    Unmount {
        /// The target.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `fusermount3` is not installed.
    #[error(
        "{} not found: FUSE mounts without root need fusermount3 from the Debian package \
         `fuse3` (apt-get install fuse3)",
        program.display()
    )]
    FusermountMissing {
        /// The program looked for.
        program: PathBuf,
    },
    /// `fusermount3` could not be started.
    #[error("cannot run {}: {source}", program.display())]
    FusermountSpawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `fusermount3` failed.
    #[error("{} failed ({status}): {}", program.display(), stderr.trim())]
    Fusermount {
        /// The program.
        program: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The socket to `fusermount3` failed.
    #[error("socket to fusermount3 failed: {0}")]
    Socket(#[source] io::Error),
    /// `/proc/self/mountinfo` cannot be read.
    #[error("cannot read {MOUNTINFO}: {0}")]
    MountInfo(#[source] io::Error),
}

/// A mounted file system; says how to unmount it. Dropping it does not unmount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    target: PathBuf,
    method: MountMethod,
    fusermount: PathBuf,
}

impl Mount {
    /// A mount that another process made at `target` with `method` (a daemon taking over a
    /// live connection), so that this one can unmount it the same way.
    pub fn existing(target: &Path, method: MountMethod) -> Mount {
        mounted(target, &MountOptions::default(), method)
    }

    /// The mount point as given to [`mount`].
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// How it was mounted: [`MountMethod::Syscall`] or [`MountMethod::Fusermount`].
    pub fn method(&self) -> MountMethod {
        self.method
    }

    /// Unmounts the way it was mounted; `detach` makes it lazy (`MNT_DETACH`, `-z`), so it
    /// succeeds while the file is still open.
    pub fn unmount(&self, detach: bool) -> Result<(), MountError> {
        match self.method {
            MountMethod::Fusermount => fusermount_unmount(&self.fusermount, &self.target, detach),
            MountMethod::Auto | MountMethod::Syscall => syscall_unmount(&self.target, detach),
        }
    }
}

/// Mounts a FUSE file system on the existing regular file `target` and returns the
/// connection to serve it. The kernel's first request will be INIT.
pub fn mount(target: &Path, options: &MountOptions) -> Result<(Mount, Channel), MountError> {
    check_option("fsname", &options.fsname)?;
    if let Some(subtype) = &options.subtype {
        check_option("subtype", subtype)?;
    }
    check_target(target)?;
    let is_root = rustix::process::geteuid().is_root();
    let (channel, method) = match options.method {
        MountMethod::Syscall => (syscall_mount(target, options)?, MountMethod::Syscall),
        MountMethod::Auto if is_root => match syscall_mount(target, options) {
            Ok(channel) => (channel, MountMethod::Syscall),
            Err(MountError::Mount { source, .. })
                if source.raw_os_error() == Some(Errno::PERM.raw_os_error()) =>
            {
                (fusermount_mount(target, options)?, MountMethod::Fusermount)
            }
            Err(e) => return Err(e),
        },
        MountMethod::Auto | MountMethod::Fusermount => {
            (fusermount_mount(target, options)?, MountMethod::Fusermount)
        }
    };
    Ok((mounted(target, options, method), channel))
}

fn mounted(target: &Path, options: &MountOptions, method: MountMethod) -> Mount {
    Mount {
        target: target.to_owned(),
        method,
        fusermount: options.fusermount.clone(),
    }
}

/// Unmounts the FUSE mount at `target`: `umount2(2)` as root, `fusermount3 -u` otherwise.
pub fn unmount(target: &Path, detach: bool) -> Result<(), MountError> {
    if rustix::process::geteuid().is_root() {
        syscall_unmount(target, detach)
    } else {
        fusermount_unmount(Path::new(FUSERMOUNT), target, detach)
    }
}

fn check_option(name: &'static str, value: &str) -> Result<(), MountError> {
    let reason = if value.is_empty() {
        "empty"
    } else if value.contains([',', '\0']) || value.chars().any(char::is_whitespace) {
        "contains a comma, NUL or white space"
    } else {
        return Ok(());
    };
    Err(MountError::InvalidOption {
        name,
        value: value.to_owned(),
        reason,
    })
}

fn check_target(target: &Path) -> Result<(), MountError> {
    match rustix::fs::stat(target) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => Ok(()),
        Ok(_) => Err(MountError::NotRegularFile {
            path: target.to_owned(),
        }),
        Err(Errno::NOTCONN | Errno::CONNABORTED) => Err(MountError::StaleTarget {
            path: target.to_owned(),
        }),
        Err(e) => Err(MountError::Target {
            path: target.to_owned(),
            source: e.into(),
        }),
    }
}

fn fstype(options: &MountOptions) -> String {
    match &options.subtype {
        Some(subtype) => format!("fuse.{subtype}"),
        None => "fuse".to_owned(),
    }
}

fn syscall_mount(target: &Path, options: &MountOptions) -> Result<Channel, MountError> {
    let channel = Channel::open()?;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        channel.as_raw_fd(),
        ROOTMODE_REGULAR_FILE,
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    if options.allow_other {
        data.push_str(",allow_other");
    }
    if options.default_permissions {
        data.push_str(",default_permissions");
    }
    let fstype = fstype(options);
    let data = CString::new(data).map_err(|_| MountError::InvalidOption {
        name: "fsname",
        value: options.fsname.clone(),
        reason: "contains NUL",
    })?;
    rustix::mount::mount(
        options.fsname.as_str(),
        target,
        fstype.as_str(),
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|e| MountError::Mount {
        path: target.to_owned(),
        fstype,
        source: e.into(),
    })?;
    Ok(channel)
}

fn syscall_unmount(target: &Path, detach: bool) -> Result<(), MountError> {
    let flags = if detach {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    rustix::mount::unmount(target, flags).map_err(|e| MountError::Unmount {
        path: target.to_owned(),
        source: e.into(),
    })
}

fn spawn_error(program: &Path, err: io::Error) -> MountError {
    if err.kind() == io::ErrorKind::NotFound {
        MountError::FusermountMissing {
            program: program.to_owned(),
        }
    } else {
        MountError::FusermountSpawn {
            program: program.to_owned(),
            source: err,
        }
    }
}

fn fusermount_mount(target: &Path, options: &MountOptions) -> Result<Channel, MountError> {
    let program = &options.fusermount;
    let mut opts = format!("fsname={}", options.fsname);
    if let Some(subtype) = &options.subtype {
        opts.push_str(",subtype=");
        opts.push_str(subtype);
    }
    if options.allow_other {
        opts.push_str(",allow_other");
    }
    if options.default_permissions {
        opts.push_str(",default_permissions");
    }

    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| MountError::Socket(e.into()))?;
    let theirs_number = theirs.as_raw_fd();

    let mut cmd = Command::new(program);
    cmd.arg("-o")
        .arg(&opts)
        .arg("--")
        .arg(target)
        .env(COMMFD_ENV, theirs_number.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The closure owns the child's end, so dropping `cmd` closes the parent's copy.
    let keep_open_across_exec = move || -> io::Result<()> {
        rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty())?;
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec. It makes one fcntl(2) system
    // call through rustix, which is async-signal-safe, and allocates nothing and takes no lock.
    unsafe { cmd.pre_exec(keep_open_across_exec) };
    let child = cmd.spawn().map_err(|e| spawn_error(program, e));
    drop(cmd);
    let child = child?;

    let received = receive_fd(&ours);
    let output = child.wait_with_output().map_err(MountError::Socket)?;
    match received {
        Ok(Some(fd)) => Ok(Channel::from_fd(fd)),
        Ok(None) => Err(MountError::Fusermount {
            program: program.clone(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }),
        Err(e) => Err(MountError::Socket(e)),
    }
}

/// Receives one descriptor sent with `SCM_RIGHTS`; `None` if the peer closed without one.
fn receive_fd(socket: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        match rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let mut found = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                found.get_or_insert(fd);
            }
        }
    }
    Ok(found)
}

fn fusermount_unmount(program: &Path, target: &Path, detach: bool) -> Result<(), MountError> {
    let mut cmd = Command::new(program);
    cmd.arg("-u");
    if detach {
        cmd.arg("-z");
    }
    let output = cmd
        .arg("--")
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| spawn_error(program, e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(MountError::Fusermount {
            program: program.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// What is at a path, as far as mounts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountState {
    /// Nothing is mounted there.
    NotMounted,
    /// A mount whose file system answers (for FUSE: the daemon is alive).
    Live {
        /// File system type from mountinfo (`fuse.sysgenid`, `fuse`, `ext4`, ...).
        fstype: String,
    },
    /// A FUSE mount whose daemon is gone: the kernel answers `ENOTCONN`.
    Stale {
        /// File system type from mountinfo.
        fstype: String,
    },
}

impl MountState {
    /// Whether anything is mounted.
    pub fn is_mounted(&self) -> bool {
        !matches!(self, Self::NotMounted)
    }

    /// Whether a FUSE file system is mounted.
    pub fn is_fuse(&self) -> bool {
        match self {
            Self::NotMounted => false,
            Self::Live { fstype } | Self::Stale { fstype } => is_fuse_type(fstype),
        }
    }
}

fn is_fuse_type(fstype: &str) -> bool {
    fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.")
}

/// Tells whether `path` is a mount point in this mount namespace and, if so, whether its
/// file system answers.
///
/// Looks the path up in `/proc/self/mountinfo`, then probes a mount with `statfs(2)`, which
/// always reaches a FUSE daemon (nothing caches it): `ENOTCONN` means stale. The probe blocks
/// while a live daemon does not answer, so the serving thread must not call this on its own
/// mount.
pub fn mount_state(path: &Path) -> Result<MountState, MountError> {
    let wanted = canonical_mount_point(path).map_err(|source| MountError::Target {
        path: path.to_owned(),
        source,
    })?;
    let mountinfo = std::fs::read(MOUNTINFO).map_err(MountError::MountInfo)?;
    let Some(fstype) = find_mount(&mountinfo, &wanted) else {
        return Ok(MountState::NotMounted);
    };
    Ok(match rustix::fs::statfs(path) {
        Err(Errno::NOTCONN | Errno::CONNABORTED) => MountState::Stale { fstype },
        _ => MountState::Live { fstype },
    })
}

/// Resolves the directory part of `path` (the last component may be a dead mount, which
/// cannot be examined).
fn canonical_mount_point(path: &Path) -> io::Result<PathBuf> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok(std::fs::canonicalize(parent)?.join(name))
        }
        _ => std::fs::canonicalize(path),
    }
}

/// The file system type of the topmost mount on `mount_point` in mountinfo text.
fn find_mount(mountinfo: &[u8], mount_point: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let wanted = mount_point.as_os_str().as_bytes();
    mountinfo
        .split(|&b| b == b'\n')
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|(point, _)| point == wanted)
        .map(|(_, fstype)| fstype)
}

/// Parses a mountinfo line into (unescaped mount point, file system type).
fn parse_mountinfo_line(line: &[u8]) -> Option<(Vec<u8>, String)> {
    let mut fields = line.split(|&b| b == b' ');
    let mount_point = fields.nth(4)?;
    // Skip the mount options and the optional fields up to the "-" separator.
    let mut rest = fields.skip(1).skip_while(|f| *f != b"-");
    rest.next()?;
    let fstype = rest.next()?;
    Some((
        unescape(mount_point),
        String::from_utf8_lossy(fstype).into_owned(),
    ))
}

/// Undoes mountinfo's octal escapes (`\040` for space and so on).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/root rw
36 22 0:30 / /tmp rw,nosuid,nodev shared:5 master:2 - tmpfs tmpfs rw
40 36 0:45 / /tmp/a\\040b/sysgenid rw,nosuid,nodev,relatime - fuse.sysgenid sysgenid rw,user_id=0
41 36 0:46 / /run/sysgenid rw - fuse sysgenid rw
42 41 0:47 / /run/sysgenid rw - tmpfs none rw
";

    #[test]
    fn mountinfo_lines() {
        assert_eq!(
            parse_mountinfo_line(
                b"40 36 0:45 / /tmp/a\\040b/f rw,relatime shared:1 - fuse.sysgenid sysgenid rw"
            ),
            Some((b"/tmp/a b/f".to_vec(), "fuse.sysgenid".to_owned()))
        );
        assert_eq!(parse_mountinfo_line(b"garbage"), None);
        assert_eq!(parse_mountinfo_line(b"1 2 3 4 /x opts no-separator"), None);
        assert_eq!(parse_mountinfo_line(b""), None);
    }

    #[test]
    fn finds_topmost_mount() {
        assert_eq!(
            find_mount(SAMPLE, Path::new("/tmp/a b/sysgenid")).as_deref(),
            Some("fuse.sysgenid")
        );
        assert_eq!(
            find_mount(SAMPLE, Path::new("/run/sysgenid")).as_deref(),
            Some("tmpfs")
        );
        assert_eq!(find_mount(SAMPLE, Path::new("/tmp/other")), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(b"a\\040b\\011c\\134d"), b"a b\tc\\d");
        assert_eq!(unescape(b"\\04"), b"\\04");
        assert_eq!(unescape(b"\\999x"), b"\\999x");
        assert_eq!(unescape(b"end\\"), b"end\\");
    }

    #[test]
    fn fuse_types() {
        assert!(is_fuse_type("fuse.sysgenid"));
        assert!(is_fuse_type("fuse"));
        assert!(!is_fuse_type("fusectl"));
        assert!(
            MountState::Stale {
                fstype: "fuse".into()
            }
            .is_fuse()
        );
        assert!(!MountState::NotMounted.is_mounted());
    }

    #[test]
    fn option_values_are_checked() {
        assert!(check_option("fsname", "sysgenid").is_ok());
        for bad in ["", "a,b", "a b", "a\0b"] {
            let err = check_option("fsname", bad).unwrap_err();
            assert!(matches!(err, MountError::InvalidOption { .. }), "{bad:?}");
        }
    }

    #[test]
    fn missing_fusermount_names_the_package() {
        let dir = std::env::temp_dir().join(format!("sysgenid-fuse-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("target");
        std::fs::write(&file, b"").unwrap();
        let options = MountOptions {
            method: MountMethod::Fusermount,
            fusermount: PathBuf::from("/nonexistent/fusermount3"),
            ..MountOptions::default()
        };
        let err = mount(&file, &options).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(err, MountError::FusermountMissing { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("/nonexistent/fusermount3"), "{text}");
        assert!(text.contains("`fuse3`"), "{text}");
    }

    #[test]
    fn targets_are_checked() {
        let err = mount(Path::new("/"), &MountOptions::default()).unwrap_err();
        assert!(matches!(err, MountError::NotRegularFile { .. }), "{err:?}");
        let err = mount(Path::new("/nonexistent/x"), &MountOptions::default()).unwrap_err();
        assert!(matches!(err, MountError::Target { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/x"));
    }

    #[test]
    fn plain_paths_are_not_mounted() {
        let state = mount_state(Path::new("/proc/self/mountinfo")).unwrap();
        assert_eq!(state, MountState::NotMounted);
        let state = mount_state(Path::new("/proc")).unwrap();
        assert_eq!(
            state,
            MountState::Live {
                fstype: "proc".into()
            }
        );
    }
}
