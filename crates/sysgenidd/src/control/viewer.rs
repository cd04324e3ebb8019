//! What a status reader may see of the processes the document lists: the full command line only
//! if it is root or owns the process, else the command name, or nothing where `/proc` hides
//! other users' processes (`hidepid`). The daemon reads `/proc` as root, so without this the
//! document would undo `hidepid` for everyone.

use std::cell::OnceCell;
use std::fs;
use std::os::unix::fs::MetadataExt;

/// The reader of one status document, by its uid (`SO_PEERCRED`).
#[derive(Debug)]
pub struct Viewer {
    uid: u32,
    /// Whether `/proc` hides other users' processes, read once per document when needed.
    hidepid: OnceCell<bool>,
}

impl Viewer {
    /// The peer with user id `uid`, in the daemon's user namespace.
    pub fn new(uid: u32) -> Viewer {
        Viewer {
            uid,
            hidepid: OnceCell::new(),
        }
    }

    /// What this viewer is shown of process `pid`: its command line (arguments joined by
    /// spaces, or `[name]` when it has none) if the viewer is root or owns it (`/proc/PID`'s
    /// owner, which is root for a process that gained privileges by an exec); else `[name]`,
    /// or `None` where `/proc` hides it. `None` too once it is gone.
    pub fn command(&self, pid: u32) -> Option<String> {
        let owner = fs::metadata(format!("/proc/{pid}")).ok()?.uid();
        if self.uid == 0 || self.uid == owner {
            return command_line(pid);
        }
        if *self.hidepid.get_or_init(proc_hides_pids) {
            return None;
        }
        command_name(pid)
    }
}

/// A process's command line with arguments joined by spaces, or its name, or `None` if gone.
pub fn command_line(pid: u32) -> Option<String> {
    if let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline"))
        && !raw.is_empty()
    {
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        return Some(args.join(" "));
    }
    command_name(pid)
}

/// A process's name in brackets, `[name]`, or `None` if gone.
fn command_name(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(format!("[{}]", comm.trim_end()))
}

/// Whether the daemon's `/proc` is mounted with `hidepid` other than `0`/`off`; unreadable
/// mount information counts as hiding.
fn proc_hides_pids() -> bool {
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(mountinfo) => hidepid_in(&mountinfo),
        Err(_) => true,
    }
}

/// Whether the topmost `proc` mount on `/proc` in mountinfo text hides pids.
fn hidepid_in(mountinfo: &str) -> bool {
    let mut proc_options = mountinfo.lines().filter_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        let point = mount.split(' ').nth(4)?;
        let mut fs = fs.split(' ');
        let (fstype, _source, options) = (fs.next()?, fs.next()?, fs.next()?);
        (point == "/proc" && fstype == "proc").then_some(options)
    });
    proc_options.next_back().is_some_and(|options| {
        options
            .split(',')
            .filter_map(|o| o.strip_prefix("hidepid="))
            .any(|value| value != "0" && value != "off")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_owner_see_the_command_line_others_the_name() {
        let me = std::process::id();
        let owner = fs::metadata(format!("/proc/{me}")).unwrap().uid();
        let full = Viewer::new(owner).command(me).unwrap();
        assert_eq!(Some(full.clone()), command_line(me));
        assert!(!full.starts_with('['), "{full}");
        assert_eq!(Viewer::new(0).command(me), Some(full));
        let stranger = Viewer::new(owner.wrapping_add(12345));
        if !proc_hides_pids() {
            assert_eq!(stranger.command(me), command_name(me));
        }
        assert_eq!(Viewer::new(0).command(i32::MAX as u32), None, "gone");
    }

    #[test]
    fn hidepid_is_read_from_the_proc_mount() {
        let line =
            |options: &str| format!("22 27 0:21 / /proc rw,relatime - proc proc {options}\n");
        assert!(!hidepid_in(&line("rw")));
        assert!(!hidepid_in(&line("rw,hidepid=0")));
        assert!(!hidepid_in(&line("rw,hidepid=off")));
        assert!(hidepid_in(&line("rw,hidepid=invisible")));
        assert!(hidepid_in(&line("rw,hidepid=2,gid=10")));
        let remounted = line("rw") + &line("rw,hidepid=noaccess");
        assert!(hidepid_in(&remounted), "the topmost mount counts");
        let elsewhere = "30 27 0:40 / /mnt/proc rw - proc proc rw,hidepid=2\n";
        assert!(!hidepid_in(elsewhere));
    }
}
