//! The generation ID: a new random ID at every bump, the same in status, the page file, a
//! mapping of the device and the CLI; kept with its counter across a daemon restart, a keeper
//! restart after a crash and a handover; and given to a counter an older daemon persisted.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use rustix::fs::{Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};
use sysgenid_abi::{GenerationId, PAGE_HEAD_WORDS, PAGE_SIZE};
use sysgenid_e2e::{Daemon, DaemonOptions, DevFile, workspace_binary};

/// A read-only shared mapping of the first page of a file: the device or the page file.
struct Mapped(NonNull<u8>);

impl Mapped {
    fn of(path: &Path) -> Mapped {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).unwrap();
        // SAFETY: a fresh read-only shared mapping at an address the kernel picks, read only
        // through atomics and unmapped on drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                ProtFlags::READ,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .unwrap();
        Mapped(NonNull::new(ptr.cast()).unwrap())
    }

    /// The generation and ID, by the page's sequence-word rule.
    fn read(&self) -> (u32, GenerationId) {
        // SAFETY: page-aligned, PAGE_SIZE bytes, alive as long as `self`.
        let head = unsafe { &*self.0.as_ptr().cast::<[AtomicU32; PAGE_HEAD_WORDS]>() };
        sysgenid_abi::read_head(head).expect("a stable page")
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `of`, which nothing uses after drop.
        let _ = unsafe { rustix::mm::munmap(self.0.as_ptr().cast(), PAGE_SIZE) };
    }
}

/// The generation and its ID as status shows them, after checking that the page file (read
/// and mapped), the device mapping and `sysgenid get --id` show the same pair.
fn agreed_pair(daemon: &Daemon) -> (u32, String) {
    let generation = u32::try_from(daemon.generation()).unwrap();
    let id = daemon.generation_id();
    let pair = (
        generation,
        GenerationId::from_hex(&id).expect("32 hex digits"),
    );
    assert!(!pair.1.is_none());
    let page = std::fs::read(daemon.page_file()).unwrap();
    assert_eq!(
        sysgenid_abi::decode_head(&page),
        Some(pair),
        "the page file"
    );
    assert_eq!(
        Mapped::of(&daemon.page_file()).read(),
        pair,
        "a page file mapping"
    );
    assert_eq!(Mapped::of(&daemon.device).read(), pair, "a device mapping");
    let cli = Command::new(workspace_binary("sysgenid"))
        .arg("--device")
        .arg(&daemon.device)
        .arg("--state-dir")
        .arg(&daemon.state_dir)
        .args(["get", "--id"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout),
        format!("{generation} {id}\n")
    );
    (generation, id)
}

fn restart_in(dir: &Path) -> Daemon {
    Daemon::start_with(DaemonOptions {
        dir: Some(dir.to_owned()),
        ..DaemonOptions::default()
    })
}

#[test]
fn every_bump_draws_a_new_id_that_every_view_of_the_page_agrees_on() {
    let daemon = Daemon::start();
    let device = DevFile::rw(&daemon.device);
    let mapped = Mapped::of(&daemon.device);
    let mut seen = Vec::new();
    for expected in 0..5 {
        let (generation, id) = agreed_pair(&daemon);
        assert_eq!(generation, expected);
        assert!(!seen.contains(&id), "ID {id} came back");
        seen.push(id);
        device.trigger(0).unwrap();
        // A caller woken by its bump finds the new pair in a mapping it already had.
        let (after, _) = mapped.read();
        assert_eq!(after, expected + 1);
    }
}

#[test]
fn the_id_survives_a_restart_a_keeper_restart_and_a_handover_and_the_next_bump_renews_it() {
    let daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let before = agreed_pair(&daemon);

    daemon.crash_serving();
    assert_eq!(
        agreed_pair(&daemon),
        before,
        "after a crash of the serving process"
    );

    let (daemon, exit) = daemon.take_over(DaemonOptions::default());
    assert!(exit.is_some_and(|s| s.success()));
    assert_eq!(agreed_pair(&daemon), before, "after a handover");

    let mut daemon = daemon;
    assert!(daemon.stop(), "clean exit on SIGTERM");
    let (_temp, dir) = daemon.into_dir();
    let daemon = restart_in(&dir);
    assert_eq!(agreed_pair(&daemon), before, "after a stop and a new start");

    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let (generation, id) = agreed_pair(&daemon);
    assert_eq!(generation, before.0 + 1);
    assert_ne!(id, before.1, "a bump draws a new ID");
}

#[test]
fn a_counter_an_older_daemon_persisted_is_continued_with_a_new_id_that_is_kept() {
    let mut daemon = Daemon::start();
    DevFile::rw(&daemon.device).trigger(6).unwrap();
    assert!(daemon.stop());
    let (_temp, dir) = daemon.into_dir();
    // What a daemon older than the ID leaves: a state record without it, a page without it.
    let state = dir.join("state/state");
    let record = std::fs::read_to_string(&state).unwrap();
    let old: String = record
        .lines()
        .filter(|l| !l.starts_with("generation_id="))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(old, record);
    std::fs::write(&state, &old).unwrap();
    let page = dir.join("state/generation");
    let mut bytes = std::fs::read(&page).unwrap();
    bytes[4..24].fill(0);
    std::fs::write(&page, &bytes).unwrap();

    let daemon = restart_in(&dir);
    let (generation, id) = agreed_pair(&daemon);
    assert_eq!(generation, 6, "the counter carries on");
    let record = std::fs::read_to_string(&state).unwrap();
    assert!(
        record.contains(&format!("generation_id={id}\n")),
        "{record}"
    );

    let mut daemon = daemon;
    assert!(daemon.stop());
    drop(daemon);
    let daemon = restart_in(&dir);
    assert_eq!(
        agreed_pair(&daemon),
        (6, id),
        "and keeps the ID it was given"
    );
}
