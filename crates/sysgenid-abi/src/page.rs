//! The head of the counter page: the generation, a sequence word and the generation ID, and the
//! rule that gives a reader a consistent pair of them without a syscall (a seqlock).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | the generation, native-endian `u32` (unchanged since the first version) |
//! | 4 | 4 | the sequence word, native-endian `u32`: odd while the writer updates the page |
//! | 8 | 16 | the generation ID: 16 random bytes drawn at the bump, all zero when none is published |
//!
//! The writer stores the sequence word `2g + 1` (odd), then the ID and the generation `g`, then
//! `2g + 2` (even). A reader loads the sequence word (acquire), loads the generation and the ID,
//! fences (acquire), loads the sequence word again, and retries while the first load was odd or
//! the two differ. A stable word other than `2g + 2` means that a writer which knows no ID (an
//! older daemon, after a downgrade) wrote the generation: the page holds no ID for it.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering, fence};

/// Byte offset of the sequence word in the page.
pub const SEQUENCE_OFFSET: usize = 4;
/// Byte offset of the generation ID in the page.
pub const GENERATION_ID_OFFSET: usize = 8;
/// Size in bytes of the generation ID.
pub const GENERATION_ID_SIZE: usize = 16;
/// Size in bytes of the page head: generation, sequence word, ID.
pub const PAGE_HEAD_SIZE: usize = GENERATION_ID_OFFSET + GENERATION_ID_SIZE;
/// The page head as 32-bit words.
pub const PAGE_HEAD_WORDS: usize = PAGE_HEAD_SIZE / 4;

/// How often [`read_head`] tries before it gives up on a page that stays odd (a writer that died
/// in the middle of an update; the next daemon rewrites the page at its start): it spins, then
/// yields, then sleeps 100 µs between tries, about one second in all. A writer that is only
/// preempted is waited for.
pub const READ_TRIES: u32 = 10_000;

/// The 128-bit random ID of one generation: two clones of one snapshot read the same generation
/// and different IDs. Drawn from the kernel's `getrandom` at every bump; never all zero (the
/// page shows all zero when no ID is published).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GenerationId(pub [u8; GENERATION_ID_SIZE]);

impl GenerationId {
    /// No ID: what the page holds where no ID is published (an older daemon, a kernel driver).
    pub const NONE: GenerationId = GenerationId([0; GENERATION_ID_SIZE]);

    /// Whether this is [`GenerationId::NONE`].
    pub fn is_none(&self) -> bool {
        *self == GenerationId::NONE
    }

    /// The ID from its text form: 32 hex digits.
    pub fn from_hex(text: &str) -> Option<GenerationId> {
        let digits = text.as_bytes();
        if digits.len() != 2 * GENERATION_ID_SIZE {
            return None;
        }
        let mut id = [0u8; GENERATION_ID_SIZE];
        for (byte, pair) in id.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(GenerationId(id))
    }

    /// The ID as four words, as the page holds them (native-endian).
    pub fn words(&self) -> [u32; 4] {
        let mut words = [0u32; 4];
        for (word, chunk) in words.iter_mut().zip(self.0.chunks_exact(4)) {
            *word = u32::from_ne_bytes(chunk.try_into().expect("4 bytes"));
        }
        words
    }

    /// The ID from the four words of the page.
    pub fn from_words(words: [u32; 4]) -> GenerationId {
        let mut id = [0u8; GENERATION_ID_SIZE];
        for (chunk, word) in id.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        GenerationId(id)
    }
}

/// 32 lowercase hex digits, the bytes in page order.
impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One `write_str` of a stack buffer: a `write!` per byte made this a hot spot of a
        // trigger's log line and session record.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 2 * GENERATION_ID_SIZE];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GenerationId({self})")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for GenerationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for GenerationId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        GenerationId::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a generation ID is 32 hex digits"))
    }
}

/// The sequence word of a page that is not being written and shows `generation`: `2g + 2`
/// (modulo 2³²), so every new generation moves it, and it is never the 0 of a page written
/// before the ID existed, except at `g = 2³¹ − 1` and `g = u32::MAX`.
pub const fn stable_sequence(generation: u32) -> u32 {
    generation.wrapping_mul(2).wrapping_add(2)
}

/// The first [`PAGE_HEAD_SIZE`] bytes of a page that shows `generation` and `id`, stable.
pub fn encode_head(generation: u32, id: GenerationId) -> [u8; PAGE_HEAD_SIZE] {
    let mut head = [0u8; PAGE_HEAD_SIZE];
    head[..4].copy_from_slice(&generation.to_ne_bytes());
    head[SEQUENCE_OFFSET..SEQUENCE_OFFSET + 4]
        .copy_from_slice(&stable_sequence(generation).to_ne_bytes());
    head[GENERATION_ID_OFFSET..].copy_from_slice(&id.0);
    head
}

/// The generation and ID of a copy of the page head, if the copy is of a stable page (an even
/// sequence word that matches the generation). A copy made by one `read(2)` is not atomic: a
/// caller retries, or reads a mapping with [`read_head`].
pub fn decode_head(bytes: &[u8]) -> Option<(u32, GenerationId)> {
    let head: &[u8; PAGE_HEAD_SIZE] = bytes.get(..PAGE_HEAD_SIZE)?.try_into().ok()?;
    let word = |at: usize| u32::from_ne_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let generation = word(0);
    let sequence = word(SEQUENCE_OFFSET);
    let id = GenerationId(head[GENERATION_ID_OFFSET..].try_into().expect("16 bytes"));
    match sequence {
        0 if id.is_none() => Some((generation, id)),
        s if s == stable_sequence(generation) => Some((generation, id)),
        _ => None,
    }
}

/// Writes `generation` and `id` into a shared page head, by the seqlock rule: sequence odd,
/// then the ID and the generation, then sequence even. Only one writer may write at a time.
pub fn write_head(head: &[AtomicU32; PAGE_HEAD_WORDS], generation: u32, id: GenerationId) {
    let sequence = &head[SEQUENCE_OFFSET / 4];
    sequence.store(
        stable_sequence(generation).wrapping_sub(1),
        Ordering::Relaxed,
    );
    // The odd word is visible before any word of the new pair.
    fence(Ordering::Release);
    for (word, value) in head[GENERATION_ID_OFFSET / 4..].iter().zip(id.words()) {
        word.store(value, Ordering::Relaxed);
    }
    head[0].store(generation, Ordering::Release);
    sequence.store(stable_sequence(generation), Ordering::Release);
}

/// Reads a consistent generation and ID from a shared page head, by the seqlock rule; `None`
/// when the page stayed in the middle of an update for [`READ_TRIES`] tries. The ID is
/// [`GenerationId::NONE`] where none is published, or where the stable sequence word is not the
/// generation's (a writer that knows no ID changed the generation).
pub fn read_head(head: &[AtomicU32; PAGE_HEAD_WORDS]) -> Option<(u32, GenerationId)> {
    let sequence = &head[SEQUENCE_OFFSET / 4];
    for attempt in 0..READ_TRIES {
        let before = sequence.load(Ordering::Acquire);
        let generation = head[0].load(Ordering::Relaxed);
        let mut words = [0u32; 4];
        for (value, word) in words.iter_mut().zip(&head[GENERATION_ID_OFFSET / 4..]) {
            *value = word.load(Ordering::Relaxed);
        }
        // The loads above happen before the second load of the sequence word.
        fence(Ordering::Acquire);
        let after = sequence.load(Ordering::Relaxed);
        if before.is_multiple_of(2) && before == after {
            let id = match before == stable_sequence(generation) {
                true => GenerationId::from_words(words),
                false => GenerationId::NONE,
            };
            return Some((generation, id));
        }
        match attempt {
            0..64 => std::hint::spin_loop(),
            64..1024 => std::thread::yield_now(),
            _ => std::thread::sleep(std::time::Duration::from_micros(100)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seed: u8) -> GenerationId {
        GenerationId(std::array::from_fn(|i| {
            seed.wrapping_mul(31).wrapping_add(i as u8)
        }))
    }

    #[test]
    fn the_id_is_32_lowercase_hex_digits_and_parses_back() {
        let id = GenerationId([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ]);
        assert_eq!(id.to_string(), "0123456789abcdeffedcba9876543210");
        assert_eq!(GenerationId::from_hex(&id.to_string()), Some(id));
        assert_eq!(GenerationId::from_hex("0123"), None);
        assert_eq!(GenerationId::from_hex(&"g".repeat(32)), None);
        assert_eq!(GenerationId::from_words(id.words()), id);
    }

    #[test]
    fn the_head_keeps_the_generation_in_the_first_four_bytes() {
        let head = encode_head(7, id(3));
        assert_eq!(crate::decode_generation(&head), Some(7));
        assert_eq!(head[4..8], 16u32.to_ne_bytes(), "2g + 2");
        assert_eq!(head[8..], id(3).0);
        assert_eq!(decode_head(&head), Some((7, id(3))));
    }

    #[test]
    fn a_page_without_an_id_reads_as_none_and_a_torn_copy_is_refused() {
        let mut old = [0u8; PAGE_HEAD_SIZE];
        old[..4].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(decode_head(&old), Some((5, GenerationId::NONE)));
        let mut odd = encode_head(7, id(3));
        odd[4..8].copy_from_slice(&15u32.to_ne_bytes());
        assert_eq!(decode_head(&odd), None, "in the middle of an update");
        let mut mixed = encode_head(7, id(3));
        mixed[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert_eq!(
            decode_head(&mixed),
            None,
            "the new generation with the old sequence"
        );
    }

    #[test]
    fn write_then_read_round_trips_and_an_odd_page_gives_up() {
        let head: [AtomicU32; PAGE_HEAD_WORDS] = Default::default();
        assert_eq!(read_head(&head), Some((0, GenerationId::NONE)));
        write_head(&head, 9, id(1));
        assert_eq!(read_head(&head), Some((9, id(1))));
        let bytes: Vec<u8> = head
            .iter()
            .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
            .collect();
        assert_eq!(bytes, encode_head(9, id(1)));
        head[0].store(10, Ordering::Relaxed);
        assert_eq!(
            read_head(&head),
            Some((10, GenerationId::NONE)),
            "an older daemon bumped the generation alone: the ID is not its"
        );
        head[1].store(19, Ordering::Relaxed);
        assert_eq!(read_head(&head), None);
    }
}
