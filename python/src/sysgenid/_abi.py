"""The facts of the device ABI that the client needs: ioctl numbers, page layout, paths.

The numbers are those of the ``sysgenid-abi`` crate and ``docs/abi.md``.
"""

from __future__ import annotations

IOCTL_TYPE = 0xE4


def _io(nr: int) -> int:
    """An ``_IO(0xE4, nr)`` ioctl number: no direction bits and no size."""
    return (IOCTL_TYPE << 8) | nr


SET_WATCHER_TRACKING = _io(1)
WAIT_WATCHERS = _io(2)
TRIGGER_GEN_UPDATE = _io(3)

PAGE_SIZE = 4096
"""Size of the counter page; the generation is its first 4 bytes, native-endian."""
SEQUENCE_WORD = 1
"""The page's sequence word, as an index of 4-byte words (byte offset 4): odd while the daemon
writes the page, ``2 * generation + 2`` (modulo 2**32) once it is done."""
GENERATION_ID_WORDS = slice(2, 6)
"""The generation ID, 16 random bytes at byte offset 8, as 4-byte words; all zero when the page
holds none."""
READ_TRIES = 10_000
"""How often a reader tries for a stable page before it gives up (a daemon that died mid-write)."""
GENERATION_SIZE = 4
"""Size of the generation, and the only valid length of an acknowledgement."""
U32_MAX = 0xFFFF_FFFF

DEFAULT_DEVICE = "/dev/sysgenid"
DEVICE_ENV = "SYSGENID_DEVICE"
DEFAULT_STATE_DIR = "/run/sysgenid"
STATE_DIR_ENV = "SYSGENID_STATE_DIR"
PAGE_FILE_NAME = "generation"
CONTROL_SOCKET_NAME = "control.sock"

STATUS_VERSION = 4
"""The status document version this library knows."""
STATUS_V1_FIELDS = (
    "generation",
    "serving",
    "degraded",
    "open_files",
    "tracked",
    "outdated",
    "outdated_files",
    "pending_reads",
    "pending_waits",
    "last_bump",
    "failed_bumps",
    "last_failure",
    "daemon",
)
"""The fields every status document has, since version 1."""
