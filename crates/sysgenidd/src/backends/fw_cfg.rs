//! The `fw-cfg` backend: polls the VM Generation ID GUID that QEMU also publishes over fw_cfg.
//!
//! QEMU's vmgenid device puts its GUID in the fw_cfg file `etc/vmgenid_guid` (at byte 40 of a
//! 4096-byte blob), and each QEMU process builds that blob with its own GUID, so a restored
//! clone shows a new one. The `qemu_fw_cfg` kernel module exposes the blob in sysfs. This
//! backend reads it every [`DEFAULT_INTERVAL`]: a fallback for kernels without vmgenid or BPF,
//! slower than an event. The GUID is recorded in the state directory, so a daemon started after
//! a restore sees that the GUID changed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use super::{BackendError, BackendKind, Options, record};
use crate::inbox::Inbox;

/// The GUID blob in sysfs.
pub const DEFAULT_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/etc/vmgenid_guid/raw";
/// Where the GUID sits in the blob.
pub const GUID_OFFSET: u64 = 40;
/// How often to read it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// The GUID in the blob, as one number (byte order as stored).
pub fn read_guid(file: &File) -> io::Result<u128> {
    let mut guid = [0u8; 16];
    let mut filled = 0;
    while filled < guid.len() {
        match file.read_at(&mut guid[filled..], GUID_OFFSET + filled as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the blob ends before its GUID (byte {GUID_OFFSET} + 16): not a vmgenid blob"
                    ),
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(u128::from_le_bytes(guid))
}

/// Opens the blob and reads the GUID; an error is the reason the backend cannot run.
pub fn open(path: &Path) -> Result<(File, u128), BackendError> {
    let unreadable = |source| BackendError::FwCfg {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|e| {
        if e.kind() != io::ErrorKind::NotFound {
            unreadable(e)
        } else if Path::new("/sys/firmware/qemu_fw_cfg").exists() {
            BackendError::NoFwCfgGuid(path.to_owned())
        } else {
            BackendError::NoFwCfg(path.to_owned())
        }
    })?;
    let guid = read_guid(&file).map_err(unreadable)?;
    Ok((file, guid))
}

/// Reads the GUID, compares it with the record, and starts the thread that polls it.
pub fn start(inbox: &Inbox, options: &Options) -> Result<(), BackendError> {
    let (file, guid) = open(&options.fw_cfg_path)?;
    tracing::info!(
        guid = format_args!("{guid:032x}"),
        "fw_cfg vmgenid GUID at start"
    );
    let recorder = record::resume(
        inbox,
        BackendKind::FwCfg,
        options.state_dir.as_deref(),
        guid,
    );
    let inbox = inbox.clone();
    let interval = options.fw_cfg_interval;
    super::spawn(BackendKind::FwCfg, move || {
        let mut last = guid;
        let mut failing = false;
        loop {
            std::thread::sleep(interval);
            match read_guid(&file) {
                Ok(now) => {
                    failing = false;
                    if now != last {
                        last = now;
                        recorder.report(&inbox, now);
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "fw_cfg GUID read failed; trying again");
                    }
                    failing = true;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(guid: u128, len: usize) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut data = vec![0xAAu8; len];
        let at = GUID_OFFSET as usize;
        if len >= at + 16 {
            data[at..at + 16].copy_from_slice(&guid.to_le_bytes());
        }
        std::fs::write(file.path(), data).unwrap();
        file
    }

    #[test]
    fn reads_the_guid_at_its_offset() {
        let guid = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        let file = blob(guid, 4096);
        assert_eq!(open(file.path()).unwrap().1, guid);
    }

    #[test]
    fn a_short_blob_is_refused_with_the_reason() {
        let file = blob(1, 50);
        let err = open(file.path()).unwrap_err().to_string();
        assert!(err.contains("not a vmgenid blob"), "{err}");
    }

    #[test]
    fn a_missing_blob_says_what_is_needed() {
        let err = open(Path::new("/nonexistent/raw")).unwrap_err().to_string();
        assert!(err.contains("vmgenid"), "{err}");
    }
}
