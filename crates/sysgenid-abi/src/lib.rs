//! The user-visible ABI of `/dev/sysgenid`, shared by the daemon and every client.
//!
//! Everything here is a fact of the interface, not of an implementation: the ioctl numbers, the
//! layout of the counter page, the errno values each operation may return, the poll bits and the
//! default paths; and, with the feature `serde`, the messages of the daemon's control socket
//! ([`control`]). Without that feature the crate has no dependencies; it never does IO.
//!
//! ```
//! use sysgenid_abi::{Ioctl, decode_generation, encode_generation};
//!
//! assert_eq!(Ioctl::TriggerGenUpdate.cmd(), 0xE403);
//! assert_eq!(Ioctl::from_cmd(0xE402), Some(Ioctl::WaitWatchers));
//! assert_eq!(decode_generation(&encode_generation(7)), Some(7));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "serde")]
pub mod control;
mod errno;
mod page;
mod paths;

pub use errno::Errno;
pub use page::*;
pub use paths::*;

/// The ioctl type byte of the System Generation ID interface.
pub const IOCTL_TYPE: u8 = 0xE4;

/// Builds an `_IO(type, nr)` ioctl number: no direction bits and no size.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ((ty as u32) << 8) | nr as u32
}

/// The three ioctls of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ioctl {
    /// `_IO(0xE4, 1)`: argument nonzero turns watcher tracking on for this open file, zero off.
    SetWatcherTracking,
    /// `_IO(0xE4, 2)`: wait until no tracked watcher is outdated; the argument is a timeout in
    /// milliseconds, 0 meaning none.
    WaitWatchers,
    /// `_IO(0xE4, 3)`: bump the generation to `max(argument, current + 1)`; needs
    /// `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`.
    TriggerGenUpdate,
}

impl Ioctl {
    /// All ioctls, in number order.
    pub const ALL: [Ioctl; 3] = [
        Ioctl::SetWatcherTracking,
        Ioctl::WaitWatchers,
        Ioctl::TriggerGenUpdate,
    ];

    /// The ioctl request number passed to `ioctl(2)`.
    pub const fn cmd(self) -> u32 {
        match self {
            Ioctl::SetWatcherTracking => SYSGENID_SET_WATCHER_TRACKING,
            Ioctl::WaitWatchers => SYSGENID_WAIT_WATCHERS,
            Ioctl::TriggerGenUpdate => SYSGENID_TRIGGER_GEN_UPDATE,
        }
    }

    /// The ioctl for a request number, or `None` for a number the device does not know.
    pub const fn from_cmd(cmd: u32) -> Option<Ioctl> {
        match cmd {
            SYSGENID_SET_WATCHER_TRACKING => Some(Ioctl::SetWatcherTracking),
            SYSGENID_WAIT_WATCHERS => Some(Ioctl::WaitWatchers),
            SYSGENID_TRIGGER_GEN_UPDATE => Some(Ioctl::TriggerGenUpdate),
            _ => None,
        }
    }
}

/// Request number of [`Ioctl::SetWatcherTracking`].
pub const SYSGENID_SET_WATCHER_TRACKING: u32 = io(IOCTL_TYPE, 1);
/// Request number of [`Ioctl::WaitWatchers`].
pub const SYSGENID_WAIT_WATCHERS: u32 = io(IOCTL_TYPE, 2);
/// Request number of [`Ioctl::TriggerGenUpdate`].
pub const SYSGENID_TRIGGER_GEN_UPDATE: u32 = io(IOCTL_TYPE, 3);

/// Size in bytes of the counter page, the unit of `mmap`.
pub const PAGE_SIZE: usize = 4096;
/// Byte offset of the generation counter in the page: a native-endian `u32`.
///
/// Bytes 4 to 23 hold the sequence word and the generation ID ([`GENERATION_ID_OFFSET`], read
/// with [`read_head`]); the rest of the page (bytes 24 to 4095) is zero and reserved for later
/// fields. A reader must ignore what it does not know.
pub const GENERATION_OFFSET: usize = 0;
/// Size in bytes of the generation counter, and the only valid length of a `write(2)`.
pub const GENERATION_SIZE: usize = 4;

/// Poll bit: data to read.
pub const POLLIN: u32 = 0x0001;
/// Poll bit: normal data to read.
pub const POLLRDNORM: u32 = 0x0040;
/// What `poll(2)` reports for an outdated open file.
pub const POLL_OUTDATED: u32 = POLLIN | POLLRDNORM;

/// The bytes `read(2)` returns and the page holds for a generation: native-endian.
pub const fn encode_generation(generation: u32) -> [u8; GENERATION_SIZE] {
    generation.to_ne_bytes()
}

/// The generation in the first four bytes, or `None` when fewer than four are given.
pub fn decode_generation(bytes: &[u8]) -> Option<u32> {
    let head: [u8; GENERATION_SIZE] = bytes.get(..GENERATION_SIZE)?.try_into().ok()?;
    Some(u32::from_ne_bytes(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's `_IOC` layout: nr in bits 0-7, type in 8-15, size in 16-29, dir in 30-31.
    fn ioc(dir: u32, ty: u32, nr: u32, size: u32) -> u32 {
        (dir << 30) | (size << 16) | (ty << 8) | nr
    }

    #[test]
    fn ioctl_numbers_are_io_e4_1_to_3() {
        assert_eq!(SYSGENID_SET_WATCHER_TRACKING, ioc(0, 0xE4, 1, 0));
        assert_eq!(SYSGENID_WAIT_WATCHERS, ioc(0, 0xE4, 2, 0));
        assert_eq!(SYSGENID_TRIGGER_GEN_UPDATE, ioc(0, 0xE4, 3, 0));
        assert_eq!(SYSGENID_TRIGGER_GEN_UPDATE, 0xE403);
    }

    #[test]
    fn ioctl_round_trips_and_rejects_unknown_numbers() {
        for ioctl in Ioctl::ALL {
            assert_eq!(Ioctl::from_cmd(ioctl.cmd()), Some(ioctl));
        }
        for cmd in [0, 0xE400, 0xE404, 0x5421 /* FIONBIO */, 0x8004_E401] {
            assert_eq!(Ioctl::from_cmd(cmd), None, "{cmd:#x}");
        }
    }

    #[test]
    fn poll_bits_match_the_kernel() {
        assert_eq!(POLLIN, libc::POLLIN as u32);
        assert_eq!(POLLRDNORM, libc::POLLRDNORM as u32);
    }

    #[test]
    fn generation_is_native_endian_and_short_input_is_refused() {
        assert_eq!(encode_generation(0x0102_0304), 0x0102_0304u32.to_ne_bytes());
        assert_eq!(
            decode_generation(&[1, 0, 0, 0, 9, 9]),
            Some(u32::from_ne_bytes([1, 0, 0, 0]))
        );
        assert_eq!(decode_generation(&[1, 2, 3]), None);
        assert_eq!(decode_generation(&[0u8; PAGE_SIZE]), Some(0));
    }
}
