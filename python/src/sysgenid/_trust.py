"""Whom the client trusts: root and its own user (effective uid).

The page file and its directory, the daemon listening on the control socket and the FUSE mount
serving the device must belong to one of them, and the page file must be one regular page that
no one else may write; otherwise whoever controls it could make the client read a forged
generation or a forged answer. The same rules as the Rust client's ``trust.rs``.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
from typing import Optional

from . import _abi
from .errors import untrusted


def _ours() -> int:
    return os.geteuid()


def _trusted(uid: int) -> bool:
    return uid == 0 or uid == _ours()


def owner_problem(st: os.stat_result) -> Optional[str]:
    """Why a file or directory is not trusted: another owner, or writable by group or others."""
    if not _trusted(st.st_uid):
        return (
            f"it belongs to uid {st.st_uid}, and this process trusts only root and its own "
            f"user (uid {_ours()})"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return f"the group or others may write it (mode {mode:04o})"
    return None


def page_problem(st: os.stat_result) -> Optional[str]:
    """Why a page file is not trusted: not regular, not owned as it should be, not one page."""
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file (a link, a pipe or a device)"
    problem = owner_problem(st)
    if problem is not None:
        return problem
    if st.st_size != _abi.PAGE_SIZE:
        return f"it holds {st.st_size} bytes, not exactly one page of {_abi.PAGE_SIZE}"
    return None


def check_listener(sock: socket.socket, path: str) -> None:
    """Raises :class:`~sysgenid.errors.Untrusted` unless the process listening at the other end
    of ``sock`` runs as root or as this user (``SO_PEERCRED``)."""
    cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", cred)
    if not _trusted(uid):
        raise untrusted(
            path,
            f"the process listening on it runs as uid {uid}, and this process trusts only a "
            f"daemon of root or of its own user (uid {_ours()})",
        )


def fuse_mount(st_dev: int, mountinfo: str) -> Optional[tuple[str, Optional[int]]]:
    """The file system type and the ``user_id`` option of the mount of device ``st_dev`` in
    mountinfo text, or ``None`` if no mount has that device."""
    dev = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    for line in mountinfo.splitlines():
        mount, sep, fs = line.partition(" - ")
        fields = mount.split(" ")
        if not sep or len(fields) < 3 or fields[2] != dev:
            continue
        fs_fields = fs.split(" ")
        options = fs_fields[2].split(",") if len(fs_fields) > 2 else []
        uid = next((o[len("user_id="):] for o in options if o.startswith("user_id=")), None)
        return fs_fields[0], int(uid) if uid is not None and uid.isdigit() else None
    return None


def served_problem(st: os.stat_result) -> Optional[str]:
    """Why an open device file is not served by a trusted daemon: ``"unserved"`` when it is not
    a character device nor a FUSE file holding a generation, or the untrusted mounter."""
    if stat.S_ISCHR(st.st_mode):
        return None
    if st.st_size < _abi.GENERATION_SIZE:
        return "unserved"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            mountinfo = f.read()
    except OSError:
        return None
    mount = fuse_mount(st.st_dev, mountinfo)
    if mount is None or not mount[0].startswith("fuse"):
        return "unserved"
    uid = mount[1]
    if uid is not None and not _trusted(uid):
        return (
            f"the FUSE file system serving it was mounted by uid {uid}, and this process trusts "
            f"only root's or its own user's (uid {_ours()})"
        )
    return None
