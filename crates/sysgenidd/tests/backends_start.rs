//! Starting backends: statuses, explicit lists, and one bump per restore through the inbox.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use BackendKind::{FwCfg, Vmclock};
use sysgenidd::backends::dedupe::DEFAULT_WINDOW;
use sysgenidd::backends::{self, BackendKind, Options, fw_cfg, record, vmclock};
use sysgenidd::config::BackendChoice;
use sysgenidd::inbox::{InboxReceiver, Message, inbox};
use sysgenidd::restores::Restores;

fn page(counter: u64, flags: u64) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let f = file.as_file();
    f.set_len(4096).unwrap();
    f.write_at(&vmclock::MAGIC.to_le_bytes(), 0).unwrap();
    f.write_at(&4096u32.to_le_bytes(), 4).unwrap();
    f.write_at(&vmclock::VERSION.to_le_bytes(), 8).unwrap();
    f.write_at(&2u32.to_le_bytes(), 12).unwrap();
    f.write_at(&flags.to_le_bytes(), 24).unwrap();
    f.write_at(&counter.to_le_bytes(), 104).unwrap();
    file
}

fn set_counter(file: &tempfile::NamedTempFile, seq: u32, counter: u64) {
    let f = file.as_file();
    f.write_at(&(seq + 1).to_le_bytes(), 12).unwrap();
    f.write_at(&counter.to_le_bytes(), 104).unwrap();
    f.write_at(&(seq + 2).to_le_bytes(), 12).unwrap();
}

/// The event loop's side of the inbox: reports judged by the loop's own [`Restores`], in
/// inbox order, and every bump published at once.
struct Loop {
    rx: InboxReceiver,
    restores: Restores,
    epoch: Instant,
}

impl Loop {
    fn new(rx: InboxReceiver, window: Duration) -> Loop {
        Loop {
            rx,
            restores: Restores::new(window),
            epoch: Instant::now(),
        }
    }

    /// The backends whose reports bumped within `wait`.
    fn bumps(&mut self, wait: Duration) -> Vec<BackendKind> {
        let until = Instant::now() + wait;
        let mut seen = Vec::new();
        while Instant::now() < until {
            for m in self.rx.drain() {
                match m {
                    Message::Report {
                        backend,
                        key,
                        completion,
                    } => {
                        let now = self.epoch.elapsed();
                        if let Some(token) = self.restores.report(backend, key, completion, now) {
                            seen.push(backend);
                            self.restores.published(token);
                        }
                    }
                    Message::KeyAtStart { backend, key } => self.restores.note_key(backend, key),
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    }
}

fn guid_blob(guid: u128) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(4096).unwrap();
    set_guid(&file, guid);
    file
}

fn set_guid(file: &tempfile::NamedTempFile, guid: u128) {
    file.as_file()
        .write_at(&guid.to_le_bytes(), fw_cfg::GUID_OFFSET)
        .unwrap();
}

/// Fast polling, no BPF pins, no fw_cfg blob unless a test sets one.
fn options(path: &std::path::Path) -> Options {
    Options {
        vmclock_path: path.to_owned(),
        vmclock_interval: Duration::from_millis(10),
        fw_cfg_path: "/nonexistent/fw_cfg/raw".into(),
        fw_cfg_interval: Duration::from_millis(10),
        bpf_pin_dir: None,
        ..Options::default()
    }
}

fn list(names: &[&str]) -> BackendChoice {
    BackendChoice::List(names.iter().map(|n| n.to_string()).collect())
}

/// Starts the named backends, with a loop of the default dedupe window on their inbox.
fn started(names: &[&str], opts: &Options) -> Loop {
    let (tx, rx) = inbox().unwrap();
    backends::start_with(&list(names), &tx, opts).unwrap();
    Loop::new(rx, DEFAULT_WINDOW)
}

#[test]
fn auto_reports_each_backend() {
    let (tx, _rx) = inbox().unwrap();
    let statuses = backends::start_with(
        &BackendChoice::Auto,
        &tx,
        &options(std::path::Path::new("/nonexistent/vmclock0")),
    )
    .unwrap();
    let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["vmgenid-bpf", "vmclock", "uevent", "fw-cfg"]);
    // Whether the probe can attach depends on the machine; either way status says how or why not.
    assert!(
        statuses[0].active == statuses[0].reason.is_none()
            && statuses[0].active == statuses[0].detail.is_some(),
        "{:?}",
        statuses[0]
    );
    assert!(!statuses[1].active);
    assert!(
        statuses[1]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("no /nonexistent/vmclock0")
    );
    // The uevent socket binds on Linux, as root or not.
    assert!(statuses[2].active, "{:?}", statuses[2]);
    assert!(
        statuses[3]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("no /nonexistent/fw_cfg/raw"),
        "{:?}",
        statuses[3]
    );
}

#[test]
fn auto_polls_fw_cfg_only_without_an_immediate_backend() {
    let (tx, _rx) = inbox().unwrap();
    let clock = page(1, vmclock::FLAG_VM_GEN_COUNTER_PRESENT);
    let blob = guid_blob(7);
    let mut opts = options(clock.path());
    opts.fw_cfg_path = blob.path().to_owned();
    let statuses = backends::start_with(&BackendChoice::Auto, &tx, &opts).unwrap();
    let fw = statuses.iter().find(|s| s.name == "fw-cfg").unwrap();
    assert!(!fw.active);
    assert_eq!(
        fw.reason.as_deref(),
        Some(
            "not needed: vmclock sees restores at once (name fw-cfg in --backends to poll it too)"
        )
    );

    opts.vmclock_path = "/nonexistent/vmclock0".into();
    let statuses = backends::start_with(&BackendChoice::Auto, &tx, &opts).unwrap();
    let fw = statuses.iter().find(|s| s.name == "fw-cfg").unwrap();
    assert!(fw.active, "{fw:?}");
}

#[test]
fn explicit_lists_start_unavailable_backends_inactive_and_refuse_unknown_ones() {
    let (tx, _rx) = inbox().unwrap();
    let no_counter = page(1, vmclock::FLAG_NOTIFICATION_PRESENT);
    let statuses = backends::start_with(
        &BackendChoice::List(vec!["vmclock".into(), "vmclock".into()]),
        &tx,
        &options(no_counter.path()),
    )
    .unwrap();
    assert_eq!(statuses.len(), 1);
    assert!(!statuses[0].active);
    assert_eq!(statuses[0].reason.as_deref(), Some(vmclock::NO_COUNTER));

    let err = backends::start(&BackendChoice::List(vec!["vmgenid".into()]), &tx).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown backend \"vmgenid\": this build knows vmgenid-bpf, vmclock, uevent, fw-cfg"
    );
    assert!(
        backends::start(&BackendChoice::None, &tx)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn each_counter_change_sends_one_bump() {
    let (tx, rx) = inbox().unwrap();
    let mut el = Loop::new(rx, Duration::ZERO);
    let file = page(100, vmclock::FLAG_VM_GEN_COUNTER_PRESENT);
    let opts = options(file.path());
    let statuses =
        backends::start_with(&BackendChoice::List(vec!["vmclock".into()]), &tx, &opts).unwrap();
    assert!(statuses[0].active, "{statuses:?}");
    assert!(el.bumps(Duration::from_millis(100)).is_empty());
    set_counter(&file, 2, 101);
    assert_eq!(el.bumps(Duration::from_millis(300)), [Vmclock]);
    set_counter(&file, 4, 102);
    assert_eq!(el.bumps(Duration::from_millis(300)), [Vmclock]);
}

#[test]
fn a_changed_record_means_a_restore_while_down() {
    let state = tempfile::tempdir().unwrap();
    let file = page(7, vmclock::FLAG_VM_GEN_COUNTER_PRESENT);
    let mut opts = options(file.path());
    opts.state_dir = Some(state.path().to_owned());
    let record = record::path(state.path(), Vmclock);

    // First run: no record, no bump; the counter is recorded.
    let mut el = started(&["vmclock"], &opts);
    assert!(el.bumps(Duration::from_millis(100)).is_empty());
    assert_eq!(record::read(&record), Some(7));

    // Same counter at the next start: nothing happened.
    let mut el = started(&["vmclock"], &opts);
    assert!(el.bumps(Duration::from_millis(100)).is_empty());

    // Changed while down: exactly one bump at start.
    record::write(&record, 6).unwrap();
    let mut el = started(&["vmclock"], &opts);
    assert_eq!(el.bumps(Duration::from_millis(200)), [Vmclock]);
    assert_eq!(record::read(&record), Some(7));
}

#[test]
fn each_guid_change_sends_one_bump_and_a_changed_guid_at_start_is_a_restore_while_down() {
    let state = tempfile::tempdir().unwrap();
    let blob = guid_blob(0x1111);
    let mut opts = options(std::path::Path::new("/nonexistent/vmclock0"));
    opts.fw_cfg_path = blob.path().to_owned();
    opts.state_dir = Some(state.path().to_owned());

    let (tx, rx) = inbox().unwrap();
    let mut el = Loop::new(rx, Duration::ZERO);
    let statuses = backends::start_with(&list(&["fw-cfg"]), &tx, &opts).unwrap();
    assert!(statuses[0].active, "{statuses:?}");
    assert!(el.bumps(Duration::from_millis(100)).is_empty());
    set_guid(&blob, 0x2222);
    assert_eq!(el.bumps(Duration::from_millis(300)), [FwCfg]);
    let record = record::path(state.path(), FwCfg);
    assert_eq!(record::read(&record), Some(0x2222));

    // A new daemon on a changed GUID (the old thread keeps polling the first blob).
    let blob2 = guid_blob(0x3333);
    opts.fw_cfg_path = blob2.path().to_owned();
    let mut el = started(&["fw-cfg"], &opts);
    assert_eq!(el.bumps(Duration::from_millis(200)), [FwCfg]);
    assert_eq!(record::read(&record), Some(0x3333));
}

/// Two real backend threads see the same restore: one bump, by the one that saw it first, and
/// both record the restore as handled once that bump is published.
#[test]
fn two_backends_seeing_one_restore_bump_once_and_the_first_wins() {
    let state = tempfile::tempdir().unwrap();
    let clock = page(10, vmclock::FLAG_VM_GEN_COUNTER_PRESENT);
    let blob = guid_blob(0xA);
    let mut opts = options(clock.path());
    opts.fw_cfg_path = blob.path().to_owned();
    opts.state_dir = Some(state.path().to_owned());
    let recorded = |kind| record::read(&record::path(state.path(), kind));
    let (tx, rx) = inbox().unwrap();
    let mut el = Loop::new(rx, Duration::from_millis(600));
    let statuses = backends::start_with(&list(&["vmclock", "fw-cfg"]), &tx, &opts).unwrap();
    assert!(statuses.iter().all(|s| s.active), "{statuses:?}");
    assert!(el.bumps(Duration::from_millis(100)).is_empty());

    // Restore one: the vmclock counter moves first, the GUID 100 ms later.
    set_counter(&clock, 2, 11);
    std::thread::sleep(Duration::from_millis(100));
    set_guid(&blob, 0xB);
    assert_eq!(el.bumps(Duration::from_millis(800)), [Vmclock]);
    assert_eq!((recorded(Vmclock), recorded(FwCfg)), (Some(11), Some(0xB)));

    // Restore two, after the window: the GUID first this time.
    set_guid(&blob, 0xC);
    std::thread::sleep(Duration::from_millis(100));
    set_counter(&clock, 4, 12);
    assert_eq!(el.bumps(Duration::from_millis(800)), [FwCfg]);
}

/// A restore seen while down whose bump is never applied (the daemon died first) is not
/// recorded as handled: the next start reports it again.
#[test]
fn a_bump_that_is_never_applied_is_reported_again_at_the_next_start() {
    let state = tempfile::tempdir().unwrap();
    let blob = guid_blob(0x10);
    let mut opts = options(std::path::Path::new("/nonexistent/vmclock0"));
    opts.fw_cfg_path = blob.path().to_owned();
    opts.state_dir = Some(state.path().to_owned());
    let record = record::path(state.path(), FwCfg);
    record::write(&record, 0x0F).unwrap();

    // Start: the GUID changed while down; the bump is sent but the loop never applies it.
    let (tx, rx) = inbox().unwrap();
    backends::start_with(&list(&["fw-cfg"]), &tx, &opts).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let sent = rx.drain();
    assert!(
        matches!(
            sent.as_slice(),
            [
                Message::KeyAtStart {
                    backend: FwCfg,
                    key: 0x0F
                },
                Message::Report {
                    backend: FwCfg,
                    key: Some(0x10),
                    ..
                },
            ]
        ),
        "{sent:?}"
    );
    drop(sent);
    assert_eq!(
        record::read(&record),
        Some(0x0F),
        "not recorded before it is applied"
    );

    // The next start sees the same change again, and records it once applied.
    let blob2 = guid_blob(0x10);
    opts.fw_cfg_path = blob2.path().to_owned();
    let mut el = started(&["fw-cfg"], &opts);
    assert_eq!(el.bumps(Duration::from_millis(200)), [FwCfg]);
    assert_eq!(record::read(&record), Some(0x10));
}
