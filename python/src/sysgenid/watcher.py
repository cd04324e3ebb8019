"""``Watcher``: one open file of the device; the overseer's ``wait_watchers`` and ``trigger``."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import math
import os
import select
import struct
import time
from typing import Callable, Iterator, Optional, TypeVar

from . import _abi
from .errors import (
    DaemonGone,
    DaemonNotRunning,
    Op,
    Timeout,
    Unexpected,
    WatcherOutdated,
    WriteAccessDenied,
    from_errno,
    timeout_error,
)
from .paths import Paths, resolve
from .probe import current_generation, open_device

log = logging.getLogger("sysgenid")
T = TypeVar("T")

DEFAULT_REOPEN_TIMEOUT = 30.0
"""Seconds a watcher keeps trying to reopen the device after its daemon is gone, by default."""
_FIRST_REOPEN_DELAY = 0.01
_MAX_REOPEN_DELAY = 0.5

_READABLE = select.POLLIN | select.POLLRDNORM

_libc = ctypes.CDLL(None, use_errno=True)
# ctypes, not fcntl.ioctl: the argument is an unsigned long (a trigger minimum may exceed
# 2**31), and an EINTR must come back to us, since WAIT_WATCHERS uses it to say "outdated".
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
_libc.ioctl.restype = ctypes.c_int


def _ioctl(fd: int, request: int, arg: int, op: Op, path: str, timeout: float = 0.0) -> None:
    """One of the device's ``_IO`` ioctls with an integer argument; raises the mapped error."""
    if _libc.ioctl(fd, request, arg) == -1:
        raise from_errno(op, ctypes.get_errno(), path, timeout=timeout)


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else time.monotonic() + max(0.0, timeout)


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Watcher:
    """One open file of the device: wait for changes, acknowledge them, be tracked.

    ``writable=None`` (the default) opens the device read-write where this user may (root or
    the ``sysgenid`` group), else read-only; ``True`` insists on writing, ``False`` opens
    read-only. Acknowledging and tracking need a writable watcher; a read-only one stays
    outdated once the generation changes. ``tracking=True`` turns tracking on at open, so an
    overseer's :func:`wait_watchers` waits until this watcher acknowledges each change.

    The file is opened ``O_NONBLOCK | O_CLOEXEC``. :meth:`fileno` is readable while a change is
    unacknowledged, for ``select``/``selectors``; :meth:`try_read` never blocks; :meth:`wait`
    blocks (in ``poll``) with an optional timeout; :meth:`wait_async` awaits in asyncio.

    When the daemon that served the file is gone (``ENOTCONN``, after a restart), the watcher
    reopens the device, retrying for up to ``reopen_timeout`` seconds (``None``: never, so
    calls raise ``DaemonGone``), puts the new file on the same descriptor number, turns
    tracking back on, and logs it; :attr:`reopen_count` goes up. A reopened file has
    acknowledged the current generation, so the watcher compares the last generation it saw
    with the page file, and reports a bump made while it was disconnected as a change. If you
    registered :meth:`fileno` with an epoll-based loop yourself, register it again after a
    reopen (``wait_async`` does so by itself).

    >>> with Watcher(tracking=True) as w:                       # doctest: +SKIP
    ...     while True:
    ...         generation = w.wait()
    ...         renew_random_seeds()
    ...         w.ack(generation)
    """

    def __init__(
        self,
        paths: Optional[Paths] = None,
        *,
        writable: Optional[bool] = None,
        tracking: bool = False,
        reopen_timeout: Optional[float] = DEFAULT_REOPEN_TIMEOUT,
    ) -> None:
        self.paths = resolve(paths)
        if tracking and writable is False:
            raise ValueError("a tracked watcher must be writable: it acknowledges changes")
        self._fd = -1
        self._writable = writable is not False
        self._tracking = False
        self._reopen_timeout = reopen_timeout
        self._reopens = 0
        # The last generation seen (at open, in a change, in an ack); a change found at reopen.
        self._last_seen = current_generation(self.paths)
        self._pending: Optional[int] = None
        try:
            self._fd = open_device(self.paths.device, write=self._writable)
        except WriteAccessDenied:
            if writable or tracking:
                raise
            self._writable = False
            self._fd = open_device(self.paths.device, write=False)
        if tracking:
            try:
                self.set_tracking(True)
            except BaseException:
                self.close()
                raise

    @property
    def writable(self) -> bool:
        """Whether the device is open for writing (so this watcher can ack and be tracked)."""
        return self._writable

    @property
    def tracking(self) -> bool:
        """Whether tracking is on."""
        return self._tracking

    @property
    def reopen_count(self) -> int:
        """How many times this watcher has reopened the device after a daemon restart."""
        return self._reopens

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._fd < 0

    def fileno(self) -> int:
        """The file descriptor: readable (``POLLIN``) while a change is unacknowledged."""
        if self._fd < 0:
            raise ValueError("the watcher is closed")
        return self._fd

    def try_read(self) -> Optional[int]:
        """The new generation if this file is outdated, ``None`` if it is up to date. Never
        blocks, except to reopen after a daemon restart. While a change is unacknowledged, every
        call returns the current generation."""
        return self._with_reopen(self._read_once)

    def _read_once(self) -> Optional[int]:
        if self._pending is not None:
            generation, self._pending = self._pending, None
            self._last_seen = generation
            return generation
        try:
            data = os.read(self.fileno(), _abi.GENERATION_SIZE)
        except BlockingIOError:
            return None
        except OSError as e:
            raise from_errno(Op.READ, e.errno or errno.EIO, self.paths.device) from None
        if len(data) != _abi.GENERATION_SIZE:
            raise Unexpected(
                f"{self.paths.device}: read returned {len(data)} bytes instead of a 4-byte "
                "generation",
                path=self.paths.device,
                op=Op.READ,
            )
        self._last_seen = int(struct.unpack("=I", data)[0])
        return self._last_seen

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Blocks until the generation differs from the one this file acknowledged, and returns
        it; ``None`` if ``timeout`` seconds pass first. Signals do not end the wait."""
        deadline = _deadline(timeout)
        while True:
            generation = self.try_read()
            if generation is not None:
                return generation
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                return None
            self._poll(remaining)

    async def wait_async(self) -> int:
        """Awaits a change in the running asyncio loop (``loop.add_reader``), and returns the
        new generation. A reopen after a daemon restart does not block the loop."""
        while True:
            generation = await self._read_async()
            if generation is not None:
                return generation
            await self.readable_async()

    async def _read_async(self) -> Optional[int]:
        """:meth:`try_read`, reopening without blocking the running asyncio loop."""
        while True:
            try:
                return self._read_once()
            except DaemonGone:
                if self._reopen_timeout is None or self._fd < 0:
                    raise
                log.warning("sysgenid: lost the daemon serving %s (ENOTCONN)", self.paths.device)
                await self._reopen_async()

    async def readable_async(self) -> None:
        """Awaits, in the running asyncio loop, until the file is readable: outdated, or in
        error (a gone daemon), which the next :meth:`try_read` reports."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        fd = self.fileno()
        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    def ack(self, generation: int) -> None:
        """Acknowledges ``generation``, which must be the current one (``NotCurrent``
        otherwise). Needs a writable watcher (``ReadOnly`` otherwise)."""
        if not 0 <= generation <= _abi.U32_MAX:
            raise ValueError(f"a generation is a u32, not {generation}")
        self._with_reopen(lambda: self._ack_once(generation))

    def _ack_once(self, generation: int) -> None:
        try:
            written = os.write(self.fileno(), struct.pack("=I", generation))
        except OSError as e:
            raise from_errno(
                Op.ACK, e.errno or errno.EIO, self.paths.device, generation=generation
            ) from None
        if written != _abi.GENERATION_SIZE:
            raise Unexpected(
                f"{self.paths.device}: write took {written} bytes of a 4-byte acknowledgement",
                path=self.paths.device,
                op=Op.ACK,
            )
        # Accepted, so `generation` is current and covers any change found at reopen.
        self._pending = None
        self._last_seen = generation

    def set_tracking(self, on: bool) -> None:
        """Turns tracking on or off. A tracked watcher counts as outdated for
        :func:`wait_watchers` until it acknowledges a change. Turning it on needs a writable
        watcher (``ReadOnly`` otherwise)."""
        device = self.paths.device
        self._with_reopen(
            lambda: _ioctl(self._fd, _abi.SET_WATCHER_TRACKING, int(on), Op.SET_TRACKING, device)
        )
        self._tracking = on

    def wait_watchers(self, timeout: Optional[float] = None) -> None:
        """Waits until no tracked watcher is outdated, for at most ``timeout`` seconds (``None``
        waits for ever). Raises ``WatcherOutdated`` if this watcher is itself outdated, or
        becomes so, and ``Timeout`` (with the count of outdated watchers) when time is up."""
        deadline = _deadline(timeout)
        while True:
            remaining = _remaining(deadline)
            ms = 0 if remaining is None else max(1, math.ceil(remaining * 1000))
            try:
                _ioctl(self.fileno(), _abi.WAIT_WATCHERS, ms, Op.WAIT_WATCHERS, self.paths.device)
                return
            except WatcherOutdated:
                if self._pending is not None or self._poll(0):
                    raise
                # A signal, not a change: wait again.
            except DaemonGone:
                if self._reopen_timeout is None:
                    raise
                self._reopen()
                if self._pending is not None:
                    raise from_errno(Op.WAIT_WATCHERS, errno.EINTR, self.paths.device) from None
            except Timeout:
                outdated = _outdated(self.paths)
                raise timeout_error(timeout or 0.0, outdated, self.paths.device) from None

    def trigger(self, min_gen: int = 0) -> None:
        """Bumps the generation to ``max(min_gen, current + 1)`` and returns once the new value
        is durable and published. Needs ``CAP_CHECKPOINT_RESTORE`` or ``CAP_SYS_ADMIN``."""
        if min_gen < 0:
            raise ValueError(f"the minimum generation cannot be negative: {min_gen}")
        device = self.paths.device
        self._with_reopen(
            lambda: _ioctl(self._fd, _abi.TRIGGER_GEN_UPDATE, min_gen, Op.TRIGGER, device)
        )

    def close(self) -> None:
        """Closes the file; a tracked, outdated watcher stops counting."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            os.close(fd)
        except OSError:
            pass  # ENOTCONN from a gone daemon's flush; Linux releases the descriptor anyway.

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def __repr__(self) -> str:
        return (
            f"Watcher(device={self.paths.device!r}, writable={self._writable}, "
            f"tracking={self._tracking}, closed={self.closed})"
        )

    def _with_reopen(self, op: Callable[[], T]) -> T:
        """Runs ``op``, reopening and running it again each time it meets a gone daemon."""
        while True:
            try:
                return op()
            except DaemonGone:
                if self._reopen_timeout is None or self._fd < 0:
                    raise
                log.warning("sysgenid: lost the daemon serving %s (ENOTCONN)", self.paths.device)
                self._reopen()

    def _reopen(self) -> None:
        """Reopens the device, retrying with a backoff (10 ms doubling to 500 ms) until the
        reopen timeout passes."""
        for delay in self._reopen_attempts():
            time.sleep(delay)

    async def _reopen_async(self) -> None:
        """:meth:`_reopen` without blocking the running asyncio loop."""
        for delay in self._reopen_attempts():
            await asyncio.sleep(delay)

    def _reopen_attempts(self) -> Iterator[float]:
        """Tries to reopen, yielding the pause to take after each attempt that found no daemon
        serving; raises the last error once the reopen timeout has passed."""
        backoff = _Backoff(self._reopen_timeout or 0.0)
        while True:
            try:
                self._reopen_once()
                return
            except (DaemonNotRunning, WriteAccessDenied):
                delay = backoff.next_delay()
                if delay is None:
                    raise
            yield delay

    def _reopen_once(self) -> None:
        """One attempt: open, re-apply tracking, put the new file on the same descriptor
        number, and keep a change that happened meanwhile for the next read."""
        device = self.paths.device
        fd = open_device(device, write=self._writable)
        try:
            if self._tracking:
                _ioctl(fd, _abi.SET_WATCHER_TRACKING, 1, Op.SET_TRACKING, device)
            os.dup2(fd, self._fd, inheritable=False)
        finally:
            os.close(fd)
        self._reopens += 1
        now = current_generation(self.paths)
        last = self._last_seen
        if now is not None and last is not None and now > last:
            log.warning(
                "sysgenid: reopened %s; the generation moved from %d to %d while disconnected, "
                "reporting it as a change",
                device,
                last,
                now,
            )
            self._pending = now
        else:
            log.info("sysgenid: reopened %s after a daemon restart; generation %s", device, now)
        if now is not None:
            self._last_seen = now if last is None else max(last, now)

    def _poll(self, timeout: Optional[float]) -> bool:
        """Waits in ``poll`` up to ``timeout`` seconds (``None``: for ever); whether the file is
        outdated. A ``POLLERR`` without data pauses 10 ms and counts as ready, so the next read
        reports the error without spinning."""
        poller = select.poll()
        poller.register(self.fileno(), _READABLE)
        ms = None if timeout is None else math.ceil(timeout * 1000)
        events = poller.poll(ms)
        if not events:
            return False
        if not events[0][1] & _READABLE:
            time.sleep(0.01)
        return True


class _Backoff:
    """Pauses between reopen attempts: 10 ms doubling to 500 ms, until a deadline."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.delay = _FIRST_REOPEN_DELAY

    def next_delay(self) -> Optional[float]:
        """The next pause, or ``None`` once the deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return None
        delay = min(self.delay, left)
        self.delay = min(self.delay * 2, _MAX_REOPEN_DELAY)
        return delay


def _outdated(paths: Paths) -> Optional[int]:
    """How many tracked watchers are outdated, from the status document, if it answers."""
    from .control import status

    try:
        value = status(paths).get("outdated")
    except Exception:
        return None
    return value if isinstance(value, int) else None


def _open_for_waiting(paths: Paths) -> Watcher:
    return Watcher(paths, writable=None, reopen_timeout=None)


def wait_watchers(timeout: Optional[float] = None, *, paths: Optional[Paths] = None) -> None:
    """Waits until no tracked watcher is outdated, for at most ``timeout`` seconds (``None``:
    for ever): what an overseer calls after a restore before it lets traffic in.

    It opens its own file (read-write where permitted, else read-only) and keeps it current:
    whenever that file is outdated it acknowledges the new generation (or, read-only, opens a
    fresh file, which starts current) and waits again, so it returns only once every tracked
    watcher has acknowledged the latest generation. Raises ``Timeout`` when time is up.
    """
    paths = resolve(paths)
    deadline = _deadline(timeout)
    watcher = _open_for_waiting(paths)
    try:
        while True:
            generation = watcher.try_read()
            while generation is not None:
                if watcher.writable:
                    watcher.ack(generation)
                else:
                    watcher.close()
                    watcher = _open_for_waiting(paths)
                generation = watcher.try_read()
            try:
                watcher.wait_watchers(_remaining(deadline))
                return
            except WatcherOutdated:
                continue
            except Timeout as e:
                raise timeout_error(timeout or 0.0, e.outdated, paths.device) from None
    finally:
        watcher.close()


def trigger(min_gen: int = 0, *, paths: Optional[Paths] = None) -> None:
    """Bumps the generation to ``max(min_gen, current + 1)`` through a read-only file of its
    own, and returns once the new value is durable and published. Needs
    ``CAP_CHECKPOINT_RESTORE`` or ``CAP_SYS_ADMIN`` (``TriggerDenied`` otherwise)."""
    with Watcher(paths, writable=False, reopen_timeout=None) as watcher:
        watcher.trigger(min_gen)
