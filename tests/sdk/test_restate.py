"""Restating history: atomic, recorded, consistent across tables, and undone exactly."""

from __future__ import annotations

import json
import sqlite3
from fractions import Fraction
from pathlib import Path

import pytest
from test_ingest import BOOK, make_spans, ns, write_in_batches

from spendtrace import ConfigError, StorageError
from spendtrace.server.store.sqlite import _restate as restate_mod
from spendtrace.server.store.sqlite._db import connect
from spendtrace.server.store.sqlite._ingest import prepare_batch, write_batch_sync
from spendtrace.server.store.sqlite._restate import restate_historical_costs, undo_restatement

MONEY_TABLES = (
    "spans",
    "requests",
    "rollup_minute",
    "rollup_hour",
    "rollup_day",
    "loaded_minute",
    "loaded_hour",
    "loaded_day",
)


def dump(conn: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table that holds money, in a stable order (dashboard sums: their money column)."""
    out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in MONEY_TABLES}
    for t in ("dash_hour", "dash_day"):
        out[t] = conn.execute(f"SELECT dim, service, value, bucket, cost_nano FROM {t} ORDER BY 1, 2, 3, 4").fetchall()
    return out


def stored(tmp_path: Path, n: int = 80) -> sqlite3.Connection:
    """A database holding ``n`` request trees spread over 2024-10-31 .. 2026-03-02."""
    conn = connect(tmp_path / "cost_data.db")
    write_in_batches(conn, make_spans(n, seed=21), 50)
    return conn


def day_total(conn: sqlite3.Connection, lo: int, hi: int, service: str = "") -> int:
    """Sum of daily rollup cost in [lo, hi) ns for one service row kind."""
    return int(
        conn.execute(
            "SELECT coalesce(sum(cost_nano), 0) FROM rollup_day WHERE service = ? AND bucket >= ? AND bucket < ?",
            (service, lo // 10**9, hi // 10**9),
        ).fetchone()[0]
    )


def test_a_restatement_scales_the_range_and_nothing_else(tmp_path: Path) -> None:
    """Costs inside [start, end) are scaled per item with half-even rounding; outside they are untouched."""
    conn = stored(tmp_path)
    before = dump(conn)
    lo, hi = ns(2026, 3, 1, 0), ns(2026, 3, 2, 0)
    rid = restate_historical_costs(
        conn, factor=1.0466, start_date="2026-03-01", end_date="2026-03-02", who="alice", why="Feb bill"
    )
    f = Fraction(1.0466)
    old_spans = {r[0]: r for r in before["spans"]}
    changed = 0
    for row in conn.execute("SELECT span_id, start_ns, usage, cost_nano FROM spans"):
        span_id, start, usage_text, cost = row
        old_usage = json.loads(old_spans[span_id][14])
        usage = json.loads(usage_text)
        if lo <= start < hi:
            for old_item, item in zip(old_usage, usage, strict=True):
                assert item["cost_nano"] == round(f * old_item["cost_nano"])
            assert cost == sum(i["cost_nano"] for i in usage)
            changed += cost != old_spans[span_id][15]
        else:
            assert (usage_text, cost) == (old_spans[span_id][14], old_spans[span_id][15])
    assert changed > 0
    old_total = sum(r[5] for r in before["rollup_day"] if r[4] == "" and lo // 10**9 <= r[0] < hi // 10**9)
    assert abs(day_total(conn, lo, hi) - old_total * f) <= 1 * len(before["rollup_day"])
    assert day_total(conn, ns(2024, 10, 1), ns(2025, 1, 1)) == sum(
        r[5] for r in before["rollup_day"] if r[4] == "" and r[0] < ns(2025, 1, 1) // 10**9
    )
    row = conn.execute(
        "SELECT who, why, start_date, end_date, factor, spans_changed, undone_ns FROM restatements WHERE id = ?",
        (rid,),
    ).fetchone()
    assert row == ("alice", "Feb bill", "2026-03-01", "2026-03-02", 1.0466, changed, None)


def test_undo_restores_every_money_column_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restatement followed by its undo leaves every money table byte-identical (work done in small chunks)."""
    monkeypatch.setattr(restate_mod, "_CHUNK", 7)  # many chunks: updates interleave with the reading cursor
    conn = stored(tmp_path)
    before = dump(conn)
    rid = restate_historical_costs(
        conn, factor=0.93, factors={"bedrock": 1.21}, start_date="2024-10-01", end_date="2026-03-03"
    )
    restated = dump(conn)
    assert restated != before
    in_range = conn.execute("SELECT count(*) FROM spans WHERE cost_nano > 0").fetchone()[0]
    changed = conn.execute("SELECT spans_changed FROM restatements WHERE id = ?", (rid,)).fetchone()[0]
    assert changed == in_range > 7  # every priced span in the range was rewritten, across chunks
    assert undo_restatement(conn, rid) > 0
    assert dump(conn) == before
    assert conn.execute("SELECT undone_ns IS NOT NULL FROM restatements WHERE id = ?", (rid,)).fetchone() == (1,)
    with pytest.raises(StorageError, match="already undone"):
        undo_restatement(conn, rid)


def test_per_service_factors_keep_span_rows_the_sum_of_service_rows(tmp_path: Path) -> None:
    """With per-service factors each service row scales by its own factor and '' rows stay their sum."""
    conn = stored(tmp_path)
    lo, hi = ns(2026, 3, 1, 0), ns(2026, 3, 3, 0)
    old = {s: day_total(conn, lo, hi, s) for s in ("dynamodb", "bedrock", "s3", "lambda")}
    restate_historical_costs(
        conn, factors={"dynamodb": 2.0, "bedrock": 0.5}, start_date="2026-03-01", end_date="2026-03-03"
    )
    assert day_total(conn, lo, hi, "dynamodb") == 2 * old["dynamodb"]
    assert abs(day_total(conn, lo, hi, "bedrock") - old["bedrock"] / 2) <= 50
    assert day_total(conn, lo, hi, "s3") == old["s3"] and day_total(conn, lo, hi, "lambda") == old["lambda"]
    for grain in ("minute", "hour", "day"):
        mismatched = conn.execute(
            f"SELECT count(*) FROM rollup_{grain} r WHERE service = '' AND cost_nano != ("
            f"SELECT coalesce(sum(cost_nano), 0) FROM rollup_{grain} s WHERE s.service != '' AND s.bucket = r.bucket "
            "AND s.feature = r.feature AND s.user_id = r.user_id AND s.endpoint = r.endpoint)"
        ).fetchone()[0]
        assert mismatched == 0, grain
    # spans and requests agree: every request's cost is the sum of its spans'
    bad = conn.execute(
        "SELECT count(*) FROM requests q WHERE cost_nano != (SELECT sum(cost_nano) FROM spans s "
        "WHERE s.request_id = q.request_id)"
    ).fetchone()[0]
    assert bad == 0


def test_a_failure_mid_restatement_changes_nothing(tmp_path: Path) -> None:
    """If one row cannot be restated the whole restatement rolls back and is not recorded."""
    conn = stored(tmp_path)
    victim = conn.execute("SELECT span_id FROM spans WHERE start_ns >= ? LIMIT 1", (ns(2026, 3, 2, 0),)).fetchone()[0]
    conn.execute('UPDATE spans SET usage = \'[{"priced": true, "cost_nano": "x"\' WHERE span_id = ?', (victim,))
    before = dump(conn)
    with pytest.raises(ValueError):
        restate_historical_costs(conn, factor=3.0, start_date="2024-01-01", end_date="2027-01-01")
    assert dump(conn) == before
    assert conn.execute("SELECT count(*) FROM restatements").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM restatement_undo").fetchone() == (0,)


def test_late_spans_survive_an_undo(tmp_path: Path) -> None:
    """Spans ingested after a restatement keep their cost when it is undone; only its own delta goes."""
    conn = stored(tmp_path, n=30)
    lo, hi = ns(2026, 3, 1, 0), ns(2026, 3, 3, 0)
    base = day_total(conn, lo, hi)
    rid = restate_historical_costs(conn, factor=2.0, start_date="2026-03-01", end_date="2026-03-03")
    assert day_total(conn, lo, hi) == 2 * base
    late = [s for s in make_spans(20, seed=99) if lo <= s.start_ns < hi]
    added = write_batch_sync(conn, prepare_batch(late, BOOK)).cost_nano
    assert added > 0
    undo_restatement(conn, rid)
    assert day_total(conn, lo, hi) == base + added


def test_undo_order_and_validation(tmp_path: Path) -> None:
    """An older restatement under a newer overlapping one cannot be undone first; bad arguments are refused."""
    conn = stored(tmp_path, n=10)
    first = restate_historical_costs(conn, factor=1.5, start_date="2026-03-01", end_date="2026-03-03")
    second = restate_historical_costs(conn, factor=0.5, start_date="2026-03-02", end_date="2026-03-04")
    with pytest.raises(StorageError, match=f"restatement {second} overlaps {first}"):
        undo_restatement(conn, first)
    undo_restatement(conn, second)
    undo_restatement(conn, first)
    with pytest.raises(StorageError, match="no restatement"):
        undo_restatement(conn, 12345)
    with pytest.raises(ConfigError, match="factor"):
        restate_historical_costs(conn, start_date="2026-03-01", end_date="2026-03-02")
    with pytest.raises(ConfigError, match="exclusive"):
        restate_historical_costs(conn, factor=1.1, start_date="2026-03-02", end_date="2026-03-02")
    with pytest.raises(ConfigError, match=">= 0"):
        restate_historical_costs(conn, factor=-1.0, start_date="2026-03-01", end_date="2026-03-02")
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        restate_historical_costs(conn, factor=1.1, start_date="March", end_date="2026-03-02")
