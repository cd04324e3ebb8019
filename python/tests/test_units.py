"""Unit tests that need no daemon: errno mapping, paths, mountinfo parsing, trust of files."""

from __future__ import annotations

import doctest
import errno
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest

import sysgenid
from sysgenid import _abi, _trust
from sysgenid.errors import Op, from_errno

DEVICE = "/dev/sysgenid"


@pytest.mark.parametrize(
    ("op", "err", "kwargs", "cls", "text"),
    [
        (Op.OPEN, errno.ENOENT, {}, sysgenid.DeviceMissing, "is sysgenidd running?"),
        (Op.READ, errno.ENOTCONN, {}, sysgenid.DaemonGone, "daemon is gone"),
        (Op.OPEN, errno.EACCES, {"write": True}, sysgenid.WriteAccessDenied, "`sysgenid` group"),
        (Op.OPEN, errno.EACCES, {}, sysgenid.AccessDenied, "is sysgenidd running?"),
        (Op.TRIGGER, errno.EACCES, {}, sysgenid.TriggerDenied, "CAP_CHECKPOINT_RESTORE"),
        (Op.SET_TRACKING, errno.EBADF, {}, sysgenid.ReadOnly, "opened read-only"),
        (Op.ACK, errno.EBADF, {}, sysgenid.ReadOnly, "opened read-only"),
        (Op.ACK, errno.EINVAL, {"generation": 7}, sysgenid.NotCurrent, "generation 7 refused"),
        (Op.ACK, errno.ENOBUFS, {}, sysgenid.AckLength, "exactly 4 bytes"),
        (Op.WAIT_WATCHERS, errno.ETIME, {"timeout": 1.0}, sysgenid.Timeout, "after 1 s"),
        (Op.WAIT_WATCHERS, errno.EINTR, {}, sysgenid.WatcherOutdated, "itself outdated"),
        (Op.READ, errno.EINTR, {}, sysgenid.Interrupted, "interrupted by a signal"),
        (Op.TRIGGER, errno.EOVERFLOW, {}, sysgenid.Overflow, "can never change"),
        (Op.TRIGGER, errno.EIO, {}, sysgenid.PersistFailed, "could not persist"),
        (Op.TRIGGER, errno.EINVAL, {}, sysgenid.InvalidArgument, "trigger refused (EINVAL)"),
        (Op.MAP, errno.ENODEV, {}, sysgenid.MapUnsupported, "--device-mmap off"),
        (Op.POLL, errno.EFAULT, {}, sysgenid.OsFailure, "poll on"),
    ],
)
def test_every_errno_of_the_abi_maps_to_a_class_that_says_what_to_do(
    op: Op, err: int, kwargs: dict[str, object], cls: type, text: str
) -> None:
    error = from_errno(op, err, DEVICE, **kwargs)  # type: ignore[arg-type]
    assert type(error) is cls
    assert isinstance(error, sysgenid.SysgenidError)
    assert text in str(error)
    assert error.errno == err


def test_the_classes_group_like_oserror() -> None:
    assert issubclass(sysgenid.TriggerDenied, sysgenid.PermissionDenied)
    assert issubclass(sysgenid.ReadOnly, sysgenid.PermissionDenied)
    assert issubclass(sysgenid.NotCurrent, sysgenid.InvalidArgument)
    assert issubclass(sysgenid.WatcherOutdated, sysgenid.Interrupted)
    for absent in (sysgenid.DeviceMissing, sysgenid.DaemonGone, sysgenid.ControlUnavailable):
        assert issubclass(absent, sysgenid.DaemonNotRunning)


def test_paths_come_from_the_environment_and_empty_counts_as_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYSGENID_DEVICE", "/d")
    monkeypatch.setenv("SYSGENID_STATE_DIR", "/s")
    assert sysgenid.Paths.from_env() == sysgenid.Paths("/d", "/s")
    assert sysgenid.Paths.from_env().page_file == "/s/generation"
    assert sysgenid.Paths.from_env().control_socket == "/s/control.sock"
    monkeypatch.setenv("SYSGENID_DEVICE", "")
    monkeypatch.delenv("SYSGENID_STATE_DIR")
    assert sysgenid.Paths.from_env() == sysgenid.Paths.system()
    assert sysgenid.Paths.system() == sysgenid.Paths("/dev/sysgenid", "/run/sysgenid")


def test_ioctl_numbers_are_io_e4_1_to_3() -> None:
    assert (_abi.SET_WATCHER_TRACKING, _abi.WAIT_WATCHERS, _abi.TRIGGER_GEN_UPDATE) == (
        0xE401,
        0xE402,
        0xE403,
    )


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
40 36 0:45 / /tmp/a/device rw,nosuid - fuse.sysgenid sysgenid rw,user_id=65534,group_id=65534
41 36 0:46 / /dev/sysgenid rw,nosuid - fuse.sysgenid sysgenid rw,user_id=0,group_id=0
"""


def test_the_mount_of_a_device_is_found_by_device_number() -> None:
    assert _trust.fuse_mount(os.makedev(0, 45), MOUNTINFO) == ("fuse.sysgenid", 65534)
    assert _trust.fuse_mount(os.makedev(0, 46), MOUNTINFO) == ("fuse.sysgenid", 0)
    assert _trust.fuse_mount(os.makedev(0, 21), MOUNTINFO) == ("proc", None)
    assert _trust.fuse_mount(os.makedev(0, 99), MOUNTINFO) is None


def _state_dir_with_page(
    base: Path, name: str, *, dir_owner: int = 0, page_mode: int = 0o444
) -> str:
    """A state directory holding a page file of generation 7, made by hand."""
    state = base / name
    state.mkdir(mode=0o755)
    page = os.path.join(state, "generation")
    with open(page, "wb") as f:
        f.write((7).to_bytes(4, sys.byteorder) + bytes(4092))
    os.chmod(page, page_mode)
    os.chown(state, dir_owner, dir_owner)
    return str(state)


def test_a_page_file_of_root_is_read_and_others_are_refused(tmp_path: Path) -> None:
    trusted = _state_dir_with_page(tmp_path, "trusted")
    paths = sysgenid.Paths("/nonexistent/device", trusted)
    with sysgenid.Probe.open(paths) as probe:
        assert probe.generation == 7
        assert probe.source == paths.page_file and not probe.is_device
    assert sysgenid.generation(paths) == 7

    foreign = _state_dir_with_page(tmp_path, "foreign", dir_owner=65534)
    with pytest.raises(sysgenid.Untrusted, match="belongs to uid 65534"):
        sysgenid.Probe.open(sysgenid.Paths("/nonexistent/device", foreign))

    writable = _state_dir_with_page(tmp_path, "writable", page_mode=0o666)
    with pytest.raises(sysgenid.Untrusted, match="mode 0666"):
        sysgenid.Probe.open(sysgenid.Paths("/nonexistent/device", writable))

    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(os.path.join(trusted, "generation"), os.path.join(linked, "generation"))
    with pytest.raises(sysgenid.Untrusted, match="symbolic link"):
        sysgenid.Probe.open(sysgenid.Paths("/nonexistent/device", str(linked)))


def test_no_page_file_and_no_device_is_device_missing(tmp_path: Path) -> None:
    with pytest.raises(sysgenid.DeviceMissing) as caught:
        sysgenid.generation(sysgenid.Paths(str(tmp_path / "device"), str(tmp_path)))
    assert caught.value.errno == errno.ENOENT


def test_a_plain_file_is_not_a_served_device(tmp_path: Path) -> None:
    for size in (0, 4096):
        device = tmp_path / f"device-{size}"
        device.write_bytes(bytes(size))
        with pytest.raises(sysgenid.NotServed, match="not served"):
            sysgenid.Watcher(sysgenid.Paths(str(device), str(tmp_path)), writable=False)


def test_a_missing_control_socket_is_control_unavailable(tmp_path: Path) -> None:
    with pytest.raises(sysgenid.ControlUnavailable, match="is sysgenidd running?") as caught:
        sysgenid.status(sysgenid.Paths("/nonexistent/device", str(tmp_path)))
    assert caught.value.errno == errno.ENOENT


def test_a_control_socket_of_this_user_is_trusted() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        _trust.check_listener(a, "pair")


def _id_words(generation: int) -> tuple[int, int, int, int]:
    """The ID the test writer pairs with ``generation``: every word differs between
    generations, so halves of two pairs never make a known pair."""
    return (generation, generation ^ 0xFFFF_FFFF, generation ^ 0x5555_5555, generation)


def _page_with_id(tmp_path: Path, generation: int, sequence: int, id_words: tuple[int, ...]) -> str:
    page = bytearray(_abi.PAGE_SIZE)
    struct.pack_into("=6I", page, 0, generation, sequence, *id_words)
    (tmp_path / "generation").write_bytes(bytes(page))
    return str(tmp_path / "generation")


def test_the_id_is_read_with_its_generation_and_a_page_without_one_gives_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _page_with_id(tmp_path, 7, 16, _id_words(7))
    with sysgenid.Probe.page_file(path) as probe:
        expected = struct.pack("=4I", *_id_words(7)).hex()
        assert probe.generation_with_id() == (7, expected)
        assert probe.generation_id == expected
    older = _page_with_id(tmp_path, 7, 0, (0, 0, 0, 0))
    with sysgenid.Probe.page_file(older) as probe:
        assert probe.generation == 7 and probe.generation_with_id() is None
    downgraded = _page_with_id(tmp_path, 8, 16, _id_words(7))
    with sysgenid.Probe.page_file(downgraded) as probe:
        assert probe.generation_with_id() is None, "the ID of 7 is not the ID of 8"
    monkeypatch.setattr(_abi, "READ_TRIES", 50)
    mid_update = _page_with_id(tmp_path, 7, 15, _id_words(7))
    with sysgenid.Probe.page_file(mid_update) as probe:
        assert probe.generation_with_id() is None, "an odd sequence word is never stable"


_WRITER = """
import mmap, struct, sys
path, rounds = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f, mmap.mmap(f.fileno(), 4096) as page:
    words = memoryview(page).cast("I")
    for generation in range(1, rounds + 1):
        g = generation
        drawn = memoryview(struct.pack("=4I", g, g ^ 0xFFFFFFFF, g ^ 0x55555555, g)).cast("I")
        words[1] = 2 * generation + 1
        words[2:6] = drawn
        words[0] = generation
        words[1] = 2 * generation + 2
    words.release()
"""


def _race(path: str, read: Callable[[], None], rounds: int = 20_000) -> None:
    """Rewrites the page at ``path`` by the daemon's rule for ``rounds`` generations in another
    process (so both run at once, with no lock between them) while ``read`` runs here."""
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, path, str(rounds)])
    try:
        while writer.poll() is None:
            read()
    finally:
        writer.wait()
    assert writer.returncode == 0


def test_a_concurrent_writer_never_shows_a_probe_a_mixed_pair(tmp_path: Path) -> None:
    path = _page_with_id(tmp_path, 0, 2, _id_words(0))
    with sysgenid.Probe.page_file(path) as probe:

        def read() -> None:
            pair = probe.generation_with_id()
            assert pair is not None
            generation, id = pair
            assert id == struct.pack("=4I", *_id_words(generation)).hex(), generation

        _race(path, read)
        last = struct.pack("=4I", *_id_words(20_000)).hex()
        assert probe.generation_with_id() == (20_000, last)


def test_a_reader_that_skips_the_rule_sees_mixed_pairs(tmp_path: Path) -> None:
    path = _page_with_id(tmp_path, 0, 2, _id_words(0))
    mixed = 0
    with sysgenid.Probe.page_file(path) as probe:
        words = probe._word

        def read() -> None:
            nonlocal mixed
            generation = words[0]
            if tuple(words[2:6].tolist()) != _id_words(generation):
                mixed += 1

        # The race must happen to interleave: a loaded machine may need several writers.
        for _ in range(20):
            _race(path, read)
            if mixed:
                break
    assert mixed > 0


def test_a_short_page_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "generation").write_bytes(bytes(4))
    os.chmod(tmp_path, 0o755)
    with pytest.raises(sysgenid.Untrusted, match="holds 4 bytes, not exactly one page of 4096"):
        sysgenid.Probe.page_file(str(tmp_path / "generation"))


@pytest.mark.parametrize("module", [sysgenid.paths, sysgenid.restore])
def test_the_docstring_examples_hold(module: ModuleType) -> None:
    failed, attempted = doctest.testmod(module)
    assert failed == 0 and attempted > 0
