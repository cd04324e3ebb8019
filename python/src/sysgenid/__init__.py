"""Client for the Linux System Generation ID: probe, watch, acknowledge, wait, trigger.

The System Generation ID is a 32-bit counter that goes up whenever the system is restored from a
snapshot or cloned. Code that keeps state which must not be shared between copies (random
seeds, UUIDs, keys, leases) watches it and renews that state when it changes. This package
talks to the ``/dev/sysgenid`` device served by ``sysgenidd`` (or a driver with the same ABI),
to the daemon's page file and to its control socket, in pure Python.

=====================================  ==============================================
you want                               use
=====================================  ==============================================
the current generation, in a hot path  :func:`generation` or a :class:`Probe`
which clone this is                    :func:`generation_id`, :func:`generation_with_id`
to be told of changes                  :class:`Watcher`: ``wait``, ``try_read``,
                                       ``fileno`` for selectors, ``wait_async``
to renew state and then acknowledge    ``@after_restore`` callbacks, or ``Watcher.ack``
to be waited for by an overseer        ``Watcher(tracking=True)``
(overseer) to wait for everyone        :func:`wait_watchers`
(overseer, after a restore) to bump    :func:`trigger_if`, :func:`trigger`
who is lagging, is the daemon healthy  :func:`status`
=====================================  ==============================================

Paths come from ``SYSGENID_DEVICE`` (default ``/dev/sysgenid``) and ``SYSGENID_STATE_DIR``
(default ``/run/sysgenid``), as for the Rust client and the ``sysgenid`` command; every
function also takes explicit :class:`Paths`.
"""

from __future__ import annotations

from .control import ConditionalBump, status, trigger_if
from .errors import (
    AccessDenied,
    AckLength,
    BadAnswer,
    ControlError,
    ControlUnavailable,
    DaemonGone,
    DaemonNotRunning,
    DeviceMissing,
    Interrupted,
    InvalidArgument,
    MapUnsupported,
    NotCurrent,
    NotServed,
    Op,
    OsFailure,
    Overflow,
    PermissionDenied,
    PersistFailed,
    ReadOnly,
    StatusIncomplete,
    SysgenidError,
    Timeout,
    TriggerDenied,
    Unexpected,
    Untrusted,
    WatcherOutdated,
    WriteAccessDenied,
)
from .paths import Paths
from .probe import Probe, generation, generation_id, generation_with_id
from .restore import Registry, RestoreThread, after_restore
from .watcher import Watcher, trigger, wait_watchers

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "AckLength",
    "BadAnswer",
    "ConditionalBump",
    "ControlError",
    "ControlUnavailable",
    "DaemonGone",
    "DaemonNotRunning",
    "DeviceMissing",
    "Interrupted",
    "InvalidArgument",
    "MapUnsupported",
    "NotCurrent",
    "NotServed",
    "Op",
    "OsFailure",
    "Overflow",
    "Paths",
    "PermissionDenied",
    "PersistFailed",
    "Probe",
    "ReadOnly",
    "Registry",
    "RestoreThread",
    "StatusIncomplete",
    "SysgenidError",
    "Timeout",
    "TriggerDenied",
    "Unexpected",
    "Untrusted",
    "WatcherOutdated",
    "Watcher",
    "WriteAccessDenied",
    "after_restore",
    "generation",
    "generation_id",
    "generation_with_id",
    "status",
    "trigger",
    "trigger_if",
    "wait_watchers",
]
