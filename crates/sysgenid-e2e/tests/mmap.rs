//! Mappings: the device page and the page file follow every bump, survive what other processes
//! do, never fault on a fresh daemon, and cannot be forged by those who may not.

use std::process::Command;

use sysgenid_e2e::{Daemon, DaemonOptions, DevFile, Errno, Identity, Probe};

fn start(args: &[&str]) -> Daemon {
    let daemon = Daemon::start_with(DaemonOptions {
        args: args.iter().map(|s| s.to_string()).collect(),
        ..DaemonOptions::default()
    });
    daemon.allow_other_users();
    daemon
}

/// A probe that maps `path` read-only, then loads once per `resume`.
fn mapper(who: Identity, path: &str, loads: usize) -> Probe {
    let mut steps = vec!["open", path, "ro", "mmap", "load"];
    for _ in 0..loads {
        steps.extend(["wait-stdin", "load"]);
    }
    let mut probe = Probe::spawn(who, &steps);
    probe.expect("open ok");
    probe.expect("mmap ok");
    probe
}

fn load_next(probe: &mut Probe) -> String {
    probe.resume();
    probe.expect("wait-stdin ok");
    probe.line()
}

fn run_ok(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect("spawn");
    assert!(status.success(), "{program} {args:?}: {status}");
}

#[test]
fn device_and_page_file_mappings_follow_triggers() {
    let daemon = start(&[]);
    let page = daemon.page_file();
    let mut device_map = mapper(Identity::Nobody, daemon.device_str(), 2);
    let mut page_map = mapper(Identity::Nobody, page.to_str().unwrap(), 2);
    device_map.expect("load ok 0");
    page_map.expect("load ok 0");
    let f = DevFile::rw(&daemon.device);
    f.trigger(0).unwrap();
    assert_eq!(load_next(&mut device_map), "load ok 1");
    assert_eq!(load_next(&mut page_map), "load ok 1");
    f.trigger(5).unwrap();
    assert_eq!(load_next(&mut device_map), "load ok 5");
    assert_eq!(load_next(&mut page_map), "load ok 5");
}

#[test]
fn a_device_mapping_is_right_after_another_process_acks_opens_or_maps() {
    let daemon = start(&[]);
    let dev = daemon.device_str().to_owned();
    let mut m = mapper(Identity::Nobody, &dev, 6);
    m.expect("load ok 0");
    let f = DevFile::rw(&daemon.device);
    f.trigger(0).unwrap();
    assert_eq!(load_next(&mut m), "load ok 1");
    // An ack is a direct-io write: it drops the page from every mapping.
    let acker = Probe::run(Identity::Root, &["open", &dev, "rw", "write-u32", "1"]);
    assert_eq!(acker, ["open ok", "write-u32 ok 4"]);
    assert_eq!(
        load_next(&mut m),
        "load ok 1",
        "refilled at once after an ack"
    );
    f.trigger(0).unwrap();
    let opener = Probe::run(
        Identity::Nobody,
        &["open", &dev, "ro-nonblock", "read", "4"],
    );
    assert_eq!(opener, ["open ok", "read err EAGAIN"]);
    assert_eq!(load_next(&mut m), "load ok 2", "after another open");
    let other = Probe::run(Identity::Nobody, &["open", &dev, "ro", "mmap", "load"]);
    assert_eq!(other, ["open ok", "mmap ok", "load ok 2"]);
    assert_eq!(load_next(&mut m), "load ok 2", "after another mapping");
    f.trigger(0).unwrap();
    assert_eq!(load_next(&mut m), "load ok 3");
    f.ack(3).unwrap();
    assert_eq!(
        load_next(&mut m),
        "load ok 3",
        "after an ack in the same process as the trigger"
    );
}

#[test]
fn a_process_that_maps_a_fresh_daemon_first_reads_the_counter_without_sigbus() {
    let daemon = start(&[]);
    // The daemon stats its own mount before it reports serving, so the kernel knows the size.
    let out = sysgenid_e2e::probe_command(
        Identity::Nobody,
        &["open", daemon.device_str(), "ro", "mmap", "load"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "probe died: {:?}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "open ok\nmmap ok\nload ok 0\n"
    );
}

#[test]
fn with_device_mmap_off_the_device_gives_enodev_and_the_page_file_serves() {
    let daemon = start(&["--device-mmap", "off"]);
    assert_eq!(daemon.status()["daemon"]["device_mmap"], false);
    let out = Probe::run(
        Identity::Nobody,
        &["open", daemon.device_str(), "ro", "mmap"],
    );
    assert_eq!(out, ["open ok", "mmap err ENODEV"]);
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let page = daemon.page_file();
    let out = Probe::run(
        Identity::Nobody,
        &["open", page.to_str().unwrap(), "ro", "mmap", "load"],
    );
    assert_eq!(out, ["open ok", "mmap ok", "load ok 1"]);
}

#[test]
fn truncate_and_redirect_leave_mappers_unharmed() {
    let daemon = start(&[]);
    let dev = daemon.device_str().to_owned();
    let mut m = mapper(Identity::Nobody, &dev, 2);
    m.expect("load ok 0");
    run_ok("sh", &["-c", &format!(": > '{dev}'")]);
    run_ok("truncate", &["-s", "0", &dev]);
    assert_eq!(
        std::fs::metadata(&dev).unwrap().len(),
        4096,
        "the size never changes"
    );
    assert_eq!(
        load_next(&mut m),
        "load ok 0",
        "no SIGBUS after a truncation attempt"
    );
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    assert_eq!(load_next(&mut m), "load ok 1");
    m.finish();
}

#[test]
fn outside_the_writer_group_no_one_can_open_for_writing_so_no_one_can_forge() {
    let daemon = start(&[]);
    let dev = daemon.device_str().to_owned();
    let page = daemon.page_file().to_str().unwrap().to_owned();
    for path in [&dev, &page] {
        assert_eq!(
            Probe::run(Identity::Nobody, &["open", path, "rw"]),
            ["open err EACCES"]
        );
        assert_eq!(
            Probe::run(Identity::Nobody, &["open", path, "ro", "mmap-rw"]),
            ["open ok", "mmap-rw err EACCES"],
            "{path}"
        );
        assert_eq!(
            Probe::run(
                Identity::Nobody,
                &["open", path, "ro", "mmap", "mprotect-rw"]
            ),
            ["open ok", "mmap ok", "mprotect-rw err EACCES"],
            "{path}"
        );
    }
    let mut observer = mapper(Identity::Nobody, &dev, 1);
    observer.expect("load ok 0");
    assert_eq!(load_next(&mut observer), "load ok 0");
}

/// The documented trust boundary: with device mmap on, a member of the writer group can map the
/// device writable and shared, and other device mappers see its store until the daemon gets the
/// writeback, discards it and puts the true page back. The page file is never affected, and no
/// write error sticks to the file (a refused writeback made later reads fail with EIO).
#[test]
fn a_writer_can_forge_the_device_page_only_until_writeback_and_never_the_page_file() {
    // `nogroup` is gid 65534, the group `nobody` runs with under setpriv.
    let daemon = start(&["--group", "nogroup"]);
    let dev = daemon.device_str().to_owned();
    let page = daemon.page_file().to_str().unwrap().to_owned();
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let mut device_view = mapper(Identity::Root, &dev, 2);
    let mut page_view = mapper(Identity::Root, &page, 2);
    device_view.expect("load ok 1");
    page_view.expect("load ok 1");
    let mut forger = Probe::spawn(
        Identity::Nobody,
        &[
            "open",
            &dev,
            "rw",
            "mmap-rw",
            "store",
            "999",
            "wait-stdin",
            "msync",
        ],
    );
    forger.expect("open ok");
    forger.expect("mmap-rw ok");
    forger.expect("store ok");
    assert_eq!(
        load_next(&mut device_view),
        "load ok 999",
        "the hazard docs/security.md describes"
    );
    assert_eq!(
        load_next(&mut page_view),
        "load ok 1",
        "the page file is not affected"
    );
    forger.resume();
    forger.expect("wait-stdin ok");
    let msync = forger.line();
    sysgenid_e2e::eventually("the daemon discards the writeback", || {
        daemon
            .log()
            .contains("wrote to the device page through a writable mapping")
    });
    // The daemon logs the discard, then its page-store thread writes the true page back.
    let mut last = String::new();
    sysgenid_e2e::eventually("the true page is back", || {
        last = load_next(&mut device_view);
        last == "load ok 1"
    });
    assert_eq!(last, "load ok 1", "the true page is back ({msync})");
    assert_eq!(load_next(&mut page_view), "load ok 1");
    assert_eq!(daemon.generation(), 1);
    assert_eq!(
        DevFile::rw_nonblock(&daemon.device).read(),
        Err(Errno::AGAIN),
        "reads still obey the rules"
    );
}

#[test]
fn with_device_mmap_off_no_write_path_of_an_acker_reaches_another_view() {
    let daemon = start(&["--device-mmap", "off", "--group", "nogroup"]);
    let dev = daemon.device_str().to_owned();
    let page = daemon.page_file().to_str().unwrap().to_owned();
    DevFile::rw(&daemon.device).trigger(0).unwrap();
    let mut view = mapper(Identity::Root, &page, 1);
    view.expect("load ok 1");
    // A legitimate acker: nobody in the writer group, with a read-write device fd.
    let attempts = Probe::run(
        Identity::Nobody,
        &[
            "open",
            &dev,
            "rw",
            "mmap-rw",
            "mmap",
            "write-u32",
            "999",
            "ioctl",
            "0xE404",
            "999",
            "ioctl",
            "0x4004E403",
            "999",
            "ioctl",
            "0xC004E401",
            "999",
            "open",
            &page,
            "rw",
            "open",
            &page,
            "ro",
            "mmap",
            "mprotect-rw",
            "proc-mem-store",
            "999",
            "load",
        ],
    );
    assert_eq!(
        attempts,
        [
            "open ok",
            "mmap-rw err ENODEV",
            "mmap err ENODEV",
            "write-u32 err EINVAL",
            "ioctl err EINVAL",
            // Sized ioctl numbers make the kernel copy the argument as a pointer first.
            "ioctl err E14",
            "ioctl err E14",
            "open err EACCES",
            "open ok",
            "mmap ok",
            "mprotect-rw err EACCES",
            "proc-mem-store err EIO",
            "load ok 1",
        ]
    );
    assert_eq!(load_next(&mut view), "load ok 1");
    assert_eq!(daemon.generation(), 1);
}
