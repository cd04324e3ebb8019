"""``after_restore``: callbacks run once per new generation, then the change is acknowledged.

Register callbacks with the decorator, then run them from a background thread
(:meth:`Registry.start_thread`) or an asyncio task (:meth:`Registry.run_async`). Each runner
holds a writable watcher, tracked by default, so an overseer's ``wait_watchers`` waits for it.
When the generation changes, every callback runs with the new generation, in registration
order; the change is acknowledged only if all of them succeeded. A callback that raises is
logged (logger ``sysgenid``) and the change is not acknowledged, so the overseer keeps waiting;
the callbacks run again at the next change.
"""

from __future__ import annotations

import inspect
import logging
import os
import select
import threading
from typing import Any, Callable, Optional, TypeVar

from .errors import DaemonGone, NotCurrent
from .paths import Paths, resolve
from .watcher import Watcher

log = logging.getLogger("sysgenid")

Callback = Callable[[int], Any]
"""A callback: takes the new generation. Under :meth:`Registry.run_async` it may be a coroutine
function (its result is awaited)."""
F = TypeVar("F", bound=Callback)


class Registry:
    """An ordered set of callbacks to run after a restore (or a clone).

    >>> registry = Registry()
    >>> @registry
    ... def renew(generation: int) -> None:
    ...     print("renewing for generation", generation)
    >>> registry.callbacks == (renew,)
    True
    """

    def __init__(self) -> None:
        self._callbacks: list[Callback] = []
        self._lock = threading.Lock()

    def __call__(self, callback: F) -> F:
        """Registers ``callback`` (usable as a decorator) and returns it unchanged."""
        return self.register(callback)

    def register(self, callback: F) -> F:
        """Registers ``callback``; registering it twice runs it once."""
        with self._lock:
            if callback not in self._callbacks:
                self._callbacks.append(callback)
        return callback

    def unregister(self, callback: Callback) -> None:
        """Removes ``callback``, if it is registered."""
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    @property
    def callbacks(self) -> tuple[Callback, ...]:
        """The registered callbacks, in order."""
        with self._lock:
            return tuple(self._callbacks)

    def run_callbacks(self, generation: int) -> bool:
        """Runs every callback with ``generation``; whether all succeeded. Failures are logged.
        A coroutine function fails here: it needs :meth:`run_async`."""
        ok = True
        for callback in self.callbacks:
            try:
                result = callback(generation)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise TypeError("an async callback needs Registry.run_async, not a thread")
            except Exception:
                _log_failure(callback, generation)
                ok = False
        return ok

    async def run_callbacks_async(self, generation: int) -> bool:
        """Runs every callback with ``generation``, awaiting those that return an awaitable;
        whether all succeeded. Failures are logged."""
        ok = True
        for callback in self.callbacks:
            try:
                result = callback(generation)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log_failure(callback, generation)
                ok = False
        return ok

    def start_thread(
        self, paths: Optional[Paths] = None, *, tracking: bool = True
    ) -> RestoreThread:
        """Opens a writable watcher (tracked unless ``tracking=False``) and starts a daemon
        thread that runs the callbacks at each change; returns it (``stop()`` ends it)."""
        thread = RestoreThread(self, Watcher(resolve(paths), writable=True, tracking=tracking))
        thread.start()
        return thread

    async def run_async(self, paths: Optional[Paths] = None, *, tracking: bool = True) -> None:
        """Runs the callbacks at each change in the running asyncio loop, until cancelled."""
        with Watcher(resolve(paths), writable=True, tracking=tracking) as watcher:
            progress = _Progress(watcher)
            while True:
                try:
                    generation, wait_on = progress.next_step()
                except DaemonGone:
                    await watcher._reopen_async()
                    continue
                if generation is None:
                    try:
                        await wait_on.readable_async()
                    finally:
                        progress.done_waiting(wait_on)
                    continue
                progress.finish(generation, await self.run_callbacks_async(generation))


after_restore = Registry()
"""The process-wide registry: decorate callbacks with ``@sysgenid.after_restore``, then call
``sysgenid.after_restore.start_thread()`` or ``await sysgenid.after_restore.run_async()``."""


def _log_failure(callback: Callback, generation: int) -> None:
    name = getattr(callback, "__qualname__", repr(callback))
    log.exception(
        "after_restore callback %s failed for generation %d; the change is not acknowledged, "
        "so an overseer waiting for tracked watchers keeps waiting",
        name,
        generation,
    )


class _Progress:
    """Where a runner is: which generation to handle next, or which file to wait on.

    After a failure the watcher stays outdated (readable), so waiting on it would spin; the
    runner then waits on a fresh read-only file, which is current when opened, until the
    generation moves on.
    """

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.failed: Optional[int] = None

    def next_step(self) -> tuple[Optional[int], Watcher]:
        """``(generation, _)`` to run the callbacks for it, or ``(None, watcher)`` to wait until
        that watcher is readable (then call :meth:`done_waiting`). Raises ``DaemonGone`` for
        the runner to reopen the watcher (in a thread or without blocking its loop)."""
        if self.failed is None:
            return self.watcher._read_once(), self.watcher
        # Opened before the read, so a bump after the read makes it readable.
        fresh = Watcher(self.watcher.paths, writable=False, reopen_timeout=None)
        try:
            generation = self.watcher._read_once()
        except BaseException:
            fresh.close()
            raise
        if generation is None or generation == self.failed:
            return None, fresh
        fresh.close()
        return generation, self.watcher

    def done_waiting(self, waited_on: Watcher) -> None:
        if waited_on is not self.watcher:
            waited_on.close()

    def finish(self, generation: int, ok: bool) -> None:
        """Acknowledges ``generation`` if the callbacks succeeded, or remembers the failure."""
        if not ok:
            self.failed = generation
            return
        self.failed = None
        try:
            self.watcher.ack(generation)
        except NotCurrent:
            pass  # It moved on during the callbacks: the next read reports the newer one.


class RestoreThread(threading.Thread):
    """The background thread of :meth:`Registry.start_thread`. It ends at :meth:`stop`, or on
    an error of the device (kept in :attr:`error`, and logged); call :meth:`stop` either way
    to release its stop pipe."""

    def __init__(self, registry: Registry, watcher: Watcher) -> None:
        super().__init__(name="sysgenid-after-restore", daemon=True)
        self.registry = registry
        self.watcher = watcher
        self.error: Optional[BaseException] = None
        self._stop_read, self._stop_write = os.pipe2(os.O_CLOEXEC)
        self._stop_lock = threading.Lock()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Asks the thread to end, joins it for at most ``timeout`` seconds, and once it has
        ended releases its stop pipe."""
        with self._stop_lock:
            if self._stop_write < 0:
                return
            os.write(self._stop_write, b"x")
        if self.is_alive():
            self.join(timeout)
        if self.is_alive():
            return
        with self._stop_lock:
            os.close(self._stop_read)
            os.close(self._stop_write)
            self._stop_write = -1

    def run(self) -> None:
        progress = _Progress(self.watcher)
        try:
            while True:
                try:
                    generation, wait_on = progress.next_step()
                except DaemonGone:
                    self.watcher._reopen()
                    continue
                if generation is None:
                    try:
                        if not self._wait(wait_on):
                            return
                    finally:
                        progress.done_waiting(wait_on)
                    continue
                progress.finish(generation, self.registry.run_callbacks(generation))
        except Exception as e:
            self.error = e
            log.exception("sysgenid after_restore thread stopped")
        finally:
            self.watcher.close()

    def _wait(self, watcher: Watcher) -> bool:
        """Waits until ``watcher`` is readable (``True``) or :meth:`stop` is called."""
        poller = select.poll()
        poller.register(watcher.fileno(), select.POLLIN | select.POLLRDNORM)
        poller.register(self._stop_read, select.POLLIN)
        events = dict(poller.poll())
        return self._stop_read not in events
