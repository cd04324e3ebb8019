//! Command-line options and the defaults that make a config file unnecessary.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use sysgenid_abi::{DEFAULT_DEVICE, DEFAULT_STATE_DIR, WRITER_GROUP};

/// Serve the System Generation ID device, /dev/sysgenid, from userspace.
///
/// sysgenidd mounts a one-file FUSE file system on the device path and answers open, read,
/// write, poll, ioctl and mmap with the semantics of the proposed Linux sysgenid driver. The
/// counter is also published in a read-only page file, <state-dir>/generation, for libraries
/// that probe it inline, and the control socket <state-dir>/control.sock answers `status` with
/// one JSON line.
///
/// Run as root with no options to serve /dev/sysgenid. Bump the generation with the
/// TRIGGER_GEN_UPDATE ioctl (needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN); hardware backends
/// bump it when the machine is restored from a snapshot.
#[derive(Debug, Parser)]
#[command(
    name = "sysgenidd",
    version,
    verbatim_doc_comment,
    args_override_self = true
)]
pub struct Args {
    /// The device file to serve (created as an empty file no one else can read if missing; its
    /// directory must exist). Defaults to /dev/sysgenid as root,
    /// $XDG_RUNTIME_DIR/sysgenid/device otherwise (the directory is made if missing).
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,

    /// Where the persisted counter, the page file and the control socket live.
    /// Defaults to /run/sysgenid as root, $XDG_RUNTIME_DIR/sysgenid otherwise.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Hardware backends that bump the generation on a VM restore: `none`, `auto` (every
    /// backend this machine supports), or a comma-separated list of names.
    #[arg(long, value_name = "none|auto|LIST", default_value = "auto")]
    pub backends: String,

    /// Where the vmgenid-bpf backend pins its probe in bpffs, so that restores while the daemon
    /// is down are counted. Give each daemon on a machine its own directory; `none` runs the
    /// probe unpinned.
    #[arg(long, value_name = "DIR|none", default_value = sysgenid_bpf_pin_default())]
    pub bpf_pin_dir: String,

    /// How the vmgenid-bpf probe attaches: `auto` (a kprobe where the kernel has kprobes, else
    /// fentry), `kprobe` or `fentry`.
    #[arg(long, value_enum, default_value_t = BpfAttach::Auto)]
    pub bpf_attach: BpfAttach,

    /// Whether clients may mmap the device itself (needs Linux 6.6+). With `off`, mmap of the
    /// device fails with ENODEV and only the page file serves probes.
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub device_mmap: Toggle,

    /// Whether a small keeper process holds the device's connection and starts the serving
    /// process again on it after a crash, so that no client notices. With `off`, a crash
    /// ends the connection unless systemd's fd store holds it.
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub keeper: Toggle,

    /// How many crashes of the serving process within a minute the keeper survives before it
    /// gives up (and the connection ends).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub keeper_max_crashes: usize,

    /// Group allowed to open the device for writing (ack and track). Defaults to `sysgenid`
    /// when that group exists; without a group the device is 0644 and only root may write.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,

    /// Log filter, in `tracing` syntax (`info`, `debug`, `sysgenidd=trace`). RUST_LOG also works.
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "info",
        env = "SYSGENIDD_LOG"
    )]
    pub log: String,

    /// The fw_cfg GUID blob the fw-cfg backend reads (tests point it at a file).
    #[arg(long, value_name = "PATH", hide = true)]
    pub fw_cfg_path: Option<PathBuf>,

    /// Print the man page (roff) and exit.
    #[arg(long, hide = true)]
    pub generate_man: bool,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// How the BPF probe attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BpfAttach {
    /// A kprobe where the kernel has kprobes, else fentry.
    Auto,
    /// A kprobe only.
    Kprobe,
    /// Fentry (BTF) only.
    Fentry,
}

/// Which hardware backends to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// None at all: only triggers bump the generation.
    None,
    /// Every backend that this machine supports.
    Auto,
    /// Exactly these.
    List(Vec<String>),
}

impl BackendChoice {
    /// Parses `none`, `auto` or a comma-separated list.
    pub fn parse(text: &str) -> Result<BackendChoice, String> {
        match text.trim() {
            "none" => Ok(BackendChoice::None),
            "auto" => Ok(BackendChoice::Auto),
            "" => Err("--backends needs none, auto, or a list of names".to_owned()),
            list => Ok(BackendChoice::List(
                list.split(',').map(|s| s.trim().to_owned()).collect(),
            )),
        }
    }
}

const fn sysgenid_bpf_pin_default() -> &'static str {
    crate::backends::vmgenid_bpf::DEFAULT_PIN_DIR
}

/// Everything the daemon needs to start, with defaults filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// The device file to serve.
    pub device: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Which backends to run.
    pub backends: BackendChoice,
    /// Where the BPF probe is pinned (none: unpinned).
    pub bpf_pin_dir: Option<PathBuf>,
    /// How the BPF probe attaches.
    pub bpf_attach: BpfAttach,
    /// Another fw_cfg GUID blob than the kernel's.
    pub fw_cfg_path: Option<PathBuf>,
    /// Whether to serve mmap of the device.
    pub device_mmap: bool,
    /// Mode bits of the device file.
    pub mode: u32,
    /// Owner of the device file.
    pub uid: u32,
    /// Group of the device file.
    pub gid: u32,
}

/// A problem with the options.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The options do not make sense.
    #[error("{0}")]
    Invalid(String),
    /// The directory of a --device path does not exist.
    #[error(
        "--device {}: the directory {} does not exist; create it first (sysgenidd makes no \
         directory for a device path it is given, only $XDG_RUNTIME_DIR/sysgenid for its \
         per-user default)",
        device.display(),
        dir.display()
    )]
    NoDeviceDir {
        /// The device path.
        device: PathBuf,
        /// Its missing directory.
        dir: PathBuf,
    },
    /// A group was named that does not exist.
    #[error("group {0:?} does not exist (create it with `groupadd {0}`, or leave --group out)")]
    NoSuchGroup(String),
}

impl Config {
    /// Fills in the defaults for the running user.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let uid = rustix::process::geteuid().as_raw();
        let user_dir = || -> Result<PathBuf, ConfigError> {
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| PathBuf::from(d).join("sysgenid"))
                .ok_or_else(|| {
                    ConfigError::Invalid(
                        "not root and XDG_RUNTIME_DIR is unset: pass --device and --state-dir"
                            .to_owned(),
                    )
                })
        };
        let default_device = || -> Result<PathBuf, ConfigError> {
            match uid {
                0 => Ok(PathBuf::from(DEFAULT_DEVICE)),
                _ => Ok(user_dir()?.join("device")),
            }
        };
        let device = match &args.device {
            Some(path) => {
                check_device_dir(path, default_device().ok().as_deref())?;
                path.clone()
            }
            None => default_device()?,
        };
        let state_dir = match (&args.state_dir, uid) {
            (Some(path), _) => path.clone(),
            (None, 0) => PathBuf::from(DEFAULT_STATE_DIR),
            (None, _) => user_dir()?,
        };
        let backends = BackendChoice::parse(&args.backends).map_err(ConfigError::Invalid)?;
        let writer_gid = match &args.group {
            Some(name) => {
                Some(group_id(name)?.ok_or_else(|| ConfigError::NoSuchGroup(name.clone()))?)
            }
            None => group_id(WRITER_GROUP)?,
        };
        let (mode, gid) = match writer_gid {
            Some(gid) => (0o664, gid),
            None => (0o644, rustix::process::getegid().as_raw()),
        };
        Ok(Config {
            device,
            state_dir,
            backends,
            bpf_pin_dir: match args.bpf_pin_dir.as_str() {
                "none" => None,
                "" => {
                    return Err(ConfigError::Invalid(
                        "--bpf-pin-dir needs a directory or none".to_owned(),
                    ));
                }
                dir => Some(PathBuf::from(dir)),
            },
            bpf_attach: args.bpf_attach,
            fw_cfg_path: args.fw_cfg_path.clone(),
            device_mmap: args.device_mmap == Toggle::On,
            mode,
            uid,
            gid,
        })
    }
}

/// Refuses a device path given on the command line whose directory is missing: a typo must not
/// become a tree of new directories. The default path (`default`) is left to
/// [`prepare_device_path`](crate::device_path::prepare_device_path), which may make its
/// per-user directory.
fn check_device_dir(device: &Path, default: Option<&Path>) -> Result<(), ConfigError> {
    if default == Some(device) {
        return Ok(());
    }
    let dir = match device.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return Ok(()),
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::NoDeviceDir {
            device: device.to_owned(),
            dir: dir.to_owned(),
        }),
        // Anything else (not a directory, no permission) is reported when the file is made.
        _ => Ok(()),
    }
}

/// The id of a group in `/etc/group`, or `None` if there is no such group.
pub fn group_id(name: &str) -> Result<Option<u32>, ConfigError> {
    let text = match std::fs::read_to_string("/etc/group") {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ConfigError::Invalid(format!("cannot read /etc/group: {e}"))),
    };
    Ok(parse_group(&text, name))
}

fn parse_group(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse() {
        assert_eq!(BackendChoice::parse("none"), Ok(BackendChoice::None));
        assert_eq!(BackendChoice::parse("auto"), Ok(BackendChoice::Auto));
        assert_eq!(
            BackendChoice::parse("a, b"),
            Ok(BackendChoice::List(vec!["a".into(), "b".into()]))
        );
        assert!(BackendChoice::parse("").is_err());
    }

    #[test]
    fn a_given_device_path_needs_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nonexistent/dir/dev");
        let err = check_device_dir(&missing, None).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "{}/nonexistent/dir does not exist",
                dir.path().display()
            )),
            "{err}"
        );
        assert!(!dir.path().join("nonexistent").exists());
        assert!(check_device_dir(&dir.path().join("dev"), None).is_ok());
        assert!(
            check_device_dir(Path::new("dev"), None).is_ok(),
            "relative, here"
        );
        // The per-user default's directory may be made later.
        assert!(check_device_dir(&missing, Some(&missing)).is_ok());
    }

    #[test]
    fn from_args_refuses_a_device_in_a_missing_directory() {
        let args = Args::parse_from(["sysgenidd", "--device", "/nonexistent/dir/dev"]);
        let err = Config::from_args(&args).unwrap_err();
        assert!(matches!(err, ConfigError::NoDeviceDir { .. }), "{err}");
    }

    #[test]
    fn groups_are_found_by_name() {
        let text = "root:x:0:\nsysgenid:x:997:alice,bob\nbad line\n";
        assert_eq!(parse_group(text, "sysgenid"), Some(997));
        assert_eq!(parse_group(text, "root"), Some(0));
        assert_eq!(parse_group(text, "nope"), None);
        assert_eq!(parse_group(text, "bad line"), None);
    }
}
