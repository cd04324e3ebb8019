"""Test fixtures: a real ``sysgenidd`` on a temporary device, and the built ``sysgenid`` CLI.

The binaries come from ``SYSGENID_BIN_DIR``, else ``$CARGO_TARGET_DIR/debug``, else the
repository's ``target/debug`` (``scripts/test.sh`` builds them). Tests run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

import sysgenid

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
NOBODY_SETPRIV = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
]


def bin_dir() -> Path:
    """Where the built daemon and CLI are."""
    explicit = os.environ.get("SYSGENID_BIN_DIR")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR")
    return Path(target) / "debug" if target else REPO / "target" / "debug"


def binary(name: str) -> str:
    path = bin_dir() / name
    if not path.exists():
        pytest.fail(
            f"{path} is missing: build it first (cargo build -p sysgenidd -p sysgenid-cli), "
            "or set SYSGENID_BIN_DIR"
        )
    return str(path)


class Daemon:
    """A running ``sysgenidd`` on ``<dir>/device`` with state in ``<dir>/state``."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.paths = sysgenid.Paths(
            os.path.join(directory, "device"), os.path.join(directory, "state")
        )
        self.log = os.path.join(directory, "daemon.log")
        self.start()

    def start(self) -> None:
        """Starts the daemon on this directory and waits until it serves."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary("sysgenidd"),
                    "--device",
                    self.paths.device,
                    "--state-dir",
                    self.paths.state_dir,
                    "--backends",
                    "none",
                    "--log",
                    "debug",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._wait_serving()

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                pytest.fail(f"sysgenidd exited early ({code}); log:\n{self.read_log()}")
            try:
                if sysgenid.status(self.paths)["serving"] is True:
                    return
            except sysgenid.SysgenidError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sysgenidd did not start serving; log:\n{self.read_log()}")
            time.sleep(0.02)

    def read_log(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def status(self) -> dict[str, Any]:
        return sysgenid.status(self.paths)

    def cli(self, *args: str) -> list[str]:
        """The argument list of the ``sysgenid`` command for this daemon."""
        return [
            binary("sysgenid"),
            "--device",
            self.paths.device,
            "--state-dir",
            self.paths.state_dir,
            *args,
        ]

    def restart(self) -> None:
        """Kills the daemon (its mount left stale) and starts a new one on the same state."""
        self.proc.kill()
        self.proc.wait()
        self.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # A killed daemon leaves its mount stale (ismount cannot even stat it): detach it.
        subprocess.run(
            ["umount", "--lazy", self.paths.device], stderr=subprocess.DEVNULL, check=False
        )


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    """A fresh daemon for one test, its directory traversable by every user (for ``nobody``)."""
    directory = tempfile.mkdtemp(prefix="sysgenid-py-")
    os.chmod(directory, 0o755)
    d = Daemon(directory)
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(directory, ignore_errors=True)


def python_as_nobody(code: str, *args: str) -> list[str]:
    """The command that runs ``code`` (with ``args``) in this Python as ``nobody``, with no
    groups and no capabilities."""
    return [*NOBODY_SETPRIV, sys.executable, "-c", code, *args]


def run_python_as_nobody(code: str, paths: sysgenid.Paths) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` as ``nobody`` with the package importable and the daemon's paths in the
    environment."""
    package_root = str(Path(sysgenid.__file__).resolve().parents[1])
    env = dict(
        os.environ,
        PYTHONPATH=package_root,
        SYSGENID_DEVICE=paths.device,
        SYSGENID_STATE_DIR=paths.state_dir,
    )
    return subprocess.run(
        python_as_nobody(code), env=env, capture_output=True, text=True, timeout=30, check=False
    )


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: Optional[str] = None
) -> None:
    """Polls ``predicate`` until it holds, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)
