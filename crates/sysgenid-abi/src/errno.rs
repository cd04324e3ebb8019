//! The errno contract: every error the device returns, with its Linux number and meaning.

use std::fmt;

/// An error the device returns, as the negative errno of a syscall.
///
/// The list is closed: no operation of the device returns anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Errno {
    /// `EINVAL`: a read buffer shorter than 4 bytes; a write of a value that is not the current
    /// generation; a trigger minimum above `u32::MAX`; an unknown ioctl.
    ///
    /// The kernel convention for an unknown ioctl is `ENOTTY`; the device keeps `EINVAL` because
    /// that is what the reference driver returns.
    Inval,
    /// `EAGAIN`: a nonblocking read of a file that is up to date.
    Again,
    /// `ENOBUFS`: a write whose length is not exactly 4 bytes.
    NoBufs,
    /// `EINTR`: a blocking call ended by a signal, or a wait whose caller is (or became) outdated.
    Intr,
    /// `ETIME`: a wait whose timeout expired while tracked watchers were still outdated.
    Time,
    /// `EACCES`: a trigger from a caller without `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN` in
    /// the user namespace that owns the device.
    Acces,
    /// `EOVERFLOW`: a bump when the generation is already `u32::MAX`; nothing changes.
    Overflow,
    /// `EIO`: the new generation could not be made durable, so the bump did not happen.
    Io,
    /// `EBADF`: turning tracking on for a file not open for writing (it could never
    /// acknowledge); a request on an open file the device no longer knows.
    BadF,
}

impl Errno {
    /// Every errno of the contract.
    pub const ALL: [Errno; 9] = [
        Errno::Inval,
        Errno::Again,
        Errno::NoBufs,
        Errno::Intr,
        Errno::Time,
        Errno::Acces,
        Errno::Overflow,
        Errno::Io,
        Errno::BadF,
    ];

    /// The positive Linux errno number.
    pub const fn raw(self) -> i32 {
        match self {
            Errno::Inval => 22,
            Errno::Again => 11,
            Errno::NoBufs => 105,
            Errno::Intr => 4,
            Errno::Time => 62,
            Errno::Acces => 13,
            Errno::Overflow => 75,
            Errno::Io => 5,
            Errno::BadF => 9,
        }
    }

    /// The errno for a positive Linux errno number, if it is one of the contract.
    pub fn from_raw(raw: i32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.raw() == raw)
    }

    /// The errno for a symbolic name such as `"EIO"`, if it is one of the contract.
    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The symbolic name, such as `"EINVAL"`.
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Inval => "EINVAL",
            Errno::Again => "EAGAIN",
            Errno::NoBufs => "ENOBUFS",
            Errno::Intr => "EINTR",
            Errno::Time => "ETIME",
            Errno::Acces => "EACCES",
            Errno::Overflow => "EOVERFLOW",
            Errno::Io => "EIO",
            Errno::BadF => "EBADF",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::Errno;

    #[test]
    fn numbers_match_the_platform() {
        let expected = [
            (Errno::Inval, libc::EINVAL),
            (Errno::Again, libc::EAGAIN),
            (Errno::NoBufs, libc::ENOBUFS),
            (Errno::Intr, libc::EINTR),
            (Errno::Time, libc::ETIME),
            (Errno::Acces, libc::EACCES),
            (Errno::Overflow, libc::EOVERFLOW),
            (Errno::Io, libc::EIO),
            (Errno::BadF, libc::EBADF),
        ];
        assert_eq!(expected.len(), Errno::ALL.len());
        for (errno, raw) in expected {
            assert_eq!(errno.raw(), raw, "{errno}");
            assert_eq!(Errno::from_raw(raw), Some(errno));
            assert_eq!(Errno::from_name(errno.name()), Some(errno));
        }
        assert_eq!(Errno::from_raw(libc::ENOTTY), None);
        assert_eq!(Errno::from_name("ENOTTY"), None);
    }
}
