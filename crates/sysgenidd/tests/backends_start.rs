//! Starting backends: statuses, explicit lists, and one bump per restore through the inbox.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use sysgenidd::backends::{self, Options, vmclock};
use sysgenidd::config::BackendChoice;
use sysgenidd::inbox::{InboxReceiver, Message, inbox};

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

fn bumps(rx: &InboxReceiver, wait: Duration) -> Vec<String> {
    let until = Instant::now() + wait;
    let mut seen = Vec::new();
    while Instant::now() < until {
        for m in rx.drain() {
            if let Message::HardwareBump { backend } = m {
                seen.push(backend);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}

fn options(path: &std::path::Path) -> Options {
    Options {
        vmclock_path: path.to_owned(),
        vmclock_interval: Duration::from_millis(10),
        ..Options::default()
    }
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
    assert_eq!(names, ["vmclock", "uevent"]);
    assert!(!statuses[0].active);
    assert!(
        statuses[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("no /nonexistent/vmclock0")
    );
    // The uevent socket binds on Linux, as root or not.
    assert!(statuses[1].active, "{:?}", statuses[1]);
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
        err,
        "unknown backend \"vmgenid\": this build knows vmclock, uevent"
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
    let file = page(100, vmclock::FLAG_VM_GEN_COUNTER_PRESENT);
    let mut opts = options(file.path());
    opts.window = Duration::ZERO;
    let statuses =
        backends::start_with(&BackendChoice::List(vec!["vmclock".into()]), &tx, &opts).unwrap();
    assert!(statuses[0].active, "{statuses:?}");
    assert!(bumps(&rx, Duration::from_millis(100)).is_empty());
    set_counter(&file, 2, 101);
    assert_eq!(bumps(&rx, Duration::from_millis(300)), ["vmclock"]);
    set_counter(&file, 4, 102);
    assert_eq!(bumps(&rx, Duration::from_millis(300)), ["vmclock"]);
}

#[test]
fn a_changed_record_means_a_restore_while_down() {
    let state = tempfile::tempdir().unwrap();
    let file = page(7, vmclock::FLAG_VM_GEN_COUNTER_PRESENT);
    let mut opts = options(file.path());
    opts.state_dir = Some(state.path().to_owned());
    let record = vmclock::record_path(state.path());

    // First run: no record, no bump; the counter is recorded.
    let (tx, rx) = inbox().unwrap();
    backends::start_with(&BackendChoice::List(vec!["vmclock".into()]), &tx, &opts).unwrap();
    assert!(bumps(&rx, Duration::from_millis(100)).is_empty());
    assert_eq!(vmclock::read_record(&record), Some(7));

    // Same counter at the next start: nothing happened.
    let (tx, rx) = inbox().unwrap();
    backends::start_with(&BackendChoice::List(vec!["vmclock".into()]), &tx, &opts).unwrap();
    assert!(bumps(&rx, Duration::from_millis(100)).is_empty());

    // Changed while down: exactly one bump at start.
    vmclock::write_record(&record, 6).unwrap();
    let (tx, rx) = inbox().unwrap();
    backends::start_with(&BackendChoice::List(vec!["vmclock".into()]), &tx, &opts).unwrap();
    assert_eq!(bumps(&rx, Duration::from_millis(200)), ["vmclock"]);
    assert_eq!(vmclock::read_record(&record), Some(7));
}

#[test]
fn two_backends_reporting_one_restore_make_one_bump() {
    let (tx, rx) = inbox().unwrap();
    let reporter = backends::Reporter::new(tx, Duration::from_secs(2));
    reporter.note_key("vmclock", 1);
    assert!(reporter.report("uevent", None));
    assert!(!reporter.report("vmclock", Some(2)));
    assert_eq!(bumps(&rx, Duration::from_millis(50)), ["uevent"]);
}
