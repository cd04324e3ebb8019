//! `sysgenid-sample-inline` against a real daemon: untracked, so a bump waits for nobody, and
//! the first id after the bump comes from a reseeded RNG.

mod common;

use sysgenid_e2e::{Daemon, eventually, within};

use common::{Example, TIMEOUT, fields, paths};

const INLINE: &str = env!("CARGO_BIN_EXE_sysgenid-sample-inline");

/// The generation, the reseeded flag and the id of an `id` answer.
fn id(line: &str) -> (u32, bool, String) {
    let f = fields(line);
    assert_eq!(f.len(), 3, "three fields: {line:?}");
    let id = f["id"].to_owned();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    (
        f["generation"].parse().expect("a generation"),
        f["reseeded"].parse().expect("a bool"),
        id,
    )
}

#[test]
fn the_first_id_after_a_bump_is_reseeded_and_the_bump_waits_for_nobody() {
    let daemon = Daemon::start();
    let paths = paths(&daemon);
    let mut inline = Example::spawn(INLINE, &daemon, &[]);

    let (generation, reseeded, a) = id(&inline.ask("id"));
    assert_eq!((generation, reseeded), (0, false));
    let (generation, reseeded, b) = id(&inline.ask("id"));
    assert_eq!((generation, reseeded), (0, false));
    assert_ne!(a, b);

    sysgenid::trigger_at(&paths, None).unwrap();
    // It holds no tracked watcher (no device file at all: the probe maps the page file), so
    // the overseer's wait completes while it sits idle and outdated.
    within("wait_watchers", TIMEOUT, {
        let paths = paths.clone();
        move || sysgenid::wait_watchers_at(&paths, Some(TIMEOUT))
    })
    .unwrap();
    // (The wait's own file is released asynchronously.)
    eventually("no open device file", || daemon.count("open_files") == 0);
    let status = sysgenid::status_at(&paths).unwrap();
    assert_eq!((status.tracked, status.outdated), (0, 0));
    assert!(status.outdated_files.iter().all(|f| f.pid != inline.pid()));

    let (generation, reseeded, c) = id(&inline.ask("id"));
    assert_eq!(
        (generation, reseeded),
        (1, true),
        "reseeds lazily, on the next call"
    );
    let (generation, reseeded, d) = id(&inline.ask("id"));
    assert_eq!((generation, reseeded), (1, false), "and only once");
    assert!(c != a && c != b && d != c);

    // Two bumps between calls are one reseed.
    sysgenid::trigger_at(&paths, None).unwrap();
    sysgenid::trigger_at(&paths, None).unwrap();
    let (generation, reseeded, _) = id(&inline.ask("id"));
    assert_eq!((generation, reseeded), (3, true));
    assert_eq!(
        inline.ask("nonsense"),
        "error=unknown-command command=nonsense"
    );

    inline.send("quit");
    assert!(inline.wait().success());
}
