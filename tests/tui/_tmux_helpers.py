"""Drive real programs in a real terminal: a tmux server on a socket of our own, send-keys, capture-pane."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

TMUX = shutil.which("tmux")


#: A tmux server of our own (-L), so no user session is touched, and one per test process, so two test
#: runs on one machine (two checkouts) never type into each other's sessions. It exits with its last session.
SOCKET = f"spendtrace-tui-test-{os.getpid()}"


def _tmux(*args: str) -> str:
    assert TMUX is not None
    return subprocess.run([TMUX, "-L", SOCKET, *args], check=True, capture_output=True, text=True).stdout


def _screen(session: str) -> str:
    return _tmux("capture-pane", "-p", "-t", session)


def _wait_for(session: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _screen(session)
        if text in screen:
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared on the terminal; last screen:\n{screen}")


def tmux_session(tmp_path: Path) -> Iterator[str]:
    """A session name on our tmux server, killed when the generator closes (used by a fixture)."""
    if TMUX is None:  # required, never skipped: the CI image and developer machines have tmux
        raise AssertionError("tmux is required for this test (apt-get install tmux)")
    name = f"spendtrace-tui-{tmp_path.name}"[:60]
    yield name
    subprocess.run([TMUX, "-L", SOCKET, "kill-session", "-t", name], capture_output=True)


