"""The fast probe: the generation from a shared read-only mapping of the page file."""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
import time
from typing import Optional, Tuple

from . import _abi, _trust
from .errors import NotServed, Op, SysgenidError, Unexpected, from_errno, untrusted
from .paths import Paths, resolve


class Probe:
    """A read-only shared mapping of the counter page; :attr:`generation` is one 4-byte load.

    :meth:`open` maps the page file ``<state-dir>/generation``, or the device itself where no
    page file exists (a kernel driver). Only what root or this process's own user controls is
    believed: the page file must be a regular file of exactly one page, reached without
    following a link, in a directory, both owned by root or by this process's effective uid and
    writable by no one else; a device served by FUSE must be mounted by one of them. Anything
    else raises :class:`~sysgenid.errors.Untrusted`, with no fall back.

    The page file survives daemon restarts (the next daemon updates it in place), so a probe
    keeps working across them.
    """

    def __init__(self, fd: int, source: str, *, is_device: bool) -> None:
        """Maps the first page of the open file ``fd`` (read from ``source``); takes no
        ownership of ``fd``. Use :meth:`open`, :meth:`page_file` or :meth:`device`."""
        try:
            self._map = mmap.mmap(fd, _abi.PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        except OSError as e:
            raise from_errno(Op.MAP, e.errno or errno.EIO, source) from None
        except ValueError as e:
            raise Unexpected(f"{source}: cannot map it: {e}", path=source, op=Op.MAP) from None
        # A native unsigned int view: each read is one aligned 4-byte load, never torn.
        self._word = memoryview(self._map).cast("I")
        self.source = source
        self.is_device = is_device

    @classmethod
    def open(cls, paths: Optional[Paths] = None) -> Probe:
        """Maps the page file of ``paths`` (default: :meth:`Paths.from_env`), or the device
        where no page file exists."""
        paths = resolve(paths)
        probe = _open_page_file(paths.page_file)
        return probe if probe is not None else cls.device(paths.device)

    @classmethod
    def page_file(cls, path: str) -> Probe:
        """Maps the page file at ``path``."""
        probe = _open_page_file(path)
        if probe is None:
            raise Unexpected(
                f"{path}: no such page file; is sysgenidd running, and is SYSGENID_STATE_DIR "
                "its state directory?",
                path=path,
                op=Op.MAP,
            )
        return probe

    @classmethod
    def device(cls, path: str) -> Probe:
        """Maps the device at ``path`` read-only. Prefer the page file: a device mapping can
        fault (``SIGBUS``) after a daemon restart."""
        fd = open_device(path, write=False)
        try:
            return cls(fd, path, is_device=True)
        finally:
            os.close(fd)

    @property
    def generation(self) -> int:
        """The current generation: one load from the shared page, no system call."""
        return int(self._word[0])

    def generation_with_id(self) -> Optional[Tuple[int, str]]:
        """The current generation and its random ID (32 lowercase hex digits), a consistent
        pair read by the page's sequence-word rule (``docs/abi.md``) with no system call while
        the page is stable. Two clones of one snapshot read the same generation and different
        IDs.

        ``None`` where the page holds no ID (a daemon older than the ID, a kernel driver) or
        stays in the middle of an update (a daemon that died while writing it).
        """
        words = self._word
        for attempt in range(_abi.READ_TRIES):
            before = words[_abi.SEQUENCE_WORD]
            generation = words[0]
            id_words = words[_abi.GENERATION_ID_WORDS].tolist()
            after = words[_abi.SEQUENCE_WORD]
            if before % 2 == 0 and before == after:
                drawn = struct.pack("=4I", *id_words)
                # A word other than 2g + 2: an older daemon wrote this generation, with no ID.
                if drawn == bytes(16) or before != (2 * generation + 2) & _abi.U32_MAX:
                    return None
                return int(generation), drawn.hex()
            if attempt < 1000:
                os.sched_yield()
            else:
                time.sleep(0.0001)
        return None

    @property
    def generation_id(self) -> Optional[str]:
        """The current generation's random ID: :meth:`generation_with_id` without the
        generation."""
        pair = self.generation_with_id()
        return None if pair is None else pair[1]

    def close(self) -> None:
        """Unmaps the page."""
        self._word.release()
        self._map.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Probe(source={self.source!r}, generation={self.generation})"


def _open_page_file(path: str) -> Optional[Probe]:
    """The mapped page file, ``None`` if it or its directory does not exist; refused unless the
    directory and the file pass the checks of :mod:`sysgenid._trust`."""
    directory, name = os.path.split(path)
    directory = directory or "."
    try:
        dir_fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise from_errno(Op.MAP, e.errno or errno.EIO, directory) from None
    try:
        problem = _trust.owner_problem(os.fstat(dir_fd))
        if problem is not None:
            raise untrusted(directory, problem)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise untrusted(path, "it is a symbolic link, not a regular file") from None
            raise from_errno(Op.MAP, e.errno or errno.EIO, path) from None
    finally:
        os.close(dir_fd)
    try:
        problem = _trust.page_problem(os.fstat(fd))
        if problem is not None:
            raise untrusted(path, problem)
        return Probe(fd, path, is_device=False)
    finally:
        os.close(fd)


def open_device(path: str, *, write: bool) -> int:
    """Opens the device nonblocking and checks that a trusted daemon (or a driver) serves it;
    returns the file descriptor."""
    access = os.O_RDWR if write else os.O_RDONLY
    try:
        fd = os.open(path, access | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise from_errno(Op.OPEN, e.errno or errno.EIO, path, write=write) from None
    try:
        problem = _trust.served_problem(os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    if problem is None:
        return fd
    os.close(fd)
    if problem == "unserved":
        raise NotServed(
            f"{path}: the file exists but is not served (an empty mountpoint); is sysgenidd "
            "running?",
            path=path,
            op=Op.OPEN,
        )
    raise untrusted(path, problem)


_GLOBAL: dict[Paths, Probe] = {}
_GLOBAL_LOCK = threading.Lock()


def generation(paths: Optional[Paths] = None) -> int:
    """The current generation, from a process-wide mapping of the page file of ``paths``
    (default: :meth:`Paths.from_env`, read at each call), made on first use and kept.

    After the first call for given paths this is one load with no system call. A failed first
    use is not remembered: the next call tries again.
    """
    paths = resolve(paths)
    probe = _GLOBAL.get(paths)
    if probe is None:
        with _GLOBAL_LOCK:
            probe = _GLOBAL.get(paths)
            if probe is None:
                probe = Probe.open(paths)
                _GLOBAL[paths] = probe
    return probe.generation


def generation_with_id(paths: Optional[Paths] = None) -> Optional[Tuple[int, str]]:
    """The current generation and its random ID (32 lowercase hex digits), a consistent pair
    from the process-wide mapping of :func:`generation`; ``None`` where the page holds no ID
    (see :meth:`Probe.generation_with_id`)."""
    generation(paths)
    return _GLOBAL[resolve(paths)].generation_with_id()


def generation_id(paths: Optional[Paths] = None) -> Optional[str]:
    """The current generation's random ID, from the process-wide mapping of :func:`generation`:
    two clones of one snapshot read the same generation and different IDs. ``None`` where the
    page holds no ID."""
    pair = generation_with_id(paths)
    return None if pair is None else pair[1]


def current_generation(paths: Paths) -> Optional[int]:
    """The generation through a probe mapped just for this read, or ``None`` if neither the page
    file nor the device can be mapped."""
    try:
        with Probe.open(paths) as probe:
            return probe.generation
    except (SysgenidError, OSError):
        return None
