//! The page's seqlock rule against a concurrent writer: a [`Probe`] reading a page file that
//! another thread rewrites in a loop never sees a generation with another generation's ID,
//! while a reader that skips the rule does.

use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rustix::mm::{MapFlags, ProtFlags};
use sysgenid::{GenerationId, Probe};
use sysgenid_abi::{PAGE_HEAD_WORDS, PAGE_SIZE, SEQUENCE_OFFSET, encode_head, stable_sequence};

/// How many generations each writer publishes.
const ROUNDS: u32 = 5_000;

/// The ID the writer pairs with `generation`: every word differs from the generation's
/// neighbours', so half of one pair and half of another never make a known pair.
fn id_of(generation: u32) -> GenerationId {
    GenerationId::from_words([
        generation,
        !generation,
        generation ^ 0x5555_5555,
        generation,
    ])
}

/// A shared mapping of the page head of a file, as the daemon's writer has it.
struct Mapping(NonNull<u8>);

// SAFETY: the mapping is only accessed through atomics and lives until drop.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &std::fs::File, prot: ProtFlags) -> Mapping {
        // SAFETY: a fresh shared mapping of a one-page file at an address the kernel picks,
        // accessed only through atomics and unmapped on drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                prot,
                MapFlags::SHARED,
                file.as_fd(),
                0,
            )
        }
        .unwrap();
        Mapping(NonNull::new(ptr.cast()).unwrap())
    }

    fn head(&self) -> &[AtomicU32; PAGE_HEAD_WORDS] {
        // SAFETY: page-aligned, PAGE_SIZE bytes long, alive as long as `self`.
        unsafe { &*self.0.as_ptr().cast::<[AtomicU32; PAGE_HEAD_WORDS]>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `new`, which nothing uses after drop.
        let _ = unsafe { rustix::mm::munmap(self.0.as_ptr().cast(), PAGE_SIZE) };
    }
}

/// The daemon's protocol with a yield between every store, so that a reader often runs in the
/// middle of an update.
fn slow_write(head: &[AtomicU32; PAGE_HEAD_WORDS], generation: u32, id: GenerationId) {
    let sequence = &head[SEQUENCE_OFFSET / 4];
    sequence.store(stable_sequence(generation) - 1, Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Release);
    for (word, value) in head[2..].iter().zip(id.words()) {
        std::thread::yield_now();
        word.store(value, Ordering::Relaxed);
    }
    std::thread::yield_now();
    head[0].store(generation, Ordering::Release);
    std::thread::yield_now();
    sequence.store(stable_sequence(generation), Ordering::Release);
}

/// Reads the generation and the ID without the sequence word: what the rule is there to stop.
fn read_skipping_the_rule(head: &[AtomicU32; PAGE_HEAD_WORDS]) -> (u32, GenerationId) {
    let generation = head[0].load(Ordering::Acquire);
    let words = std::array::from_fn(|i| head[2 + i].load(Ordering::Acquire));
    (generation, GenerationId::from_words(words))
}

/// A page file with generation 0 and a writer mapping of it.
fn page_file() -> (tempfile::TempDir, std::path::PathBuf, Mapping) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("generation");
    let mut page = vec![0u8; PAGE_SIZE];
    page[..24].copy_from_slice(&encode_head(0, id_of(0)));
    std::fs::write(&path, &page).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let writer = Mapping::new(&file, ProtFlags::READ | ProtFlags::WRITE);
    (dir, path, writer)
}

/// Runs `write` for every generation on a thread of its own while `read` runs here; returns
/// how many reads `read` made.
fn race(
    writer: Mapping,
    write: fn(&[AtomicU32; PAGE_HEAD_WORDS], u32, GenerationId),
    mut read: impl FnMut(),
) -> u64 {
    let done = Arc::new(AtomicBool::new(false));
    let writing = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for generation in 1..=ROUNDS {
                write(writer.head(), generation, id_of(generation));
                // A stable page for a moment, as between two bumps: a writer that never stops
                // would leave readers only odd words to find.
                std::thread::yield_now();
                (0..500).for_each(|_| std::hint::spin_loop());
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut reads = 0;
    while !done.load(Ordering::Acquire) {
        read();
        reads += 1;
    }
    writing.join().unwrap();
    reads
}

#[test]
fn a_probe_never_sees_a_generation_with_another_generations_id() {
    for write in [slow_write, sysgenid_abi::write_head] {
        let (_dir, path, writer) = page_file();
        let probe = Probe::page_file(&path).unwrap();
        let mut last = 0;
        let reads = race(writer, write, || {
            let (generation, id) = probe.generation_with_id().expect("a stable page");
            assert_eq!(
                id,
                id_of(generation),
                "a mixed pair at generation {generation}"
            );
            assert!(generation >= last, "the generation went back");
            last = generation;
        });
        assert_eq!(probe.generation_with_id(), Some((ROUNDS, id_of(ROUNDS))));
        assert!(reads > 0);
    }
}

/// The test above can fail: against the same writer, a reader that skips the rule sees mixed
/// pairs.
#[test]
fn a_reader_that_skips_the_rule_sees_mixed_pairs() {
    let (_dir, path, writer) = page_file();
    let file = std::fs::File::open(&path).unwrap();
    let reader = Mapping::new(&file, ProtFlags::READ);
    let mut mixed = 0u64;
    race(writer, slow_write, || {
        let (generation, id) = read_skipping_the_rule(reader.head());
        if id != id_of(generation) {
            mixed += 1;
        }
    });
    assert!(mixed > 0, "no mixed pair in {ROUNDS} slow updates");
}
