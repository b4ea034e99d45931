"""``spendtrace-tui --serve``: the same Textual app in a web browser, through ``textual-serve``.

textual-serve runs one app process per browser tab (the real ``spendtrace-tui`` command line, on
the same database) and relays its terminal over a websocket to xterm.js in the page. It binds to
loopback by default: the dashboard shows every tenant's spend and has no login of its own.

Two guards sit in front of textual-serve's websocket handshake (``Server.handle_websocket``, an
aiohttp handler): a websocket whose ``Origin`` is not the served URL's origin is refused with 403
(a web page the operator happens to open elsewhere cannot read the dashboard; loopback aliases
of a loopback URL, same scheme and port, count as the same origin), and at most ``max_sessions``
app processes run at once; past that, the page and the websocket answer 503 saying so.
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_MAX_SESSIONS", "allowed_origins", "app_command", "public_url_for", "serve"]

log = logging.getLogger("spendtrace.tui.serve")

#: Browser sessions (one app process each) served at once unless ``--max-sessions`` says otherwise.
DEFAULT_MAX_SESSIONS = 4
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

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


def _origin(url: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    host = (parts.hostname or "").lower()
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def allowed_origins(public_url: str) -> frozenset[str]:
    """The ``Origin`` values a websocket may come from: the served URL's, normalised (explicit port).

    A loopback URL also accepts its loopback aliases on the same scheme and port (one port, one server).
    """
    own = _origin(public_url)
    scheme, rest = own.split("://", 1)
    host, port = rest.rsplit(":", 1)
    if host in _LOOPBACK_NAMES:
        return frozenset(f"{scheme}://{h}:{port}" for h in _LOOPBACK_NAMES)
    return frozenset({own})


def _guarded_server(command: str, host: str, port: int, url: str, max_sessions: int) -> Any:
    """textual-serve's ``Server`` with the Origin check and the session cap in front of its handlers."""
    from aiohttp import web
    from textual_serve.server import Server

    origins = allowed_origins(url)

    class GuardedServer(Server):
        sessions = 0

        def _full(self) -> web.Response | None:
            if self.sessions < max_sessions:
                return None
            log.warning("refused a browser session: %d of --max-sessions %d already open", self.sessions, max_sessions)
            return web.Response(
                status=503, content_type="text/plain",
                text=f"spendtrace-tui --serve: {self.sessions} sessions are already open (--max-sessions "
                     f"{max_sessions}); close another tab, then reload this page.\n",
            )

        async def handle_index(self, request: web.Request) -> Any:
            return self._full() or await super().handle_index(request)

        async def handle_websocket(self, request: web.Request) -> Any:
            origin = request.headers.get("Origin")
            if origin is not None and _origin(origin) not in origins:
                log.warning("refused a websocket from Origin %r (serving %s)", origin[:200], url)
                return web.Response(status=403, content_type="text/plain",
                                    text=f"spendtrace-tui --serve: Origin {origin[:200]!r} is not {url}\n")
            full = self._full()
            if full is not None:
                return full
            self.sessions += 1
            try:
                return await super().handle_websocket(request)
            finally:
                self.sessions -= 1

    return GuardedServer(command, host=host, port=port, title="spendtrace", public_url=url)


def serve(
    db: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    public_url: str | None = None,
    app_args: Sequence[str] = (),
    max_sessions: int = DEFAULT_MAX_SESSIONS,
) -> None:
    """Serve the TUI on ``db`` at ``http://host:port`` until SIGINT / SIGTERM (blocks).

    ``app_args`` are passed on to every app process (``--refresh``, ``--bootstrap`` ...). Websockets
    from another Origin are refused, and at most ``max_sessions`` browser sessions run at once.
    Needs ``textual-serve`` (the ``[tui]`` extra).
    """
    if max_sessions < 1:
        raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
    try:
        import textual_serve.server  # noqa: F401
    except ImportError as exc:
        raise ImportError("spendtrace-tui --serve needs textual-serve: pip install 'spendtrace[tui]'") from exc
    command = app_command(db, app_args)
    url = public_url_for(host, port, public_url)
    _guarded_server(command, host, port, url, max_sessions).serve()
