//! Where the device, the page file and the control socket live.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sysgenid_abi::{
    CONTROL_SOCKET_NAME, DEFAULT_DEVICE, DEFAULT_STATE_DIR, DEVICE_ENV, PAGE_FILE_NAME,
    STATE_DIR_ENV,
};

/// The paths a client uses: the device file and the daemon's state directory.
///
/// The page file and the control socket live in the state directory. [`Paths::from_env`] reads
/// `SYSGENID_DEVICE` and `SYSGENID_STATE_DIR`; [`Paths::new`] takes explicit paths, so tests
/// never need to touch the environment.
///
/// ```
/// use sysgenid::Paths;
///
/// let paths = Paths::new("/tmp/x/device", "/tmp/x/state");
/// assert_eq!(paths.device().to_str(), Some("/tmp/x/device"));
/// assert_eq!(paths.page_file().to_str(), Some("/tmp/x/state/generation"));
/// assert_eq!(paths.control_socket().to_str(), Some("/tmp/x/state/control.sock"));
///
/// let system = Paths::system();
/// assert_eq!(system.device().to_str(), Some("/dev/sysgenid"));
/// assert_eq!(system.state_dir().to_str(), Some("/run/sysgenid"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Paths {
    device: PathBuf,
    state_dir: PathBuf,
}

impl Paths {
    /// Explicit paths: the device file and the state directory.
    pub fn new(device: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> Paths {
        Paths {
            device: device.into(),
            state_dir: state_dir.into(),
        }
    }

    /// The system defaults, `/dev/sysgenid` and `/run/sysgenid`, ignoring the environment.
    pub fn system() -> Paths {
        Paths::new(DEFAULT_DEVICE, DEFAULT_STATE_DIR)
    }

    /// The device from `SYSGENID_DEVICE`, else `/dev/sysgenid`; the state directory from
    /// `SYSGENID_STATE_DIR`, else `/run/sysgenid`. An empty variable counts as unset.
    pub fn from_env() -> Paths {
        Paths::from_vars(
            std::env::var_os(DEVICE_ENV),
            std::env::var_os(STATE_DIR_ENV),
        )
    }

    /// [`Paths::from_env`] with the two values given.
    fn from_vars(device: Option<OsString>, state_dir: Option<OsString>) -> Paths {
        let pick = |value: Option<OsString>, default: &str| match value {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from(default),
        };
        Paths::new(
            pick(device, DEFAULT_DEVICE),
            pick(state_dir, DEFAULT_STATE_DIR),
        )
    }

    /// The same paths with another device file.
    pub fn with_device(mut self, device: impl Into<PathBuf>) -> Paths {
        self.device = device.into();
        self
    }

    /// The same paths with another state directory.
    pub fn with_state_dir(mut self, state_dir: impl Into<PathBuf>) -> Paths {
        self.state_dir = state_dir.into();
        self
    }

    /// The device file.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// The daemon's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The page file, `<state-dir>/generation`: a read-only page whose first 4 bytes are the
    /// generation.
    pub fn page_file(&self) -> PathBuf {
        self.state_dir.join(PAGE_FILE_NAME)
    }

    /// The control socket, `<state-dir>/control.sock`.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join(CONTROL_SOCKET_NAME)
    }
}

impl Default for Paths {
    /// [`Paths::system`].
    fn default() -> Paths {
        Paths::system()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_override_defaults_and_empty_counts_as_unset() {
        let p = Paths::from_vars(Some("/d".into()), Some("/s".into()));
        assert_eq!(p, Paths::new("/d", "/s"));
        let p = Paths::from_vars(None, Some("".into()));
        assert_eq!(p, Paths::system());
        assert_eq!(Paths::default(), Paths::system());
    }

    #[test]
    fn builders_replace_one_path() {
        let p = Paths::system().with_device("/x").with_state_dir("/y");
        assert_eq!(p.device(), Path::new("/x"));
        assert_eq!(p.page_file(), Path::new("/y/generation"));
    }
}
