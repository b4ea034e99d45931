"""The call-tree view: what the request was (endpoint, tenant, start, duration) and a timing waterfall per span."""

from __future__ import annotations

import re
from pathlib import Path

from _snap import screen_text
from _tui_helpers import SIZE, settle, until

from spendtrace.schema import Span, UsageItem
from spendtrace.server.pricing import PriceBook
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from tui.messages import OpenRequest
from tui.screens.tree import RequestTreeScreen
from tui.widgets.call_tree import waterfall

MS = 1_000_000


def test_waterfall_places_each_span_where_it_ran() -> None:
    """Offset by the start, as long as the duration, at least one cell; the bar never spills past its width."""
    window = (1_000 * MS, 1_100 * MS)  # a 100 ms request
    assert waterfall(1_000 * MS, 100 * MS, window, 10).plain == "█" * 10
    assert waterfall(1_050 * MS, 20 * MS, window, 10).plain == "·····██···"
    assert waterfall(1_000 * MS, 0, window, 10).plain == "█·········"  # an instant span still shows
    assert waterfall(1_099 * MS, 50 * MS, window, 10).plain == "·········█"  # clipped at the end
    assert waterfall(5, 0, (5, 5), 4).plain == "█···"  # a zero-length request


async def test_tree_shows_the_request_and_aligned_waterfalls(tmp_path: Path, make_app) -> None:  # type: ignore[no-untyped-def]
    """Subtitle: endpoint, tenant, start and duration; every span's bar starts in one column and sits where it ran."""
    import time

    t0 = (time.time_ns() // 1_000_000_000 - 120) * 1_000_000_000
    common = {"request_id": "r-tree", "endpoint": "/api/recommend", "user_id": "tenant-[b]acme"}
    spans = [
        Span("a", None, feature="api", operation="handle", start_ns=t0, duration_ns=120 * MS, path=("api",),
             usage=(UsageItem("s3_get", count=1.0),), **common),
        Span("b", "a", feature="search", start_ns=t0 + 6 * MS, duration_ns=30 * MS, path=("api", "search"),
             usage=(UsageItem("dynamodb_read", count=3.0),), **common),
        Span("c", "b", feature="product_details", start_ns=t0 + 12 * MS, duration_ns=12 * MS,
             path=("api", "search", "product_details"), **common),
        Span("d", "a", feature="recommend", operation="bedrock", start_ns=t0 + 60 * MS, duration_ns=60 * MS,
             path=("api", "recommend"), usage=(UsageItem("dynamodb_read", count=1.0),), **common),
    ]  # fmt: skip
    db = tmp_path / "tree.db"
    conn = connect(str(db))
    write_batch_sync(conn, prepare_batch(spans, PriceBook.default()))
    conn.close()
    app = make_app(db)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.post_message(OpenRequest("r-tree"))
        await until(pilot, lambda: isinstance(app.screen, RequestTreeScreen) and bool(app.screen.roots), "tree")
        await pilot.pause()
        text = screen_text(app)
        subtitle = next(line for line in text.splitlines() if "request r-tree" in line)
        assert "/api/recommend" in subtitle and "tenant tenant-[b]acme" in subtitle  # names literal, not markup
        assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0 / 1e9)) in subtitle and "took 120.0ms" in subtitle
        bars = {}
        for line in text.splitlines():
            m = re.search(r"(api · handle|search|product_details|recommend · bedrock)\s+([·█]{8,})", line)
            if m:
                bars[m.group(1)] = (m.start(2), m.group(2))
        assert set(bars) == {"api · handle", "search", "product_details", "recommend · bedrock"}
        assert len({col for col, _ in bars.values()}) == 1, bars  # one column, whatever the depth
        width = len(bars["api · handle"][1])
        assert bars["api · handle"][1] == "█" * width
        rec = bars["recommend · bedrock"][1]
        assert rec.index("█") == width // 2 and rec.endswith("█")  # the second half of the request
        search = bars["search"][1]
        assert search.index("█") < width // 10 + 1 and search.rstrip("·").count("█") <= width // 4 + 1
