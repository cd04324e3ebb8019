"""Where the device, the page file and the control socket live."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Optional

from . import _abi


@dataclass(frozen=True)
class Paths:
    """The device file and the daemon's state directory, which holds the page file
    (``generation``) and the control socket (``control.sock``).

    :meth:`from_env` reads ``SYSGENID_DEVICE`` and ``SYSGENID_STATE_DIR`` as the Rust client
    and the ``sysgenid`` command do; the defaults are ``/dev/sysgenid`` and ``/run/sysgenid``.

    >>> p = Paths("/tmp/x/device", "/tmp/x/state")
    >>> p.page_file, p.control_socket
    ('/tmp/x/state/generation', '/tmp/x/state/control.sock')
    """

    device: str = _abi.DEFAULT_DEVICE
    state_dir: str = _abi.DEFAULT_STATE_DIR

    @classmethod
    def system(cls) -> Paths:
        """The system defaults, ignoring the environment."""
        return cls()

    @classmethod
    def from_env(cls) -> Paths:
        """The device from ``SYSGENID_DEVICE``, else ``/dev/sysgenid``; the state directory from
        ``SYSGENID_STATE_DIR``, else ``/run/sysgenid``. An empty variable counts as unset."""
        device = os.environ.get(_abi.DEVICE_ENV) or _abi.DEFAULT_DEVICE
        state_dir = os.environ.get(_abi.STATE_DIR_ENV) or _abi.DEFAULT_STATE_DIR
        return cls(device, state_dir)

    def with_device(self, device: str) -> Paths:
        """The same paths with another device file."""
        return replace(self, device=device)

    def with_state_dir(self, state_dir: str) -> Paths:
        """The same paths with another state directory."""
        return replace(self, state_dir=state_dir)

    @property
    def page_file(self) -> str:
        """``<state-dir>/generation``: a read-only page whose first 4 bytes are the generation."""
        return os.path.join(self.state_dir, _abi.PAGE_FILE_NAME)

    @property
    def control_socket(self) -> str:
        """``<state-dir>/control.sock``."""
        return os.path.join(self.state_dir, _abi.CONTROL_SOCKET_NAME)


def resolve(paths: Optional[Paths]) -> Paths:
    """``paths``, or :meth:`Paths.from_env` when it is ``None``."""
    return paths if paths is not None else Paths.from_env()
