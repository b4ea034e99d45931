"""The real ``spendtrace-tui`` in a real terminal (tmux): start it, send keys, read the screen."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from _tmux_helpers import _screen, _tmux, _wait_for


def _first_row_is(request_id: str) -> Callable[[str], bool]:
    """Whether the request table's first row (under its header line) is ``request_id``."""

    def check(screen: str) -> bool:
        lines = screen.splitlines()
        header = next((i for i, line in enumerate(lines) if "Started (UTC)" in line), None)
        return header is not None and header + 1 < len(lines) and request_id in lines[header + 1]

    return check


def _wait_until(session: str, cond: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _screen(session)
        if cond(screen):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last screen:\n{screen}")


def test_spendtrace_tui_in_tmux(tui_db: Path, session: str, tmp_path: Path) -> None:
    """Keys typed in a real terminal switch screens, open a request tree and quit the program."""
    exe = Path(sys.executable).with_name("spendtrace-tui")
    # COLUMNS/LINES from the calling environment would override the terminal's real size
    prog = exe if exe.exists() else f"{sys.executable} -m tui.cli"
    cmd = f"env -u COLUMNS -u LINES {prog} --db {tui_db} --export-dir {tmp_path}"
    _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "40", f"{cmd}; echo EXITED-$?; sleep 30")
    live = _wait_for(session, "summarise")
    assert "[red]x" in live and "Direct" in live
    _tmux("send-keys", "-t", session, "4")
    _wait_for(session, "Root feature")
    _tmux("send-keys", "-t", session, "o")
    _wait_until(session, _first_row_is("req-big"), "the most expensive request on top")
    _tmux("send-keys", "-t", session, "g", "Enter")
    tree = _wait_for(session, "bedrock_claude_3_5_sonnet")
    assert "request req-big" in tree and "summarise" in tree and "subtree $0.21" in tree
    _tmux("send-keys", "-t", session, "Escape")
    _wait_for(session, "Root feature")
    _tmux("send-keys", "-t", session, "q")
    _wait_for(session, "EXITED-0")
