//! The status document, the answer to `status`, and its versions.
//!
//! Version 1 is the document of daemons before the `version` field: a document without it is
//! version 1. Version 2 adds `version` and nothing else. A later version only adds fields, each
//! listed in [`ADDED_FIELDS`] and an `Option` here that reads as `None` from an older daemon;
//! [`Status::missing_fields`] names what a document's version lacks. Fields of version 1 are
//! required. Readers ignore fields they do not know.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The version of the status document this crate writes, and the newest it knows.
pub const STATUS_VERSION: u32 = 4;

/// Each field added after version 1, with the version that added it, oldest first.
pub const ADDED_FIELDS: &[(u32, &str)] = &[
    (2, "version"),
    (3, "daemon.serving_pid"),
    (3, "daemon.restarts"),
    (4, "generation_id"),
];

/// The top-level fields of version 1: every daemon writes them, so a document without one of
/// them is not a status document.
pub const VERSION_1_FIELDS: &[&str] = &[
    "generation",
    "serving",
    "degraded",
    "open_files",
    "tracked",
    "outdated",
    "outdated_files",
    "pending_reads",
    "pending_waits",
    "last_bump",
    "failed_bumps",
    "last_failure",
    "daemon",
];

fn version_1() -> u32 {
    1
}

/// The status document: what the device ABI cannot tell, such as who is lagging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The document's format: [`STATUS_VERSION`] from this crate's daemon, 1 from a daemon that
    /// does not write the field.
    #[serde(default = "version_1")]
    pub version: u32,
    /// The current generation.
    pub generation: u32,
    /// The current generation's random ID ([`crate::GenerationId`], 32 lowercase hex digits in
    /// the document). Daemons older than the field leave it out.
    #[serde(default)]
    pub generation_id: Option<crate::GenerationId>,
    /// The device is mounted and answered the daemon's own first `stat`.
    pub serving: bool,
    /// The last persist failed: the last bump was refused with `EIO` and the counter is durable
    /// only up to its last good value.
    pub degraded: bool,
    /// Open files of the device (watchers).
    pub open_files: u64,
    /// Tracked watchers.
    pub tracked: u64,
    /// Tracked watchers that have not acknowledged the current generation: what
    /// `WAIT_WATCHERS` waits for.
    pub outdated: u64,
    /// Every open file, tracked or not, that has not acknowledged the current generation.
    pub outdated_files: Vec<OutdatedFile>,
    /// Blocked `read` calls.
    pub pending_reads: u64,
    /// Blocked `WAIT_WATCHERS` calls.
    pub pending_waits: u64,
    /// The last applied bump.
    pub last_bump: Option<LastBump>,
    /// Bumps that could not be applied since the daemon started.
    pub failed_bumps: u64,
    /// The last bump that could not be applied.
    pub last_failure: Option<LastFailure>,
    /// Facts about the daemon.
    pub daemon: DaemonInfo,
}

impl Status {
    /// The fields of [`STATUS_VERSION`] that this document's older version lacks (they read as
    /// absent), such as `["version"]` for a document from a version-1 daemon.
    pub fn missing_fields(&self) -> Vec<&'static str> {
        ADDED_FIELDS
            .iter()
            .filter(|(since, _)| *since > self.version)
            .map(|(_, field)| *field)
            .collect()
    }

    /// Whether the document is newer than this crate: fields it does not know were ignored.
    pub fn is_newer(&self) -> bool {
        self.version > STATUS_VERSION
    }

    /// The fields of version 1 that a document lacks, given whether it `has` each top-level
    /// field: what to name when a document fails to parse.
    pub fn missing_required(has: impl Fn(&str) -> bool) -> Vec<&'static str> {
        VERSION_1_FIELDS
            .iter()
            .copied()
            .filter(|field| !has(field))
            .collect()
    }
}

/// An open file that has not acknowledged the current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutdatedFile {
    /// The process that opened it (a file passed on by `fork` or a socket stays under its
    /// opener).
    pub pid: u32,
    /// Its command line, `[name]` without one, `None` once the process is gone.
    pub command: Option<String>,
    /// Whether it is a tracked watcher.
    pub tracked: bool,
}

/// Who caused a bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BumpSource {
    /// A `TRIGGER_GEN_UPDATE` call or a `trigger-if` request.
    Trigger,
    /// A hardware backend.
    Backend,
    /// A source this version of the crate does not know.
    #[serde(other)]
    Unknown,
}

/// The last applied bump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastBump {
    /// The generation it set.
    pub generation: u32,
    /// Who caused it.
    pub source: BumpSource,
    /// For a trigger, the calling thread.
    pub pid: Option<u32>,
    /// For a backend, its name.
    pub backend: Option<String>,
}

/// The last bump that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFailure {
    /// Who asked for it.
    pub source: BumpSource,
    /// For a backend, its name.
    pub backend: Option<String>,
    /// The errno name: `"EOVERFLOW"` or `"EIO"`.
    pub error: String,
    /// More detail, if any.
    pub detail: Option<String>,
}

/// Facts about the daemon that the device does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Its process id.
    pub pid: u32,
    /// The device it serves.
    pub device: PathBuf,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Whether `mmap` of the device is served.
    pub device_mmap: bool,
    /// Whether it is serving (mounted and answering).
    pub serving: bool,
    /// Each hardware backend.
    pub backends: Vec<Backend>,
    /// The process that reads the device; under a keeper, `pid` is the keeper's. Daemons
    /// older than the field leave it out.
    #[serde(default)]
    pub serving_pid: Option<u32>,
    /// How often the device passed to a new serving process without its clients noticing, and
    /// the last time; `None` before the first. Daemons older than the field leave it out.
    #[serde(default)]
    pub restarts: Option<Restarts>,
}

/// The serving process's restarts on one connection (a crash under the keeper or systemd, a
/// handover to a new daemon).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarts {
    /// How many since the device was mounted.
    pub count: u64,
    /// How the last one happened: `keeper` (a crash, started again by the keeper), `fdstore`
    /// (started again by systemd from its fd store) or `handover` (a new daemon took over).
    pub mode: String,
    /// When, in Unix seconds.
    pub at: u64,
    /// The process that served before.
    pub previous_pid: u32,
    /// How that process ended, when known (`signal 9`, `exit 101`, `handed over`).
    pub cause: String,
}

/// A hardware backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Its name.
    pub name: String,
    /// Whether it is running.
    pub active: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
    /// How it runs, when that is worth knowing (how a probe attached, what it cannot see).
    /// Daemons older than the field leave it out.
    #[serde(default)]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A document as a version-1 daemon printed it (captured from one, strings shortened): no
    /// `version`.
    const VERSION_1: &str = r#"{"generation":2,"serving":true,"degraded":false,"open_files":2,"tracked":1,"outdated":1,"outdated_files":[{"pid":16771,"command":"/usr/bin/python3 /tmp/ctlcap.py","tracked":true},{"pid":16771,"command":"/usr/bin/python3 /tmp/ctlcap.py","tracked":false}],"pending_reads":0,"pending_waits":0,"last_bump":{"generation":2,"source":"trigger","pid":16771,"backend":null},"failed_bumps":0,"last_failure":null,"daemon":{"pid":16644,"device":"/tmp/ctlcap.3jma/device","state_dir":"/tmp/ctlcap.3jma/state","device_mmap":true,"serving":true,"backends":[{"name":"vmclock","active":false,"reason":"no /dev/vmclock0","detail":null},{"name":"uevent","active":true,"reason":null,"detail":null}]}}"#;

    fn sample() -> Status {
        Status {
            version: STATUS_VERSION,
            generation: 7,
            generation_id: crate::GenerationId::from_hex("00112233445566778899aabbccddeeff"),
            serving: true,
            degraded: true,
            open_files: 3,
            tracked: 1,
            outdated: 1,
            outdated_files: vec![OutdatedFile {
                pid: 4242,
                command: None,
                tracked: true,
            }],
            pending_reads: 1,
            pending_waits: 0,
            last_bump: Some(LastBump {
                generation: 7,
                source: BumpSource::Backend,
                pid: None,
                backend: Some("fw-cfg".to_owned()),
            }),
            failed_bumps: 1,
            last_failure: Some(LastFailure {
                source: BumpSource::Trigger,
                backend: None,
                error: "EIO".to_owned(),
                detail: Some("disk full".to_owned()),
            }),
            daemon: DaemonInfo {
                pid: 4000,
                device: PathBuf::from("/dev/sysgenid"),
                state_dir: PathBuf::from("/run/sysgenid"),
                device_mmap: false,
                serving: true,
                backends: vec![Backend {
                    name: "vmgenid-bpf".to_owned(),
                    active: true,
                    reason: None,
                    detail: Some("kprobe".to_owned()),
                }],
                serving_pid: Some(4001),
                restarts: None,
            },
        }
    }

    #[test]
    fn a_document_round_trips_with_its_version_first() {
        let status = sample();
        let json = serde_json::to_string(&status).unwrap();
        assert!(
            json.starts_with(
                r#"{"version":4,"generation":7,"generation_id":"00112233445566778899aabbccddeeff","#
            ),
            "{json}"
        );
        assert!(json.contains(r#""source":"backend","pid":null,"backend":"fw-cfg""#));
        assert!(json.contains(r#""error":"EIO","detail":"disk full""#));
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, status);
        assert!(back.missing_fields().is_empty());
        assert!(!back.is_newer());
    }

    #[test]
    fn a_version_1_document_reads_as_version_1_and_names_what_it_lacks() {
        let status: Status = serde_json::from_str(VERSION_1).unwrap();
        assert_eq!(status.version, 1);
        assert_eq!(
            status.missing_fields(),
            [
                "version",
                "daemon.serving_pid",
                "daemon.restarts",
                "generation_id"
            ]
        );
        assert_eq!(status.generation_id, None);
        assert_eq!(status.generation, 2);
        assert_eq!(status.outdated_files.len(), 2);
        assert_eq!(status.last_bump.unwrap().source, BumpSource::Trigger);
        assert_eq!(status.daemon.backends[1].name, "uevent");
    }

    /// A newer daemon's document: a higher version, fields and a bump source this crate does
    /// not know, at the top and nested. They are ignored.
    #[test]
    fn a_newer_document_parses_and_says_so() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["version"] = 5.into();
        value["uptime_s"] = 12.into();
        value["last_bump"]["source"] = "hypervisor".into();
        value["last_bump"]["at"] = "now".into();
        value["daemon"]["backends"][0]["restores"] = 2.into();
        value["outdated_files"][0]["uid"] = 0.into();
        let status: Status = serde_json::from_value(value).unwrap();
        assert!(status.is_newer());
        assert!(status.missing_fields().is_empty());
        assert_eq!(status.last_bump.unwrap().source, BumpSource::Unknown);
        assert_eq!(status.daemon.backends[0].name, "vmgenid-bpf");
    }

    /// What a version-1 reader declares: every field of version 1 and no `version`.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Version1Reader {
        generation: u32,
        serving: bool,
        degraded: bool,
        open_files: u64,
        tracked: u64,
        outdated: u64,
        outdated_files: Vec<OutdatedFile>,
        pending_reads: u64,
        pending_waits: u64,
        last_bump: Option<LastBump>,
        failed_bumps: u64,
        last_failure: Option<LastFailure>,
        daemon: DaemonInfo,
    }

    #[test]
    fn a_version_1_reader_ignores_the_version_field() {
        let json = serde_json::to_string(&sample()).unwrap();
        let old: Version1Reader = serde_json::from_str(&json).unwrap();
        assert_eq!(old.generation, 7);
        assert_eq!(old.daemon.backends.len(), 1);
    }

    /// The field lists cannot drift from the struct: together they are its keys, and the
    /// `daemon.` fields added later are keys of `daemon`.
    #[test]
    fn the_field_lists_name_every_top_level_field() {
        let value = serde_json::to_value(sample()).unwrap();
        let mut keys: Vec<&str> = value.as_object().unwrap().keys().map(|k| &**k).collect();
        let mut listed: Vec<&str> = VERSION_1_FIELDS.to_vec();
        for (_, field) in ADDED_FIELDS {
            match field.strip_prefix("daemon.") {
                Some(nested) => assert!(value["daemon"].get(nested).is_some(), "{field}"),
                None => listed.push(field),
            }
        }
        keys.sort_unstable();
        listed.sort_unstable();
        assert_eq!(keys, listed);
        assert!(
            ADDED_FIELDS
                .iter()
                .all(|(since, _)| *since <= STATUS_VERSION)
        );
    }

    #[test]
    fn a_document_without_a_version_1_field_names_it() {
        let mut value: serde_json::Value = serde_json::from_str(VERSION_1).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("daemon");
        object.remove("outdated");
        assert!(serde_json::from_value::<Status>(value.clone()).is_err());
        let object = value.as_object().unwrap();
        let missing = Status::missing_required(|field| object.contains_key(field));
        assert_eq!(missing, ["outdated", "daemon"]);
    }

    #[test]
    fn backends_without_detail_parse() {
        let backend: Backend =
            serde_json::from_str(r#"{"name":"uevent","active":true,"reason":null}"#).unwrap();
        assert_eq!(backend.detail, None);
    }
}
