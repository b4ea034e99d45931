"""``spendtrace-tui --serve``: the same Textual app in a web browser, through ``textual-serve``.

textual-serve runs one app process per browser tab (the real ``spendtrace-tui`` command line, on
the same database) and relays its terminal over a websocket to xterm.js in the page. It binds to
loopback by default: the dashboard shows every tenant's spend and has no login of its own.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["app_command", "public_url_for", "serve"]

#: Addresses that mean "every interface": a browser cannot connect to them, so the page needs another URL.
_WILDCARDS = {"0.0.0.0", "::", "[::]", ""}


def app_command(db: str | Path, extra: Sequence[str] = ()) -> str:
    """The shell command textual-serve starts per browser session: this interpreter running ``spendtrace-tui``.

    The database path is made absolute so the app reads the same file whatever its working directory.
    """
    argv = [sys.executable, "-m", "tui.cli", "--db", str(Path(db).resolve()), *extra]
    return shlex.join(argv)


def public_url_for(host: str, port: int, public_url: str | None = None) -> str:
    """The URL the page uses to reach the server (its websocket address is derived from it).

    A wildcard bind (``0.0.0.0``, as in compose) is reached through ``localhost`` unless told otherwise.
    """
    if public_url:
        return public_url.rstrip("/")
    if host in _WILDCARDS:
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


def serve(
    db: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    public_url: str | None = None,
    app_args: Sequence[str] = (),
) -> None:
    """Serve the TUI on ``db`` at ``http://host:port`` until SIGINT / SIGTERM (blocks).

    ``app_args`` are passed on to every app process (``--refresh``, ``--bootstrap`` ...).
    Needs ``textual-serve`` (the ``[tui]`` extra).
    """
    try:
        from textual_serve.server import Server
    except ImportError as exc:
        raise ImportError("spendtrace-tui --serve needs textual-serve: pip install 'spendtrace[tui]'") from exc
    command = app_command(db, app_args)
    url = public_url_for(host, port, public_url)
    server = Server(command, host=host, port=port, title="spendtrace", public_url=url)
    server.serve()
