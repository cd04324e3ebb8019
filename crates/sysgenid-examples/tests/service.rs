//! `sysgenid-sample-service` against a real daemon: renews its UUID on each change, publishes
//! before it acks, and exits 0 on SIGTERM and SIGINT.

mod common;

use rustix::process::Signal;
use sysgenid_e2e::{Daemon, eventually, within};

use common::{Example, TIMEOUT, fields, paths};

const SERVICE: &str = env!("CARGO_BIN_EXE_sysgenid-sample-service");

/// The generation and UUID of a state line, checking its shape.
fn state(line: &str) -> (u32, String) {
    let f = fields(line);
    assert_eq!(f.len(), 2, "two fields: {line:?}");
    let generation = f["generation"].parse().expect("a generation");
    let uuid = f["uuid"].to_owned();
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(uuid.as_bytes()[14], b'4', "version 4: {uuid}");
    assert!(
        matches!(uuid.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
        "RFC variant: {uuid}"
    );
    (generation, uuid)
}

#[test]
fn each_change_renews_the_uuid_which_is_published_before_the_ack() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let state_file = daemon.dir.join("service.state");
    let mut service = Example::spawn(SERVICE, &daemon, &["--state-file", path(&state_file)]);

    let first = service.line();
    let (generation, uuid0) = state(&first);
    assert_eq!(generation, 0);
    assert_eq!(read(&state_file), format!("{first}\n"));
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!(
        (status.tracked, status.outdated),
        (1, 0),
        "tracked at start"
    );

    sysgenid::trigger_at(&paths, None).unwrap();
    // The wait ends with the service's ack, so its new state must be published already.
    within("wait_watchers", TIMEOUT, {
        let paths = paths.clone();
        move || sysgenid::wait_watchers_at(&paths, Some(TIMEOUT))
    })
    .unwrap();
    let published = read(&state_file);
    let (generation, uuid1) = state(published.trim_end());
    assert_eq!(generation, 1);
    assert_ne!(uuid1, uuid0, "a new UUID after the change");
    assert_eq!(service.line(), published.trim_end(), "stdout says the same");
    assert_eq!(sysgenid::status_at(&paths).unwrap().outdated, 0);

    // Again, many times, so that publishing after the ack would show here.
    let mut seen = std::collections::HashSet::from([uuid0, uuid1]);
    for expected in 2..=100 {
        sysgenid::trigger_at(&paths, None).unwrap();
        sysgenid::wait_watchers_at(&paths, Some(TIMEOUT)).unwrap();
        let published = read(&state_file);
        let (generation, uuid) = state(published.trim_end());
        assert_eq!(generation, expected, "published before the ack");
        assert!(seen.insert(uuid), "a new UUID each time");
        assert_eq!(service.line(), published.trim_end());
    }

    // A jump of several generations is one change.
    sysgenid::trigger_at(&paths, Some(200)).unwrap();
    let (generation, uuid) = state(&service.line());
    assert_eq!(generation, 200);
    assert!(seen.insert(uuid.clone()), "a new UUID again");
    sysgenid::wait_watchers_at(&paths, Some(TIMEOUT)).unwrap();
    assert_eq!(read(&state_file), format!("generation=200 uuid={uuid}\n"));

    service.signal(Signal::TERM);
    assert_eq!(service.wait().code(), Some(0), "SIGTERM ends it with 0");
    eventually("the service's file is released", || {
        daemon.count("open_files") == 0
    });
    assert_eq!(daemon.count("tracked"), 0);
}

#[test]
fn sigint_while_it_waits_ends_it_with_status_0() {
    let daemon = Daemon::start();
    let mut service = Example::spawn(SERVICE, &daemon, &[]);
    assert_eq!(state(&service.line()).0, 0);
    service.signal(Signal::INT);
    assert_eq!(service.wait().code(), Some(0));
}

#[test]
fn an_outdated_service_holds_the_overseer_until_it_acks() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut service = Example::spawn(SERVICE, &daemon, &[]);
    service.line();
    // Stopped, it cannot ack: the overseer's wait times out, naming one outdated watcher.
    service.signal(Signal::STOP);
    sysgenid::trigger_at(&paths, None).unwrap();
    let err = sysgenid::wait_watchers_at(&paths, Some(std::time::Duration::from_millis(200)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            sysgenid::Error::Timeout {
                outdated: Some(1),
                ..
            }
        ),
        "{err:?}"
    );
    // Resumed, it renews and acks, and the wait completes.
    service.signal(Signal::CONT);
    assert_eq!(state(&service.line()).0, 1);
    sysgenid::wait_watchers_at(&paths, Some(TIMEOUT)).unwrap();
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}
