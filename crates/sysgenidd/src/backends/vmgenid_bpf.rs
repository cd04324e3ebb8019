//! The `vmgenid-bpf` backend: restores seen by a BPF probe on the kernel's `add_vmfork_randomness()`.
//!
//! The probe ([`sysgenid_bpf::VmforkWatch`]) counts hits in a map pinned in bpffs and queues one
//! ring-buffer record per hit. The daemon keeps the count it has handled in the same map
//! (`acked`), so a daemon that starts after a restore sees `counter > acked` and bumps once.
//! The ring buffer only wakes the thread; the count is the truth, so a lost record loses nothing.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use sysgenid_bpf::{Acker, AttachMode, Attached, Options as ProbeOptions, VmforkWatch};

use crate::config::BpfAttach;

use super::{BackendError, BackendKind, Options};
use crate::inbox::{Completion, Inbox, Message};
/// Where the probe is pinned by default.
pub const DEFAULT_PIN_DIR: &str = sysgenid_bpf::DEFAULT_PIN_DIR;

/// Which probe hits are new: the pure bookkeeping between the pinned counter and the ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hits {
    acked: u64,
}

impl Hits {
    /// The state at start, and the count to report if restores happened while no daemon ran.
    pub fn at_start(counter: u64, acked: u64) -> (Hits, Option<u64>) {
        if counter > acked {
            (Hits { acked: counter }, Some(counter))
        } else {
            // A counter below the ack means the maps were recreated: nothing to report.
            (Hits { acked: counter }, None)
        }
    }

    /// The count to report (and ack) when the counter reads `counter`, if it moved.
    pub fn offer(&mut self, counter: u64) -> Option<u64> {
        if counter > self.acked {
            self.acked = counter;
            Some(counter)
        } else {
            None
        }
    }
}

/// Attaches (or reopens the pins), reports restores made while down, and starts the thread.
/// Returns how it runs, for the status document.
pub fn start(inbox: &Inbox, options: &Options) -> Result<String, BackendError> {
    let mode = match options.bpf_attach {
        BpfAttach::Auto => AttachMode::Auto,
        BpfAttach::Kprobe => AttachMode::Kprobe,
        BpfAttach::Fentry => AttachMode::Fentry,
    };
    let (mut watch, pinned) = open(options.bpf_pin_dir.as_deref(), mode)?;
    // Drain first, then read the count: a hit after the drain wakes the thread below, and a hit
    // before the read is in the count.
    let queued = watch.read_events();
    if !queued.is_empty() {
        tracing::debug!(records = queued.len(), "drained records queued while down");
    }
    let counter = watch.counter().map_err(BackendError::ProbeCounter)?;
    let acked = watch.acked().map_err(BackendError::ProbeAck)?;
    let acker = Arc::new(watch.acker().map_err(BackendError::ProbeShare)?);
    let attached = watch.attached();
    tracing::info!(counter, acked, ?attached, pinned = ?pinned, "vmgenid-bpf probe ready");
    let (hits, missed) = Hits::at_start(counter, acked);
    inbox.send(Message::KeyAtStart {
        backend: BackendKind::VmgenidBpf,
        key: u128::from(acked),
    });
    if let Some(n) = missed {
        tracing::info!(
            counter = n,
            acked,
            "add_vmfork_randomness ran while the daemon was down"
        );
        report(inbox, &acker, n);
    }
    let mut how = describe(attached, pinned.as_deref());
    if !vmgenid_bound() {
        how.push_str("; no device is bound to the vmgenid driver, so it cannot fire");
    }
    let inbox = inbox.clone();
    super::spawn(BackendKind::VmgenidBpf, move || {
        follow(watch, hits, &acker, &inbox)
    })?;
    Ok(how)
}

/// Waits for probe records and reports each new count, forever.
fn follow(mut watch: VmforkWatch, mut hits: Hits, acker: &Arc<Acker>, inbox: &Inbox) {
    loop {
        if let Err(e) = wait_readable(&watch) {
            tracing::warn!(error = %e, "vmgenid-bpf: poll failed; reading the counter anyway");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        for event in watch.read_events() {
            tracing::debug!(count = event.count, boot_ns = event.boot_ns, "probe record");
        }
        match watch.counter() {
            Ok(counter) => {
                if let Some(n) = hits.offer(counter) {
                    report(inbox, acker, n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "vmgenid-bpf: cannot read the counter"),
        }
    }
}

fn open(
    pin_dir: Option<&Path>,
    mode: AttachMode,
) -> Result<(VmforkWatch, Option<PathBuf>), sysgenid_bpf::Unavailable> {
    let options = |dir: Option<&Path>| ProbeOptions {
        mode,
        ..ProbeOptions::new(dir)
    };
    let Some(dir) = pin_dir else {
        return VmforkWatch::open_with(&options(None)).map(|w| (w, None));
    };
    match VmforkWatch::open_with(&options(Some(dir))) {
        Ok(w) => Ok((w, Some(dir.to_path_buf()))),
        Err(e @ sysgenid_bpf::Unavailable::NoBpffs(..)) => {
            tracing::warn!(
                error = %e,
                "vmgenid-bpf: cannot pin the probe; running unpinned, so restores while the \
                 daemon is down go unseen"
            );
            VmforkWatch::open_with(&options(None)).map(|w| (w, None))
        }
        Err(e) => Err(e),
    }
}

fn describe(attached: Attached, pinned: Option<&Path>) -> String {
    let how = match attached {
        Attached::Kprobe => "kprobe",
        Attached::Fentry => "fentry",
        Attached::Pinned => "probe reused from pins",
    };
    match pinned {
        Some(dir) => format!(
            "{how} on {}, pinned at {}",
            sysgenid_bpf::SYMBOL,
            dir.display()
        ),
        None => format!(
            "{how} on {}, not pinned: restores while the daemon is down go unseen",
            sysgenid_bpf::SYMBOL
        ),
    }
}

/// Reports hit count `n`; the ack is recorded once the restore is handled.
fn report(inbox: &Inbox, acker: &Arc<Acker>, n: u64) {
    let acker = Arc::clone(acker);
    let completion = Completion::then(move || {
        if let Err(e) = acker.ack(n) {
            tracing::warn!(error = %e, count = n, "vmgenid-bpf: cannot record the ack");
        }
    });
    inbox.send(Message::Report {
        backend: BackendKind::VmgenidBpf,
        key: Some(n.into()),
        completion,
    });
}

/// Whether the kernel's vmgenid driver has a device (ACPI or devicetree): without one,
/// `add_vmfork_randomness` is never called.
pub fn vmgenid_bound() -> bool {
    const NOT_DEVICES: [&str; 6] = ["bind", "unbind", "uevent", "module", "new_id", "remove_id"];
    [
        "/sys/bus/platform/drivers/vmgenid",
        "/sys/bus/acpi/drivers/vmgenid",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(d).ok())
    .flatten()
    .filter_map(Result::ok)
    .any(|e| !NOT_DEVICES.contains(&e.file_name().to_string_lossy().as_ref()))
}

fn wait_readable(watch: &VmforkWatch) -> std::io::Result<()> {
    use rustix::event::{PollFd, PollFlags, poll};
    let fd = watch.fd();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, None) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_maps_report_nothing() {
        assert_eq!(Hits::at_start(0, 0).1, None);
    }

    #[test]
    fn hits_while_down_report_once_with_the_count() {
        let (mut hits, missed) = Hits::at_start(3, 1);
        assert_eq!(missed, Some(3));
        assert_eq!(hits.offer(3), None, "the count already reported");
        assert_eq!(hits.offer(4), Some(4));
    }

    #[test]
    fn recreated_maps_below_the_ack_start_from_the_counter() {
        let (mut hits, missed) = Hits::at_start(0, 5);
        assert_eq!(missed, None);
        assert_eq!(hits.offer(1), Some(1));
    }

    #[test]
    fn each_new_count_reports_once() {
        let (mut hits, _) = Hits::at_start(2, 2);
        assert_eq!(hits.offer(2), None);
        assert_eq!(hits.offer(3), Some(3));
        assert_eq!(hits.offer(3), None);
        assert_eq!(
            hits.offer(5),
            Some(5),
            "two hits read at once are one report"
        );
    }
}
