"""``spendtrace demo`` end to end in a real terminal: one command, live spend, a fired alert, clean exit."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from _tmux_helpers import _tmux, _wait_for


def test_spendtrace_demo_one_command(session: str, tmp_path: Path) -> None:
    """The demo starts broker, worker and shop, shows spend per feature, fires its alert, and stops it all on q.

    It also backfills four weeks of history first: Trends has weeks of days, and the past spike (an
    hour or more ago) does not trip the live alert rule: only the live spike does.
    """
    started_ns = time.time_ns()
    exe = Path(sys.executable).with_name("spendtrace")
    base = str(exe) if exe.exists() else f"{sys.executable} -m spendtrace"
    db = tmp_path / "demo.db"
    scratch = tmp_path / "tmp"  # the demo's temporary folder (logs) goes here, so the test can see it removed
    scratch.mkdir()
    cmd = f"env -u COLUMNS -u LINES TMPDIR={scratch} {base} demo --spike-after 2 --rate 30 --demo-db {db}"
    _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "40", f"{cmd}; echo EXITED-$?; sleep 60")
    live = _wait_for(session, "ai_recommendations", timeout=90)
    assert "Direct" in live and "broker 127.0.0.1:" in live
    _wait_for(session, "product_details", timeout=60)  # nested features arrive through the workers
    _tmux("send-keys", "-t", session, "5")
    _wait_for(session, "fired alerts")
    # the shop's cost spike trips the rule: an event's message, not the rule's row (which names the scope too)
    _wait_for(session, "[spendtrace] demo-recs-spike", timeout=120)
    _tmux("send-keys", "-t", session, "6")
    trends = _wait_for(session, "Per day")
    assert "ai_recommendations" in trends
    _tmux("send-keys", "-t", session, "q")
    done = _wait_for(session, "EXITED-0", timeout=60)
    assert "stopped everything it started" in done
    assert db.exists()
    assert not any(scratch.glob("spendtrace-demo-*")), "the demo left its log folder behind"
    from spendtrace.server.store.base import open_alert_store, open_store

    with open_store(db, readonly=True) as store:
        days = [d for d in store.get_cost_trend(days=35) if d["cost_nano"] > 0]
    assert len(days) >= 28, f"history backfilled {len(days)} days with spend"
    events = open_alert_store(db, readonly=True)
    try:
        fired = [e.fired_ns for e in events.latest_events(10)]
    finally:
        events.close()
    assert fired and min(fired) >= started_ns + 2 * 10**9, "the alert fired before the live spike"
