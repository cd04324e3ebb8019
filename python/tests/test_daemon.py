"""End-to-end tests of the client against a real sysgenidd: probe, Watcher, ack and tracking
with the built CLI as overseer, trigger_if, status, and the errno contract."""

from __future__ import annotations

import asyncio
import errno
import os
import selectors
import subprocess
import threading
import time

import pytest
from conftest import Daemon, python_as_nobody, run_python_as_nobody, wait_until

import sysgenid
from sysgenid.errors import Op, from_errno


def trigger_soon(daemon: Daemon, delay: float = 0.2) -> threading.Thread:
    """Triggers a bump from another thread after ``delay`` seconds."""

    def bump() -> None:
        time.sleep(delay)
        sysgenid.trigger(paths=daemon.paths)

    thread = threading.Thread(target=bump)
    thread.start()
    return thread


def test_generation_follows_triggers_through_the_page_file(daemon: Daemon) -> None:
    assert sysgenid.generation(daemon.paths) == 0
    sysgenid.trigger(paths=daemon.paths)
    assert sysgenid.generation(daemon.paths) == 1
    sysgenid.trigger(5, paths=daemon.paths)
    assert sysgenid.generation(daemon.paths) == 5
    with sysgenid.Probe.open(daemon.paths) as probe:
        assert probe.source == daemon.paths.page_file
        assert probe.generation == 5 == daemon.status()["generation"]


def test_each_generation_has_a_new_id_that_status_and_the_cli_agree_on(daemon: Daemon) -> None:
    seen = []
    with sysgenid.Probe.device(daemon.paths.device) as device:
        for round in range(3):
            pair = sysgenid.generation_with_id(daemon.paths)
            assert pair is not None
            generation, id = pair
            assert generation == round
            assert len(id) == 32 and id == id.lower() and int(id, 16) != 0
            assert sysgenid.generation_id(daemon.paths) == id == daemon.status()["generation_id"]
            assert device.generation_with_id() == pair, "the device mapping agrees"
            cli = subprocess.run(daemon.cli("get", "--id"), capture_output=True, text=True)
            assert cli.stdout == f"{generation} {id}\n"
            assert id not in seen
            seen.append(id)
            sysgenid.trigger(paths=daemon.paths)


def test_the_environment_names_the_daemon(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSGENID_DEVICE", daemon.paths.device)
    monkeypatch.setenv("SYSGENID_STATE_DIR", daemon.paths.state_dir)
    sysgenid.trigger()
    assert sysgenid.generation() == 1
    assert sysgenid.status()["daemon"]["device"] == daemon.paths.device
    with sysgenid.Watcher() as watcher:
        assert watcher.paths == daemon.paths


def test_blocking_wait_returns_the_new_generation_until_acknowledged(daemon: Daemon) -> None:
    with sysgenid.Watcher(daemon.paths) as watcher:
        assert watcher.writable and not watcher.tracking
        assert watcher.wait(timeout=0.1) is None
        bump = trigger_soon(daemon)
        started = time.monotonic()
        assert watcher.wait(timeout=10) == 1
        assert time.monotonic() - started >= 0.15, "returned before the bump"
        bump.join()
        assert watcher.wait(timeout=0.1) == 1, "an unacknowledged change is reported again"
        watcher.ack(1)
        assert watcher.wait(timeout=0.1) is None


def test_nonblocking_read(daemon: Daemon) -> None:
    with sysgenid.Watcher(daemon.paths, writable=False) as watcher:
        assert not watcher.writable
        assert watcher.try_read() is None
        sysgenid.trigger(paths=daemon.paths)
        assert watcher.try_read() == 1


def test_selectors_see_the_fd_readable_after_a_trigger(daemon: Daemon) -> None:
    with sysgenid.Watcher(daemon.paths) as watcher, selectors.DefaultSelector() as selector:
        selector.register(watcher, selectors.EVENT_READ)
        assert selector.select(0.1) == []
        bump = trigger_soon(daemon)
        events = selector.select(10)
        bump.join()
        assert [key.fileobj for key, _ in events] == [watcher]
        generation = watcher.try_read()
        assert generation == 1
        watcher.ack(generation)
        assert selector.select(0.1) == []


def test_asyncio_wait(daemon: Daemon) -> None:
    async def main() -> int:
        with sysgenid.Watcher(daemon.paths) as watcher:
            waiting = asyncio.ensure_future(watcher.wait_async())
            await asyncio.sleep(0.1)
            assert not waiting.done()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: sysgenid.trigger(paths=daemon.paths))
            return await asyncio.wait_for(waiting, 10)

    assert asyncio.run(main()) == 1


def test_the_cli_overseer_returns_only_after_the_tracked_python_watcher_acks(
    daemon: Daemon, tmp_path: os.PathLike[str]
) -> None:
    with sysgenid.Watcher(daemon.paths, tracking=True) as watcher:
        assert watcher.tracking
        before = sysgenid.generation(daemon.paths)
        hooks = os.path.join(tmp_path, "unquiesce.d")
        os.mkdir(hooks)
        overseer = subprocess.Popen(
            daemon.cli(
                "--json",
                "overseer",
                "post-restore",
                "--trigger",
                "--expect",
                str(before),
                "--grace",
                "0s",
                "--timeout",
                "30s",
                "--unquiesce-dir",
                hooks,
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        generation = watcher.wait(timeout=10)
        assert generation == before + 1
        time.sleep(0.5)
        assert overseer.poll() is None, "the overseer returned before the tracked watcher acked"
        assert daemon.status()["outdated"] == 1
        watcher.ack(generation)
        out, _ = overseer.communicate(timeout=20)
    assert overseer.returncode == 0, out
    assert '"event":"readjusted"' in out and f'"generation":{generation}' in out


def test_cli_wait_watchers_waits_for_the_ack_and_times_out_without_it(daemon: Daemon) -> None:
    with sysgenid.Watcher(daemon.paths, tracking=True) as watcher:
        sysgenid.trigger(paths=daemon.paths)
        timed_out = subprocess.run(daemon.cli("wait-watchers", "--timeout", "300ms"), check=False)
        assert timed_out.returncode == 3
        waiter = subprocess.Popen(daemon.cli("wait-watchers", "--timeout", "30s"))
        time.sleep(0.5)
        assert waiter.poll() is None
        watcher.ack(watcher.try_read() or 0)
        assert waiter.wait(timeout=20) == 0


def test_python_wait_watchers_waits_for_tracked_watchers_only(daemon: Daemon) -> None:
    with sysgenid.Watcher(daemon.paths, tracking=True) as tracked, sysgenid.Watcher(
        daemon.paths
    ):
        sysgenid.wait_watchers(1, paths=daemon.paths)
        sysgenid.trigger(paths=daemon.paths)
        with pytest.raises(sysgenid.Timeout) as caught:
            sysgenid.wait_watchers(0.3, paths=daemon.paths)
        assert caught.value.outdated == 1 and caught.value.errno == errno.ETIME
        with pytest.raises(sysgenid.WatcherOutdated):
            tracked.wait_watchers(1)
        ack_later = threading.Timer(0.3, lambda: tracked.ack(1))
        ack_later.start()
        started = time.monotonic()
        sysgenid.wait_watchers(10, paths=daemon.paths)
        assert time.monotonic() - started >= 0.25
        ack_later.join()
        tracked.set_tracking(False)
        assert not tracked.tracking
        sysgenid.trigger(paths=daemon.paths)
        sysgenid.wait_watchers(1, paths=daemon.paths)


def test_trigger_if_bumps_only_from_the_expected_generation(daemon: Daemon) -> None:
    assert sysgenid.trigger_if(0, paths=daemon.paths) == sysgenid.ConditionalBump(True, 1)
    assert sysgenid.trigger_if(0, paths=daemon.paths) == sysgenid.ConditionalBump(False, 1)
    assert sysgenid.trigger_if(1, 9, paths=daemon.paths) == sysgenid.ConditionalBump(True, 9)
    assert sysgenid.generation(daemon.paths) == 9


def test_status_names_the_outdated_tracked_watcher(daemon: Daemon) -> None:
    with sysgenid.Watcher(daemon.paths, tracking=True):
        sysgenid.trigger(paths=daemon.paths)
        status = sysgenid.status(daemon.paths)
    assert status["version"] == sysgenid._abi.STATUS_VERSION == 4
    assert status["daemon"]["serving_pid"] > 0
    assert (status["generation"], status["tracked"], status["outdated"]) == (1, 1, 1)
    assert [f["pid"] for f in status["outdated_files"]] == [os.getpid()]
    assert status["last_bump"]["source"] == "trigger"
    assert status["daemon"]["state_dir"] == daemon.paths.state_dir


def test_device_errnos_become_their_exceptions(daemon: Daemon) -> None:
    with sysgenid.Watcher(daemon.paths) as watcher, sysgenid.Watcher(
        daemon.paths, writable=False
    ) as reader:
        fd = watcher.fileno()
        with pytest.raises(OSError) as short_read:
            os.read(fd, 2)
        assert short_read.value.errno == errno.EINVAL
        with pytest.raises(OSError) as short_write:
            os.write(fd, b"\0\0")
        assert short_write.value.errno == errno.ENOBUFS
        assert isinstance(from_errno(Op.ACK, errno.ENOBUFS, "d"), sysgenid.AckLength)
        with pytest.raises(sysgenid.NotCurrent) as not_current:
            watcher.ack(5)
        assert not_current.value.errno == errno.EINVAL and not_current.value.generation == 5
        with pytest.raises(sysgenid.ReadOnly) as read_only:
            reader.set_tracking(True)
        assert read_only.value.errno == errno.EBADF
        with pytest.raises(sysgenid.ReadOnly):
            reader.ack(0)
        with pytest.raises(ValueError):
            sysgenid.Watcher(daemon.paths, writable=False, tracking=True)
    with pytest.raises(sysgenid.InvalidArgument):
        sysgenid.trigger(2**32, paths=daemon.paths)
    sysgenid.trigger(2**32 - 1, paths=daemon.paths)
    with pytest.raises(sysgenid.Overflow) as overflow:
        sysgenid.trigger(paths=daemon.paths)
    assert overflow.value.errno == errno.EOVERFLOW
    with pytest.raises(sysgenid.Overflow):
        sysgenid.trigger_if(2**32 - 1, paths=daemon.paths)
    assert sysgenid.generation(daemon.paths) == 2**32 - 1


NOBODY_TRIGGERS = """
import sysgenid
for bump in (sysgenid.trigger, lambda: sysgenid.trigger_if(sysgenid.generation())):
    try:
        bump()
        print("bumped")
    except sysgenid.SysgenidError as e:
        print(type(e).__name__, e.errno)
"""


def test_nobody_may_not_trigger(daemon: Daemon) -> None:
    result = run_python_as_nobody(NOBODY_TRIGGERS, daemon.paths)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"TriggerDenied {errno.EACCES}"] * 2
    assert sysgenid.generation(daemon.paths) == 0


NOBODY_WATCHES = """
import sysgenid
w = sysgenid.Watcher()
print(w.writable, sysgenid.generation())
try:
    sysgenid.Watcher(writable=True)
except sysgenid.WriteAccessDenied as e:
    print("WriteAccessDenied", e.errno)
"""


def test_nobody_gets_a_read_only_watcher_by_default(daemon: Daemon) -> None:
    result = run_python_as_nobody(NOBODY_WATCHES, daemon.paths)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["False 0", f"WriteAccessDenied {errno.EACCES}"]


NOBODY_LISTENS = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("listening", flush=True)
conn, _ = s.accept()
conn.recv(100)
conn.sendall(b'{"forged": true}\\n')
"""


def test_a_control_socket_served_by_another_user_is_untrusted(daemon: Daemon) -> None:
    state = os.path.join(daemon.dir, "forged")
    os.mkdir(state)
    os.chown(state, 65534, 65534)
    listener = subprocess.Popen(
        python_as_nobody(NOBODY_LISTENS, os.path.join(state, "control.sock")),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "listening\n"
        with pytest.raises(sysgenid.Untrusted, match="runs as uid 65534"):
            sysgenid.status(daemon.paths.with_state_dir(state))
    finally:
        listener.kill()
        listener.wait()


def test_a_gone_daemon_is_daemon_gone(daemon: Daemon) -> None:
    watcher = sysgenid.Watcher(daemon.paths, reopen_timeout=None)
    daemon.proc.kill()
    daemon.proc.wait()
    wait_until(lambda: _read_fails(watcher), what="the read to fail")
    with pytest.raises(sysgenid.DaemonGone) as gone:
        watcher.try_read()
    assert gone.value.errno == errno.ENOTCONN
    watcher.close()
    with pytest.raises(sysgenid.ControlUnavailable):
        sysgenid.status(daemon.paths)
    assert sysgenid.generation(daemon.paths) == 0, "the page file outlives the daemon"


def _read_fails(watcher: sysgenid.Watcher) -> bool:
    try:
        watcher.try_read()
    except sysgenid.SysgenidError:
        return True
    return False


def test_a_watcher_reopens_after_a_restart_and_reports_a_bump_made_meanwhile(
    daemon: Daemon,
) -> None:
    with sysgenid.Watcher(daemon.paths, tracking=True) as watcher:
        fd = watcher.fileno()
        daemon.restart()
        sysgenid.trigger(paths=daemon.paths)
        assert watcher.wait(timeout=10) == 1
        assert watcher.reopen_count == 1 and watcher.fileno() == fd and watcher.tracking
        assert daemon.status()["tracked"] == 1, "tracking is turned on again"
        watcher.ack(1)
        sysgenid.trigger(paths=daemon.paths)
        assert watcher.wait(timeout=10) == 2


def test_asyncio_wait_reopens_after_a_restart(daemon: Daemon) -> None:
    async def main() -> int:
        with sysgenid.Watcher(daemon.paths) as watcher:
            waiting = asyncio.ensure_future(watcher.wait_async())
            await asyncio.sleep(0.1)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, daemon.restart)
            await loop.run_in_executor(None, lambda: sysgenid.trigger(paths=daemon.paths))
            generation = await asyncio.wait_for(waiting, 10)
            assert watcher.reopen_count == 1
            return generation

    assert asyncio.run(main()) == 1
