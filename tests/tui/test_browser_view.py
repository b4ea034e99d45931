"""The browser view: ``spendtrace-tui --serve`` loaded in headless Chromium shows the Live screen of the same store.

Chromium is driven over the DevTools protocol (aiohttp's websocket client, which textual-serve
already needs): a plain ``--screenshot`` fires before the websocket app has drawn anything. The
terminal's text is read from xterm.js's own buffer; xterm.js keeps its Terminal object private, so
a script installed before the page loads notes every object that gets a ``_core`` (the public
Terminal does, in its constructor). The screenshot is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumers.cli import build_parser as build_parser_consumer
from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from tui.cli import build_parser
from tui.format import money
from tui.serve import app_command, public_url_for

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FEATURES = ("browser_recommend", "browser_search", "browser_checkout")
DEADLINE_S = 90.0

#: Runs before the page's scripts: remember every object that is given a ``_core`` property.
_HOOK = r"""
(() => {
  const seen = [];
  Object.defineProperty(window, "__spendtraceTerminals", {value: seen});
  Object.defineProperty(Object.prototype, "_core", {
    configurable: true,
    get() { return undefined; },
    set(v) {
      seen.push(this);
      Object.defineProperty(this, "_core", {value: v, writable: true, configurable: true, enumerable: true});
    },
  });
})();
"""

#: The rows xterm.js shows, as text (null until the terminal exists).
_READ_SCREEN = r"""
(() => {
  const t = (window.__spendtraceTerminals || []).find(o => o && o._addonManager && o.buffer);
  if (!t) return null;
  const b = t.buffer.active, rows = [];
  for (let y = 0; y < t.rows; y++) {
    const line = b.getLine(b.viewportY + y);
    rows.push(line ? line.translateToString(true) : "");
  }
  return rows.join("\n");
})()
"""


def _store(db: Path) -> tuple[int, int]:
    """Write a few requests from the last minutes through the real ingest path; return (spans, cost_nano)."""
    now = time.time_ns()
    spans: list[Span] = []
    for r in range(30):
        rid = f"browser-req-{r:03d}"
        feature = FEATURES[r % len(FEATURES)]
        t = now - (20 - r % 20) * 60 * 10**9
        usage = (
            UsageItem("bedrock_claude_3_haiku", input_tokens=500 + r, output_tokens=80)
            if feature == "browser_recommend"
            else UsageItem("dynamodb_read", count=float(1 + r % 4))
        )
        spans.append(Span(f"{rid}-0", None, rid, "api", None, "/api/x", "tenant-acme", t, 10**6, 0, path=("api",)))
        spans.append(
            Span(f"{rid}-1", f"{rid}-0", rid, feature, "op", "/api/x", "tenant-acme", t + 1, 10**6, 0,
                 usage=(usage,), path=("api", feature))
        )  # fmt: skip
    prepared = prepare_batch(spans, PriceBook.default())
    conn = connect(db)
    try:
        write_batch_sync(conn, prepared)
    finally:
        conn.close()
    return len(spans), int(prepared.cost_nano)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _serving(db: Path, log: Path, extra: Sequence[str] = ()) -> Iterator[str]:
    """``spendtrace-tui --serve`` on a free loopback port, as a subprocess; yields its URL once it answers."""
    port = _free_port()
    cmd = [sys.executable, "-m", "tui.cli", "--serve", "--port", str(port), "--db", str(db), "--refresh", "0.5",
           *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, f"the server exited with {proc.returncode}: {log.read_text()}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"the server did not listen within {DEADLINE_S}s: {log.read_text()}"
                time.sleep(0.1)
        yield url
    finally:
        _stop(proc)


class _DevTools:
    """The few DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:  # events arrive in between; the answer carries our id
            msg = json.loads(await self.ws.receive_str(timeout=DEADLINE_S))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


@asynccontextmanager
async def _chromium(profile: Path) -> AsyncIterator[_DevTools]:
    """Headless Chromium with remote debugging on a port it picks; yields its first page."""
    argv = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1400,900",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # the page's web font: no network
        "--remote-debugging-port=0", "about:blank",
    ]  # fmt: skip
    # Chromium puts its singleton socket in a directory under TMPDIR and leaves it when stopped: give it
    # a short one of its own (a socket path must fit in 108 bytes) and remove that afterwards.
    scratch = tempfile.mkdtemp(prefix="chromium-")
    env = {**os.environ, "TMPDIR": scratch}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + DEADLINE_S
        while not (active.exists() and "\n" in active.read_text()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.05)
        port = int(active.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield _DevTools(ws)
    finally:
        _stop(proc)
        shutil.rmtree(scratch, ignore_errors=True)


async def _screen_when(devtools: _DevTools, ready: Any) -> str:
    """Poll the terminal's text until ``ready(text)`` holds; fail with the last text seen after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    text = None
    while time.monotonic() < deadline:
        text = await devtools.evaluate(_READ_SCREEN)
        if text and ready(text):
            return str(text)
        await asyncio.sleep(0.2)
    raise AssertionError(f"the Live screen did not appear within {DEADLINE_S}s; the page showed:\n{text}")


async def test_browser_view_shows_live_screen(db_path: Path, tmp_path: Path) -> None:
    """The served page, opened in headless Chromium, shows the Live screen with the store's features and total."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: this test needs Debian's chromium package (CI installs it with "
        "`apt-get install chromium`)"
    )
    n_spans, cost_nano = _store(db_path)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "browser-view-live.png"
    shot.unlink(missing_ok=True)
    log = tmp_path / "serve.log"
    with _serving(db_path, log) as url:
        async with _chromium(tmp_path / "chromium-profile") as devtools:
            await devtools.call("Page.enable")
            await devtools.call("Page.addScriptToEvaluateOnNewDocument", source=_HOOK)
            await devtools.call("Page.navigate", url=url)
            # the page paints as output arrives: wait for the tab bar too, not only the table and header
            text = await _screen_when(
                devtools,
                lambda t: all(f in t for f in FEATURES) and f"{n_spans} spans" in t and "2 Tenants" in t,
            )
            png = await devtools.call("Page.captureScreenshot", format="png")
    shot.write_bytes(base64.b64decode(png["data"]))
    lines = text.splitlines()
    where = f"(screenshot: {shot}; server log: {log})\n{text}"
    assert f"total {money(cost_nano)}" in lines[0], where
    tabs = next(i for i, line in enumerate(lines) if "1 Live" in line and "2 Tenants" in line)
    underline = lines[tabs + 1]
    assert underline.lstrip().startswith("╸") and underline.index("╺") < lines[tabs].index("2 Tenants"), where
    header = next((line for line in lines if line.split()[:1] == ["Feature"]), None)
    assert header is not None and "Direct" in header and "Loaded" in header, where
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", where


def test_serve_binds_loopback_and_runs_the_same_app() -> None:
    """``--serve`` binds 127.0.0.1:8080 by default, and each session runs spendtrace-tui on the same database file."""
    args = build_parser().parse_args(["--serve", "--db", "rel.db"])
    assert (args.serve, args.host, args.port) == (True, "127.0.0.1", 8080)
    command = app_command("rel.db", ["--refresh", "1"])
    assert command.split()[1:] == ["-m", "tui.cli", "--db", os.path.abspath("rel.db"), "--refresh", "1"]
    assert shutil.which(command.split()[0]) or Path(command.split()[0]).exists()
    assert public_url_for("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert public_url_for("0.0.0.0", 8080) == "http://localhost:8080"  # a browser cannot open 0.0.0.0
    assert public_url_for("::1", 9000) == "http://[::1]:9000"
    assert public_url_for("0.0.0.0", 8080, "https://spend.example.com/") == "https://spend.example.com"


def test_compose_dashboard_serves_the_workers_database() -> None:
    """compose.yaml's dashboard runs ``spendtrace-tui --serve`` on port 8080 over the store the workers write."""
    import yaml

    services = yaml.safe_load((ARTIFACTS.parent / "compose.yaml").read_text())["services"]
    dashboard = services["dashboard"]
    command = dashboard["command"]
    assert command[0] == "spendtrace-tui"
    args = build_parser().parse_args(command[1:])
    assert args.serve and args.port == 8080 and args.host == "0.0.0.0"
    assert public_url_for(args.host, args.port) == "http://localhost:8080"
    consumer = build_parser_consumer().parse_args(services["consumer"]["command"][1:])
    assert args.store == consumer.store and args.store.startswith("clickhouse://")  # a server: many processes
    assert any(str(p).endswith(":8080:8080") for p in dashboard["ports"])


async def _first_output(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Wait for the session's app to send its first bytes (proof the session is live)."""
    msg = await ws.receive(timeout=DEADLINE_S)
    assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), msg


async def test_serve_refuses_websockets_from_another_origin(db_path: Path, tmp_path: Path) -> None:
    """A websocket whose Origin is another site gets 403 and no app process; the served origin and its
    loopback aliases are accepted."""
    _store(db_path)
    log = tmp_path / "serve.log"
    with _serving(db_path, log) as url:
        port = url.rstrip("/").rsplit(":", 1)[1]
        ws_url = f"ws://127.0.0.1:{port}/ws?width=80&height=24"
        async with aiohttp.ClientSession() as session:
            for evil in ("http://evil.example", f"http://127.0.0.1:{int(port) + 1}", f"https://127.0.0.1:{port}",
                         "null"):
                try:
                    async with session.ws_connect(ws_url, origin=evil):
                        raise AssertionError(f"a websocket from Origin {evil} was accepted")
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 403, evil
            for good in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
                async with session.ws_connect(ws_url, origin=good) as ws:
                    await _first_output(ws)
    assert "refused a websocket from Origin 'http://evil.example'" in log.read_text()


async def test_serve_caps_concurrent_sessions(db_path: Path, tmp_path: Path) -> None:
    """With --max-sessions 2 a third session is refused with 503 and a message naming the option, on the page
    and on the websocket; once a session ends a new one is served."""
    _store(db_path)
    log = tmp_path / "serve.log"
    with _serving(db_path, log, ["--max-sessions", "2"]) as url:
        origin = url.rstrip("/")
        ws_url = f"{origin.replace('http', 'ws', 1)}/ws?width=80&height=24"
        async with aiohttp.ClientSession() as session:
            first = await session.ws_connect(ws_url, origin=origin)
            second = await session.ws_connect(ws_url, origin=origin)
            await _first_output(first)
            await _first_output(second)
            try:
                await session.ws_connect(ws_url, origin=origin)
                raise AssertionError("a third session was accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 503
            async with session.get(url) as resp:
                assert resp.status == 503 and "--max-sessions 2" in await resp.text()
            await first.close()
            deadline = time.monotonic() + DEADLINE_S
            while True:  # the server notices the close and stops that session's app
                async with session.get(url) as resp:
                    if resp.status == 200:
                        break
                assert time.monotonic() < deadline, "the closed session was never released"
                await asyncio.sleep(0.1)
            async with session.ws_connect(ws_url, origin=origin) as third:
                await _first_output(third)
            await second.close()
    assert "refused a browser session: 2 of --max-sessions 2 already open" in log.read_text()


def test_max_sessions_option_defaults_and_refuses_zero() -> None:
    """--max-sessions defaults to 4 and must be at least 1."""
    assert build_parser().parse_args(["--serve"]).max_sessions == 4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--serve", "--max-sessions", "0"])
