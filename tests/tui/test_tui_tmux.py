"""The real ``spendtrace-tui`` in a real terminal (tmux): start it, send keys, read the screen."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")


SOCKET = "spendtrace-tui-test"  # a tmux server of our own (-L), so no user session is touched


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


@pytest.fixture
def session(tmp_path: Path) -> str:
    """A session on a tmux server of this test's own socket, killed afterwards."""
    if TMUX is None:  # required, never skipped: the CI image and developer machines have tmux
        raise AssertionError("tmux is required for this test (apt-get install tmux)")
    name = f"spendtrace-tui-{tmp_path.name}"[:60]
    yield name
    subprocess.run([TMUX, "-L", SOCKET, "kill-session", "-t", name], capture_output=True)


def test_spendtrace_tui_in_tmux(tui_db: Path, session: str, tmp_path: Path) -> None:
    """Keys typed in a real terminal switch screens, open a request tree and quit the program."""
    exe = Path(sys.executable).with_name("spendtrace-tui")
    # COLUMNS/LINES from the calling environment would override the terminal's real size
    cmd = f"env -u COLUMNS -u LINES {exe if exe.exists() else sys.executable + ' -m tui.cli'} --db {tui_db} --export-dir {tmp_path}"
    _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "40", f"{cmd}; echo EXITED-$?; sleep 30")
    live = _wait_for(session, "summarise")
    assert "[red]x" in live and "Direct" in live
    _tmux("send-keys", "-t", session, "4")
    _wait_for(session, "Root feature")
    _tmux("send-keys", "-t", session, "o")
    _wait_for(session, "most expensive")
    _wait_for(session, "req-big")
    _tmux("send-keys", "-t", session, "g", "Enter")
    tree = _wait_for(session, "bedrock_claude_3_5_sonnet")
    assert "request req-big" in tree and "summarise" in tree and "subtree $0.210000" in tree
    _tmux("send-keys", "-t", session, "Escape")
    _wait_for(session, "Root feature")
    _tmux("send-keys", "-t", session, "q")
    _wait_for(session, "EXITED-0")
