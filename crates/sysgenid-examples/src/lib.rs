//! Helpers shared by the example binaries: OS randomness, a tiny PRNG and UUID v4.
//!
//! Nothing here knows about sysgenid; the binaries in `src/bin` show the client library in use.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::io::{self, Read};

/// Fills `buf` from the kernel's RNG (`/dev/urandom`).
///
/// Reseed from here after a generation change, never from userspace state: a copy of that
/// state is exactly what clones of one snapshot share.
pub fn os_random(buf: &mut [u8]) -> io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// A SplitMix64 generator: fast, small, and not cryptographic. It stands in for any userspace
/// RNG whose state a snapshot copies.
#[derive(Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn from_seed(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from the OS RNG.
    pub fn from_os() -> io::Result<SplitMix64> {
        let mut seed = [0u8; 8];
        os_random(&mut seed)?;
        Ok(SplitMix64::from_seed(u64::from_ne_bytes(seed)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl fmt::Debug for SplitMix64 {
    // The state is the seed: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SplitMix64 { .. }")
    }
}

/// A random (version 4) UUID, shown in the usual `8-4-4-4-12` lowercase hex form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// A new UUID from the OS RNG.
    pub fn new_v4() -> io::Result<Uuid> {
        let mut bytes = [0u8; 16];
        os_random(&mut bytes)?;
        Ok(Uuid::from_random_bytes(bytes))
    }

    /// The UUID made of 16 random bytes, with the version (4) and variant (RFC 9562) bits set.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Uuid {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Uuid(bytes)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_output() {
        // The first outputs of the reference implementation seeded with 0.
        let mut rng = SplitMix64::from_seed(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(format!("{rng:?}"), "SplitMix64 { .. }");
    }

    #[test]
    fn a_uuid_has_version_4_and_the_rfc_variant() {
        let uuid = Uuid::from_random_bytes([0xff; 16]);
        assert_eq!(uuid.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let uuid = Uuid::from_random_bytes([0; 16]);
        assert_eq!(uuid.to_string(), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn os_randomness_differs_between_calls() {
        assert_ne!(Uuid::new_v4().unwrap(), Uuid::new_v4().unwrap());
        let (mut a, mut b) = (
            SplitMix64::from_os().unwrap(),
            SplitMix64::from_os().unwrap(),
        );
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
