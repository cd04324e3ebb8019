//! Default names and paths that the daemon, the clients and the tests all agree on.

/// Where the device file is mounted by default.
pub const DEFAULT_DEVICE: &str = "/dev/sysgenid";
/// Environment variable through which clients find a device at another path.
pub const DEVICE_ENV: &str = "SYSGENID_DEVICE";
/// The daemon's default state directory: persisted counter, page file and control socket.
pub const DEFAULT_STATE_DIR: &str = "/run/sysgenid";
/// Environment variable through which clients find a state directory at another path.
pub const STATE_DIR_ENV: &str = "SYSGENID_STATE_DIR";
/// File name, inside the state directory, of the read-only counter page for probes.
pub const PAGE_FILE_NAME: &str = "generation";
/// File name, inside the state directory, of the read-only control and status socket.
pub const CONTROL_SOCKET_NAME: &str = "control.sock";
/// Group whose members may open the device for writing (ack and track).
pub const WRITER_GROUP: &str = "sysgenid";
