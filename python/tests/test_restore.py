"""Tests of the ``after_restore`` registry against a real sysgenidd, in a thread and in asyncio:
callbacks run once per generation, and the change is acknowledged only if all succeeded."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Callable, Iterator, Protocol

import pytest
from conftest import Daemon

import sysgenid


class Runner(Protocol):
    """A started runner of a registry; ``stop`` ends it."""

    def stop(self) -> None: ...


class AsyncRunner:
    """``Registry.run_async`` as a task of an event loop running in its own thread."""

    def __init__(self, registry: sysgenid.Registry, paths: sysgenid.Paths) -> None:
        self.loop = asyncio.new_event_loop()
        self.task = self.loop.create_task(registry.run_async(paths))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    def stop(self) -> None:
        """Cancels the task and waits until it has closed its watcher."""
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(10)
        assert not self.thread.is_alive()


def start_thread(registry: sysgenid.Registry, paths: sysgenid.Paths) -> Runner:
    return registry.start_thread(paths)


def start_async(registry: sysgenid.Registry, paths: sysgenid.Paths) -> Runner:
    return AsyncRunner(registry, paths)


Start = Callable[[sysgenid.Registry, sysgenid.Paths], Runner]


@pytest.fixture(params=[start_thread, start_async], ids=["thread", "asyncio"])
def start(request: pytest.FixtureRequest) -> Iterator[Start]:
    runners: list[Runner] = []

    def start_runner(registry: sysgenid.Registry, paths: sysgenid.Paths) -> Runner:
        runner: Runner = request.param(registry, paths)
        runners.append(runner)
        return runner

    yield start_runner
    for runner in runners:
        runner.stop()


def wait_tracked(daemon: Daemon) -> None:
    """Waits until the runner's tracked watcher is open."""
    for _ in range(1000):
        if daemon.status()["tracked"] == 1:
            return
        threading.Event().wait(0.01)
    pytest.fail("the runner's tracked watcher did not open")


def test_callbacks_run_once_per_generation_then_the_change_is_acknowledged(
    daemon: Daemon, start: Start
) -> None:
    registry = sysgenid.Registry()
    seen: queue.Queue[tuple[str, int]] = queue.Queue()

    @registry
    def first(generation: int) -> None:
        seen.put(("first", generation))

    @registry
    def second(generation: int) -> None:
        seen.put(("second", generation))

    start(registry, daemon.paths)
    wait_tracked(daemon)
    for expected in (1, 2):
        sysgenid.trigger(paths=daemon.paths)
        assert seen.get(timeout=10) == ("first", expected)
        assert seen.get(timeout=10) == ("second", expected)
        sysgenid.wait_watchers(10, paths=daemon.paths)
        assert daemon.status()["outdated"] == 0
    with pytest.raises(queue.Empty):
        seen.get(timeout=0.3)


def test_the_runner_survives_a_daemon_restart(daemon: Daemon, start: Start) -> None:
    registry = sysgenid.Registry()
    seen: queue.Queue[int] = queue.Queue()
    registry(seen.put)
    start(registry, daemon.paths)
    wait_tracked(daemon)
    daemon.restart()
    sysgenid.trigger(paths=daemon.paths)
    assert seen.get(timeout=10) == 1
    wait_tracked(daemon)
    sysgenid.trigger(paths=daemon.paths)
    assert seen.get(timeout=10) == 2
    sysgenid.wait_watchers(10, paths=daemon.paths)


def test_coroutine_callbacks_are_awaited_under_asyncio(daemon: Daemon) -> None:
    registry = sysgenid.Registry()
    seen: queue.Queue[int] = queue.Queue()

    @registry
    async def renew(generation: int) -> None:
        await asyncio.sleep(0.05)
        seen.put(generation)

    runner = AsyncRunner(registry, daemon.paths)
    try:
        wait_tracked(daemon)
        sysgenid.trigger(paths=daemon.paths)
        assert seen.get(timeout=10) == 1
        sysgenid.wait_watchers(10, paths=daemon.paths)
    finally:
        runner.stop()


def test_a_failing_callback_means_no_ack_until_a_later_generation_succeeds(
    daemon: Daemon, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    registry = sysgenid.Registry()
    calls: queue.Queue[int] = queue.Queue()
    failing = {1}

    @registry
    def renew(generation: int) -> None:
        calls.put(generation)
        if generation in failing:
            raise RuntimeError(f"cannot renew for {generation}")

    caplog.set_level(logging.ERROR, logger="sysgenid")
    start(registry, daemon.paths)
    wait_tracked(daemon)
    sysgenid.trigger(paths=daemon.paths)
    assert calls.get(timeout=10) == 1
    with pytest.raises(sysgenid.Timeout) as caught:
        sysgenid.wait_watchers(0.5, paths=daemon.paths)
    assert caught.value.outdated == 1
    with pytest.raises(queue.Empty):
        calls.get(timeout=0.3)  # Not run again for the same generation.
    assert "failed for generation 1" in caplog.text
    assert "cannot renew for 1" in caplog.text

    sysgenid.trigger(paths=daemon.paths)
    assert calls.get(timeout=10) == 2
    sysgenid.wait_watchers(10, paths=daemon.paths)
    assert daemon.status()["outdated"] == 0


def test_a_coroutine_callback_fails_in_a_thread(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    registry = sysgenid.Registry()

    @registry
    async def renew(generation: int) -> None:
        pass

    caplog.set_level(logging.ERROR, logger="sysgenid")
    thread = registry.start_thread(daemon.paths)
    try:
        wait_tracked(daemon)
        sysgenid.trigger(paths=daemon.paths)
        with pytest.raises(sysgenid.Timeout):
            sysgenid.wait_watchers(0.5, paths=daemon.paths)
        assert "needs Registry.run_async" in caplog.text
    finally:
        thread.stop(10)
    assert not thread.is_alive()


def test_registering_is_idempotent_and_reversible() -> None:
    registry = sysgenid.Registry()

    def renew(generation: int) -> None:
        pass

    assert registry(renew) is renew
    registry.register(renew)
    assert registry.callbacks == (renew,)
    registry.unregister(renew)
    assert registry.callbacks == ()
    assert isinstance(sysgenid.after_restore, sysgenid.Registry)
