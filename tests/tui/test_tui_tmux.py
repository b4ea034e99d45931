"""The real ``spendtrace-tui`` in a real terminal (tmux): start it, send keys, read the screen."""

from __future__ import annotations

import sys
from pathlib import Path

from _tmux_helpers import _tmux, _wait_for


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
    _wait_for(session, "most expensive")
    _wait_for(session, "req-big")
    _tmux("send-keys", "-t", session, "g", "Enter")
    tree = _wait_for(session, "bedrock_claude_3_5_sonnet")
    assert "request req-big" in tree and "summarise" in tree and "subtree $0.210000" in tree
    _tmux("send-keys", "-t", session, "Escape")
    _wait_for(session, "Root feature")
    _tmux("send-keys", "-t", session, "q")
    _wait_for(session, "EXITED-0")
