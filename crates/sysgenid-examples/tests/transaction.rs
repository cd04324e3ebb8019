//! `sysgenid-sample-transaction` against a real daemon: a bump during the work reverts the
//! attempt and the retry commits under the new generation.

mod common;

use sysgenid_e2e::Daemon;

use common::{Example, paths};

const TRANSACTION: &str = env!("CARGO_BIN_EXE_sysgenid-sample-transaction");

/// Long enough for the test to trigger inside the first attempt's work.
const WORK_MS: &str = "2000";

#[test]
fn a_bump_during_the_work_reverts_the_attempt_and_the_retry_commits() {
    let daemon = Daemon::start();
    let ledger = daemon.dir.join("ledger");
    let mut txn = Example::spawn(
        TRANSACTION,
        &daemon,
        &[
            "--work-ms",
            WORK_MS,
            "--attempts",
            "3",
            "--ledger",
            path(&ledger),
        ],
    );

    assert_eq!(txn.line(), "attempt=1 started before=0");
    assert_eq!(
        read(&ledger),
        "attempt=1 generation=0\n",
        "the work is under way"
    );
    sysgenid::trigger_at(&paths(&daemon), None).unwrap();

    assert_eq!(txn.line(), "attempt=1 before=0 after=1 outcome=reverted");
    assert_eq!(txn.line(), "attempt=2 started before=1");
    assert_eq!(txn.line(), "attempt=2 before=1 after=1 outcome=committed");
    assert_eq!(txn.wait().code(), Some(0));
    assert_eq!(
        read(&ledger),
        "attempt=2 generation=1\n",
        "only the retry is kept"
    );
}

#[test]
fn without_a_bump_the_first_attempt_commits() {
    let daemon = Daemon::start();
    sysgenid::trigger_at(&paths(&daemon), Some(5)).unwrap();
    let ledger = daemon.dir.join("ledger");
    let mut txn = Example::spawn(
        TRANSACTION,
        &daemon,
        &["--work-ms", "0", "--ledger", path(&ledger)],
    );
    assert_eq!(txn.line(), "attempt=1 started before=5");
    assert_eq!(txn.line(), "attempt=1 before=5 after=5 outcome=committed");
    assert_eq!(txn.wait().code(), Some(0));
    assert_eq!(read(&ledger), "attempt=1 generation=5\n");
}

#[test]
fn it_fails_once_every_attempt_is_reverted() {
    let daemon = Daemon::start();
    let ledger = daemon.dir.join("ledger");
    let mut txn = Example::spawn(
        TRANSACTION,
        &daemon,
        &[
            "--work-ms",
            WORK_MS,
            "--attempts",
            "1",
            "--ledger",
            path(&ledger),
        ],
    );
    assert_eq!(txn.line(), "attempt=1 started before=0");
    sysgenid::trigger_at(&paths(&daemon), None).unwrap();
    assert_eq!(txn.line(), "attempt=1 before=0 after=1 outcome=reverted");
    assert_eq!(txn.wait().code(), Some(1));
    assert_eq!(read(&ledger), "", "nothing is left of the reverted work");
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}
