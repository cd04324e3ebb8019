//! Notices a lost mount. After `umount -l` of the device, the FUSE connection lives on while any
//! file stays open, so the daemon would keep "serving" a path that no longer shows the device.
//! A thread waits for changes of the mount table (`/proc/self/mountinfo` is pollable) and tells
//! the loop as soon as the device path no longer carries this daemon's mount.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::inbox::{Inbox, Message};

/// Checked at least this often even if no change is signalled.
const RECHECK: Duration = Duration::from_secs(1);

/// The `major:minor` of the mount on `mount_point` in a mountinfo text, the last one if several
/// are stacked (the one that shows).
pub fn mounted_device(mountinfo: &str, mount_point: &Path) -> Option<String> {
    let wanted = mount_point.to_string_lossy();
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let point = unescape(fields.get(4)?);
        (point == wanted).then(|| fields.get(2).map(|d| (*d).to_owned()))?
    })
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `device` with its directory's symbolic links resolved, as the mount table names it.
fn canonical(device: &Path) -> std::io::Result<PathBuf> {
    Ok(
        std::fs::canonicalize(device.parent().unwrap_or(Path::new("/")))?
            .join(device.file_name().unwrap_or_default()),
    )
}

/// Whether anything is mounted on `device` now.
pub fn is_mounted(device: &Path) -> std::io::Result<bool> {
    let device = canonical(device)?;
    let mut table = std::fs::File::open("/proc/self/mountinfo")?;
    Ok(mounted_device(&read_all(&mut table)?, &device).is_some())
}

/// Starts watching `device`, now mounted, and sends `Message::MountLost` once it is not.
pub fn spawn(device: &Path, inbox: Inbox) -> std::io::Result<()> {
    let device = canonical(device)?;
    let mut table = std::fs::File::open("/proc/self/mountinfo")?;
    let ours = mounted_device(&read_all(&mut table)?, &device).ok_or_else(|| {
        std::io::Error::other(format!("{} is not in the mount table", device.display()))
    })?;
    std::thread::Builder::new()
        .name("mount-watch".to_owned())
        .spawn(move || watch(table, device, ours, inbox))
        .map(drop)
}

fn watch(mut table: std::fs::File, device: PathBuf, ours: String, inbox: Inbox) {
    let timeout = Timespec {
        tv_sec: RECHECK.as_secs() as i64,
        tv_nsec: 0,
    };
    loop {
        let mut fds = [PollFd::new(&table, PollFlags::PRI | PollFlags::ERR)];
        let _ = rustix::event::poll(&mut fds, Some(&timeout));
        let Ok(text) = read_all(&mut table) else {
            continue;
        };
        if mounted_device(&text, &device).as_deref() != Some(ours.as_str()) {
            // The loop logs it, unless it is the daemon's own unmount at a clean stop.
            inbox.send(Message::MountLost);
            return;
        }
    }
}

fn read_all(table: &mut std::fs::File) -> std::io::Result<String> {
    table.rewind()?;
    let mut text = String::new();
    table.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
40 22 0:40 / /run/a\\040b/dev rw - fuse.sysgenid sysgenid rw,user_id=0
41 22 0:41 / /dev/sysgenid rw - fuse.sysgenid sysgenid rw,user_id=0
42 41 0:42 / /dev/sysgenid rw - tmpfs none rw
";

    #[test]
    fn the_mount_that_shows_on_a_path_is_found_escapes_and_all() {
        assert_eq!(
            mounted_device(TABLE, Path::new("/dev/sysgenid")).as_deref(),
            Some("0:42"),
            "the top of a stack"
        );
        assert_eq!(
            mounted_device(TABLE, Path::new("/run/a b/dev")).as_deref(),
            Some("0:40")
        );
        assert_eq!(mounted_device(TABLE, Path::new("/nowhere")), None);
    }
}
