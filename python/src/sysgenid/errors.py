"""The exceptions: one class per thing that can go wrong, each message saying what to do.

Every exception is a :class:`SysgenidError`. Those that come from a system call keep its
``errno`` (``None`` otherwise). The classes group as Python's own ``OSError`` family does:
:class:`PermissionDenied`, :class:`InvalidArgument`, :class:`Interrupted` and
:class:`DaemonNotRunning` each have more precise subclasses.
"""

from __future__ import annotations

import errno as _errno
import os
from enum import Enum
from typing import Optional


class Op(str, Enum):
    """The operation that failed."""

    OPEN = "open"
    READ = "read"
    ACK = "ack"
    SET_TRACKING = "set_tracking"
    WAIT_WATCHERS = "wait_watchers"
    TRIGGER = "trigger"
    POLL = "poll"
    MAP = "mmap"
    STATUS = "status"


class SysgenidError(Exception):
    """Base class of every error of this package.

    ``errno`` is the system error behind it (``None`` when none is), ``path`` the file or
    socket concerned, ``op`` the operation.
    """

    errno: Optional[int] = None

    def __init__(
        self,
        message: str,
        *,
        path: Optional[str] = None,
        op: Optional[Op] = None,
        errno: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.op = op
        if errno is not None:
            self.errno = errno


class DaemonNotRunning(SysgenidError):
    """No daemon serves the device or the control socket right now."""


class DeviceMissing(DaemonNotRunning):
    """``ENOENT`` on open: the device file does not exist."""

    errno = _errno.ENOENT


class NotServed(DaemonNotRunning):
    """The path exists but no daemon serves it: the empty mountpoint a stopped daemon leaves."""


class DaemonGone(DaemonNotRunning):
    """``ENOTCONN``: the daemon that served this open file is gone; reopen the device."""

    errno = _errno.ENOTCONN


class ControlUnavailable(DaemonNotRunning):
    """The control socket cannot be reached (connect, write or read failed)."""


class PermissionDenied(SysgenidError):
    """The caller may not do this (``EACCES`` or ``EBADF``)."""

    errno = _errno.EACCES


class WriteAccessDenied(PermissionDenied):
    """``EACCES`` opening the device for writing, which acknowledging and tracking need."""


class AccessDenied(PermissionDenied, DaemonNotRunning):
    """``EACCES`` opening the device read-only: likely the mode-0000 mountpoint of a stopped
    daemon, since a served device is readable by everyone."""


class TriggerDenied(PermissionDenied):
    """``EACCES`` on a trigger: the caller lacks ``CAP_CHECKPOINT_RESTORE``/``CAP_SYS_ADMIN``."""


class ReadOnly(PermissionDenied):
    """``EBADF``: an acknowledgement or tracking on a watcher opened read-only."""

    errno = _errno.EBADF


class Untrusted(SysgenidError):
    """The page file, its directory, the daemon on the control socket or the mount serving the
    device belongs to a user other than root and this process's own, or others may write it."""


class InvalidArgument(SysgenidError):
    """``EINVAL``: the device does not accept this argument."""

    errno = _errno.EINVAL


class NotCurrent(InvalidArgument):
    """``EINVAL`` on an acknowledgement: the value is not the current generation."""

    def __init__(self, message: str, *, generation: int, path: Optional[str] = None) -> None:
        super().__init__(message, path=path, op=Op.ACK)
        self.generation = generation


class AckLength(InvalidArgument):
    """``ENOBUFS``: an acknowledgement whose length is not 4 bytes."""

    errno = _errno.ENOBUFS


class Timeout(SysgenidError):
    """``ETIME``: ``wait_watchers`` timed out while tracked watchers were still outdated.

    ``outdated`` is how many, from the status document, when it answered.
    """

    errno = _errno.ETIME

    def __init__(
        self, message: str, *, timeout: float, outdated: Optional[int], path: Optional[str] = None
    ) -> None:
        super().__init__(message, path=path, op=Op.WAIT_WATCHERS)
        self.timeout = timeout
        self.outdated = outdated


class Interrupted(SysgenidError):
    """``EINTR``: a call ended by a signal; call it again."""

    errno = _errno.EINTR


class WatcherOutdated(Interrupted):
    """``EINTR`` on ``wait_watchers`` because the calling watcher is itself outdated."""


class Overflow(SysgenidError):
    """``EOVERFLOW``: the generation is already ``2**32 - 1`` and can never change again."""

    errno = _errno.EOVERFLOW


class PersistFailed(SysgenidError):
    """``EIO`` on a trigger: the daemon could not persist the new generation; nothing changed."""

    errno = _errno.EIO


class MapUnsupported(SysgenidError):
    """``ENODEV`` mapping the device, and no page file to map instead."""

    errno = _errno.ENODEV


class ControlError(SysgenidError):
    """The control socket answered an ``{"error": ...}`` line; ``errno_name`` is its ``errno``
    field (such as ``"EACCES"``) when it has one."""

    def __init__(self, message: str, *, path: str, errno_name: Optional[str] = None) -> None:
        super().__init__(message, path=path, op=Op.STATUS)
        self.errno_name = errno_name


class BadAnswer(SysgenidError):
    """The control socket sent something that is not a status document or an answer."""


class StatusIncomplete(BadAnswer):
    """A status document without fields every sysgenidd writes; ``fields`` names them."""

    def __init__(self, message: str, *, path: str, fields: list[str]) -> None:
        super().__init__(message, path=path, op=Op.STATUS)
        self.fields = fields


class Unexpected(SysgenidError):
    """A file did not behave as the ABI says (a short read, a page file too short)."""


class OsFailure(SysgenidError):
    """Any other system error, with its ``errno``."""


def from_errno(
    op: Op,
    err: int,
    path: str,
    *,
    write: bool = False,
    generation: Optional[int] = None,
    timeout: float = 0.0,
) -> SysgenidError:
    """The exception for ``err`` returned by ``op`` on ``path``.

    ``write`` tells whether an open was for writing, ``generation`` the value an
    acknowledgement carried, ``timeout`` the timeout of a wait.
    """
    error = _device_error(op, err, path, write=write, generation=generation, timeout=timeout)
    if error is not None:
        return error
    if err == _errno.EINTR:
        return Interrupted(f"{op.value} interrupted by a signal (EINTR); call it again", op=op)
    if err == _errno.EINVAL:
        return InvalidArgument(
            f"{op.value} refused (EINVAL): the device does not accept this argument",
            path=path,
            op=op,
        )
    message = f"{op.value} on {path} failed: {os.strerror(err)}"
    return OsFailure(message, path=path, op=op, errno=err)


def _device_error(
    op: Op,
    err: int,
    path: str,
    *,
    write: bool,
    generation: Optional[int],
    timeout: float,
) -> Optional[SysgenidError]:
    """The precise exception for an errno the device ABI gives ``op``, if it is one."""
    if err == _errno.ENOTCONN:
        return DaemonGone(
            f"{path}: the daemon is gone (ENOTCONN): sysgenidd stopped or crashed; start it "
            "again, then reopen the device",
            path=path,
            op=op,
        )
    if op in (Op.OPEN, Op.MAP):
        return _open_error(op, err, path, write=write)
    if op == Op.TRIGGER:
        return trigger_error(err)
    if op in (Op.ACK, Op.SET_TRACKING) and err == _errno.EBADF:
        return ReadOnly(
            f"{op.value} refused (EBADF): this watcher was opened read-only; {op.value} needs a "
            "file open for writing (root or the `sysgenid` group)",
            path=path,
            op=op,
        )
    if op == Op.ACK and err == _errno.EINVAL:
        return NotCurrent(
            f"ack of generation {generation} refused (EINVAL): it is not the current "
            "generation; read the current one and ack that",
            generation=generation if generation is not None else -1,
            path=path,
        )
    if op == Op.ACK and err == _errno.ENOBUFS:
        return AckLength(
            "ack refused (ENOBUFS): an acknowledgement must be exactly 4 bytes", path=path, op=op
        )
    if op == Op.WAIT_WATCHERS and err == _errno.ETIME:
        return timeout_error(timeout, None, path)
    if op == Op.WAIT_WATCHERS and err == _errno.EINTR:
        return WatcherOutdated(
            "wait_watchers interrupted (EINTR): this watcher is itself outdated (the generation "
            "changed); read and ack the new generation first, then wait again",
            path=path,
            op=op,
        )
    return None


def _open_error(op: Op, err: int, path: str, *, write: bool) -> Optional[SysgenidError]:
    """The exception for opening or mapping the device or the page file."""
    if err in (_errno.ENOENT, _errno.ENOTDIR):
        return DeviceMissing(
            f"{path}: no such device file; is sysgenidd running? (start it, or set "
            "SYSGENID_DEVICE to the device it serves)",
            path=path,
            op=op,
        )
    if err == _errno.EACCES and write and op == Op.OPEN:
        return WriteAccessDenied(
            f"{path}: permission denied opening the device for writing (EACCES): acknowledging "
            "and tracking need root or membership in the `sysgenid` group (the daemon's "
            "--group); add the user to that group, or open read-only",
            path=path,
            op=op,
        )
    if err == _errno.EACCES:
        return AccessDenied(
            f"{path}: permission denied opening the device (EACCES): a served device is "
            "readable by everyone, so this is likely the mode-0000 mountpoint a stopped daemon "
            "leaves; is sysgenidd running?",
            path=path,
            op=op,
        )
    if err == _errno.ENODEV and op == Op.MAP:
        return MapUnsupported(
            f"{path}: the device cannot be mapped (ENODEV: sysgenidd runs with --device-mmap "
            "off, or the kernel is older than 6.6) and there is no page file; set "
            "SYSGENID_STATE_DIR to the daemon's state directory",
            path=path,
            op=op,
        )
    return None


def trigger_error(err: int) -> Optional[SysgenidError]:
    """The exception for a refused trigger (ioctl or control socket)."""
    if err == _errno.EACCES:
        return TriggerDenied(
            "trigger refused (EACCES): bumping the generation needs CAP_CHECKPOINT_RESTORE or "
            "CAP_SYS_ADMIN in the user namespace that owns the device; run it as root or grant "
            "one of these capabilities",
            op=Op.TRIGGER,
        )
    if err == _errno.EOVERFLOW:
        return Overflow(
            "trigger refused (EOVERFLOW): the generation is already 2**32 - 1 and can never "
            "change again; nothing changed",
            op=Op.TRIGGER,
        )
    if err == _errno.EIO:
        return PersistFailed(
            "trigger failed (EIO): the daemon could not persist the new generation, so nothing "
            "changed and it reports itself degraded; check the disk of its state directory, see "
            "status()['last_failure'], then retry",
            op=Op.TRIGGER,
        )
    return None


def timeout_error(timeout: float, outdated: Optional[int], path: str) -> Timeout:
    """The exception for a ``wait_watchers`` that timed out with ``outdated`` watchers left."""
    count = "some" if outdated is None else str(outdated)
    return Timeout(
        f"wait_watchers timed out (ETIME) after {timeout:g} s with {count} tracked watcher(s) "
        "still outdated; status() names the lagging processes",
        timeout=timeout,
        outdated=outdated,
        path=path,
    )


def untrusted(path: str, problem: str) -> Untrusted:
    """The exception for a file or daemon this process does not trust, and why."""
    return Untrusted(
        f"{path}: refusing to trust it: {problem}; whoever controls it could forge the "
        "generation or the daemon's answers. Check that SYSGENID_STATE_DIR and SYSGENID_DEVICE "
        "name the paths of a sysgenidd run by root or by this user",
        path=path,
    )
