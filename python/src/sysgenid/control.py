"""The control socket: one request line out, one JSON line back; ``status`` and ``trigger_if``."""

from __future__ import annotations

import errno
import json
import logging
import socket
from dataclasses import dataclass
from typing import Any, Optional

from . import _abi, _trust
from .errors import (
    BadAnswer,
    ControlError,
    ControlUnavailable,
    Op,
    StatusIncomplete,
    SysgenidError,
    trigger_error,
)
from .paths import Paths, resolve

log = logging.getLogger("sysgenid")

STATUS_TIMEOUT = 5.0
"""Seconds the control socket gets to answer ``status``."""
TRIGGER_IF_TIMEOUT = 15.0
"""Seconds it gets to answer ``trigger-if``, whose bump may queue behind others."""
_MAX_ANSWER = 1 << 20


@dataclass(frozen=True)
class ConditionalBump:
    """The answer to :func:`trigger_if`: whether it bumped, and the generation now."""

    bumped: bool
    generation: int


def _exchange(paths: Paths, request: str, timeout: float) -> dict[str, Any]:
    """Sends ``request`` to the control socket of ``paths`` and returns the JSON object it
    answered; an ``{"error": ...}`` answer is returned as is, for the caller to map."""
    path = paths.control_socket

    def unavailable(e: OSError) -> ControlUnavailable:
        return ControlUnavailable(
            f"cannot reach the control socket {path}: {e}; is sysgenidd running?",
            path=path,
            op=Op.STATUS,
            errno=e.errno,
        )

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            raise unavailable(e) from None
        _trust.check_listener(sock, path)
        try:
            sock.sendall(f"{request}\n".encode())
            line = _read_line(sock)
        except OSError as e:
            raise unavailable(e) from None
    try:
        value = json.loads(line)
    except ValueError as e:
        raise BadAnswer(f"the control socket {path} sent an unreadable answer: {e}", path=path)
    if not isinstance(value, dict):
        raise BadAnswer(f"the control socket {path} sent {value!r}, not an object", path=path)
    return value


def _read_line(sock: socket.socket) -> bytes:
    """Bytes up to the first newline or the end of input."""
    data = b""
    while b"\n" not in data and len(data) < _MAX_ANSWER:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _refusal(answer: dict[str, Any], path: str) -> Optional[ControlError]:
    """The daemon's error line as an exception, if the answer is one."""
    if "error" not in answer:
        return None
    name = answer.get("errno")
    return ControlError(
        f"the control socket {path} answered an error: {answer['error']}",
        path=path,
        errno_name=name if isinstance(name, str) else None,
    )


def status(paths: Optional[Paths] = None) -> dict[str, Any]:
    """The status document of the daemon at ``paths`` (default: :meth:`Paths.from_env`), as a
    dict (see ``docs/control.md``). A document without ``version`` is version 1, and gets
    ``"version": 1``. Raises ``StatusIncomplete`` for one without the fields every version has,
    ``ControlUnavailable`` when no daemon answers, ``Untrusted`` when the daemon runs as
    another user than root or this one."""
    paths = resolve(paths)
    path = paths.control_socket
    answer = _exchange(paths, "status", STATUS_TIMEOUT)
    refusal = _refusal(answer, path)
    if refusal is not None:
        raise refusal
    missing = [field for field in _abi.STATUS_V1_FIELDS if field not in answer]
    if missing:
        raise StatusIncomplete(
            f"the control socket {path} sent a status document without {', '.join(missing)}, "
            "which every sysgenidd writes; is sysgenidd what listens there? restart or "
            "reinstall it",
            path=path,
            fields=missing,
        )
    version = answer.setdefault("version", 1)
    if isinstance(version, int) and version < _abi.STATUS_VERSION:
        log.info(
            "%s: the status document is version %s, older than this library's %s",
            path,
            version,
            _abi.STATUS_VERSION,
        )
    return answer


def trigger_if(
    expected: int, min_gen: Optional[int] = None, *, paths: Optional[Paths] = None
) -> ConditionalBump:
    """Bumps the generation to ``max(min_gen, current + 1)`` as :func:`trigger` does, but only
    if it is still ``expected``: the overseer's bump after a restore, which makes exactly one
    bump even when a hardware backend saw the restore too.

    Returns ``ConditionalBump(bumped=True, generation=new)`` once the new value is durable and
    published, or at once ``ConditionalBump(bumped=False, generation=current)``. Needs
    ``CAP_CHECKPOINT_RESTORE`` or ``CAP_SYS_ADMIN`` (``TriggerDenied``); other errors:
    ``Overflow``, ``PersistFailed``, ``ControlUnavailable``, ``ControlError``.
    """
    for name, value in (("expected", expected), ("min_gen", min_gen or 0)):
        if not 0 <= value <= _abi.U32_MAX:
            raise ValueError(f"{name} must be a u32 (0 to {_abi.U32_MAX}), not {value}")
    paths = resolve(paths)
    path = paths.control_socket
    request = f"trigger-if {expected}" + (f" min {min_gen}" if min_gen else "")
    answer = _exchange(paths, request, TRIGGER_IF_TIMEOUT)
    refusal = _refusal(answer, path)
    if refusal is not None:
        code = getattr(errno, refusal.errno_name or "", None)
        mapped: Optional[SysgenidError] = trigger_error(code) if isinstance(code, int) else None
        raise (mapped or refusal) from None
    bumped, generation = answer.get("bumped"), answer.get("generation")
    if not isinstance(bumped, bool) or not isinstance(generation, int):
        raise BadAnswer(f"the control socket {path} sent {answer!r} to trigger-if", path=path)
    return ConditionalBump(bumped, generation)
