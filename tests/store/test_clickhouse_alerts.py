"""Alert state kept in ClickHouse itself (schema v5): what its claims guarantee, and the CLI on it.

The contract suite (``tests/server/test_alert_store_contract.py``) shows one firing among eight
racing connections; these tests pin down how: a claim is for *the firing after the one the caller
saw*, so a caller that read a stale state loses, a lower budget step marked by a higher one cannot
fire afterwards, and each claim leaves exactly one row whoever made it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from store_backends import chdb_url

from spendtrace.server.model.alerts import AlertRule
from spendtrace.server.store.base import open_alert_store
from spendtrace.server.store.clickhouse._alerts import ClickHouseAlertStore
from spendtrace.server.store.clickhouse._client import connect

NS = 1_000_000_000
MIN = 60 * NS
SECRET = "https://hooks.slack.com/services/T000/B000/sEcReTtOkEn123"


def _rule(store: ClickHouseAlertStore, name: str = "r") -> AlertRule:
    return store.save_rule(
        name=name, kind="budget", scope="total", scope_value="", threshold_nano=100 * NS, window_minutes=None,
        cooldown_minutes=0, params={}, webhook=None, webhook_format="slack", now_ns=1_000,
    )


def _count(url: str, sql: str) -> int:
    conn = connect(url, readonly=True)
    try:
        return int(conn.tuples(sql)[0][0])
    finally:
        conn.close()


def test_a_claim_made_on_a_stale_state_loses(tmp_path: Path) -> None:
    """A caller that saw "never fired" after another caller's firing makes a claim already taken: refused."""
    url = chdb_url(tmp_path)
    store = ClickHouseAlertStore(url)
    try:
        rule = _rule(store)
        assert store.claim_firing(rule, state_key="k", cooldown_ns=60 * MIN, fired_ns=MIN, value_nano=1,
                                  message="first") is not None
        # what a second worker does when its read of the state came before that firing landed
        assert store._claim_fire(rule.id, "k", None, 2 * MIN) is False
        # after the cooldown the next firing is claimed against the one it follows
        assert store._claim_fire(rule.id, "k", MIN, 62 * MIN) is True
        assert store._claim_fire(rule.id, "k", MIN, 63 * MIN) is False
        assert store.last_fired(rule.id, ["k"]) == {"k": 62 * MIN}
        assert store.count_events() == 1  # the bare claims above stored no event
    finally:
        store.close()
    assert _count(url, "SELECT count() FROM alert_claims WHERE rule_id > 0") == 2  # one row per claim taken


def test_last_fired_may_be_stale_for_a_moment_and_the_claim_decides(tmp_path: Path) -> None:
    """A store's ``last_fired`` serves a copy up to FIRED_TTL_S old (one query per round, not per rule):
    another worker's firing may not show in it yet, but this store's claim of that crossing still loses."""
    url = chdb_url(tmp_path)
    a, b = ClickHouseAlertStore(url), ClickHouseAlertStore(url)
    try:
        rule = _rule(a)
        assert a.last_fired(rule.id, [""]) == {}  # a's copy: nothing fired
        assert b.claim_firing(rule, state_key="", cooldown_ns=60 * MIN, fired_ns=MIN, value_nano=1,
                              message="b") is not None
        seen = a.last_fired(rule.id, [""])
        assert seen in ({}, {"": MIN})  # stale or not, depending on the copy's age
        assert a.claim_firing(rule, state_key="", cooldown_ns=60 * MIN, fired_ns=2 * MIN, value_nano=1,
                              message="a") is None
        assert b.last_fired(rule.id, [""]) == {"": MIN}  # a store sees its own firing at once
        assert a.count_events() == 1
    finally:
        a.close()
        b.close()


def test_a_marked_lower_step_cannot_fire_from_a_stale_read(tmp_path: Path) -> None:
    """A 100% budget firing marks 50%: a caller that read 50% as never fired before the mark loses its claim."""
    store = ClickHouseAlertStore(chdb_url(tmp_path))
    try:
        rule = _rule(store)
        ev = store.claim_firing(rule, state_key="m:100", cooldown_ns=None, fired_ns=5 * MIN, value_nano=1,
                                message="100%", also_mark=("m:50",))
        assert ev is not None
        assert store._claim_fire(rule.id, "m:50", None, 6 * MIN) is False
        assert store.claim_firing(rule, state_key="m:50", cooldown_ns=None, fired_ns=7 * MIN, value_nano=1,
                                  message="50%") is None
        assert [e.message for e in store.events_after(0)] == ["100%"]
    finally:
        store.close()


def test_racing_stores_leave_one_event_row_and_distinct_event_ids(tmp_path: Path) -> None:
    """Eight connections fire eight rules at once (eight ids to hand out) and all race one crossing of a ninth."""
    url = chdb_url(tmp_path)
    stores = [ClickHouseAlertStore(url) for _ in range(8)]
    try:
        rules = [_rule(stores[0], f"r{i}") for i in range(9)]
        start = threading.Barrier(8)

        def fire(i: int) -> tuple[int | None, int | None]:
            s = stores[i]
            start.wait()
            own = s.claim_firing(rules[i], state_key="", cooldown_ns=MIN, fired_ns=MIN, value_nano=1, message="own")
            shared = s.claim_firing(rules[8], state_key="", cooldown_ns=MIN, fired_ns=MIN, value_nano=1,
                                    message="shared")
            return (own.id if own else None), (shared.id if shared else None)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(fire, range(8)))
        own_ids = [o for o, _ in results]
        shared_ids = [s for _, s in results if s is not None]
        assert None not in own_ids and len(shared_ids) == 1
        assert sorted([*own_ids, *shared_ids]) == list(range(1, 10))  # ids 1..9, none twice, none skipped
        assert _count(url, "SELECT count() FROM alert_events") == 9
        assert _count(url, f"SELECT count() FROM alert_events WHERE rule_id = {rules[8].id}") == 1
    finally:
        for s in stores:
            s.close()


def test_cli_alert_commands_on_a_chdb_store(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``spendtrace --store chdb://... alerts add/list/tail/remove`` work on the ClickHouse tables, secret masked."""
    from spendtrace.cli.main import main

    monkeypatch.chdir(tmp_path)  # where the default SQLite file would appear, were the URL ignored
    monkeypatch.delenv("SPENDTRACE_DB", raising=False)

    url = chdb_url(tmp_path)
    cli = ["--store", url]
    assert main([*cli, "alerts", "add", "--feature", "search", "--threshold", "10", "--webhook", SECRET,
                 "--name", "s10"]) == 0
    assert main([*cli, "alerts", "add", "--total", "--rate", "5", "--name", "spike"]) == 0
    assert main([*cli, "alerts", "list"]) == 0
    listing = capsys.readouterr().out
    assert "s10" in listing and "spike" in listing and "hooks.slack.com/services/" in listing
    assert "sEcReTtOkEn123" not in listing
    alerts = open_alert_store(url)
    try:
        (s10,) = [r for r in alerts.list_rules() if r.name == "s10"]
        assert s10.webhook == SECRET  # stored whole, shown masked
        assert alerts.claim_firing(s10, state_key="", cooldown_ns=MIN, fired_ns=MIN, value_nano=11 * NS,
                                   message="search over $10") is not None
    finally:
        alerts.close()
    assert main([*cli, "alerts", "tail", "--no-follow"]) == 0
    tail = capsys.readouterr().out
    assert "#1 search over $10 [pending]" in tail and "sEcReTtOkEn123" not in tail
    assert main([*cli, "alerts", "remove", "s10"]) == 0 and main([*cli, "alerts", "remove", "s10"]) == 1
    assert main([*cli, "alerts", "list", "--json"]) == 0
    assert '"spike"' in capsys.readouterr().out
    assert not (tmp_path / "cost_data.db").exists()


def test_a_chdb_stores_pre_v5_side_file_is_imported_once(tmp_path: Path) -> None:
    """Rules, firing state, events and deliveries of the old SQLite side file move into the tables, once."""
    from spendtrace.server.store.clickhouse._side_file import side_file
    from spendtrace.server.store.sqlite._alerts import SQLiteAlertStore

    url = chdb_url(tmp_path)
    path = side_file(url)
    assert path is not None
    old = SQLiteAlertStore(path)  # what a chDB store held before v5
    try:
        gone = _rule(old, "gone")  # type: ignore[arg-type]
        keep = old.save_rule(
            name="keep", kind="threshold", scope="feature", scope_value="search", threshold_nano=10 * NS,
            window_minutes=60, cooldown_minutes=60, params={"note": "x"}, webhook=SECRET, webhook_format="slack",
            now_ns=5_000,
        )
        first = old.claim_firing(keep, state_key="", cooldown_ns=60 * MIN, fired_ns=MIN, value_nano=11 * NS,
                                 message="first")
        assert first is not None and old.claim_delivery(first.id)
        old.record_delivery(first.id, attempt=1, status=500, error="HTTP 500", at_ns=2 * MIN)
        old.record_delivery(first.id, attempt=2, status=200, final="delivered", at_ns=3 * MIN)
        assert old.claim_firing(keep, state_key="", cooldown_ns=60 * MIN, fired_ns=70 * MIN, value_nano=12 * NS,
                                message="second") is not None
        assert old.remove_rule("gone")
        want = (old.list_rules(enabled_only=False), old.latest_events(), old.count_failed_deliveries())
    finally:
        old.close()
    store = ClickHouseAlertStore(url)
    try:
        assert (store.list_rules(enabled_only=False), store.latest_events(), store.count_failed_deliveries()) == want
        assert store.last_fired(keep.id, [""]) == {"": 70 * MIN}
        assert store.claim_firing(keep, state_key="", cooldown_ns=60 * MIN, fired_ns=100 * MIN, value_nano=1,
                                  message="in cooldown") is None
        again = store.claim_firing(keep, state_key="", cooldown_ns=60 * MIN, fired_ns=131 * MIN, value_nano=1,
                                   message="third")
        assert again is not None and again.id == 3
        new = _rule(store, "new")
        assert new.id > max(gone.id, keep.id)  # no id of the old file is handed out again
    finally:
        store.close()
    assert not Path(path).exists() and Path(path + ".imported").exists()
    ClickHouseAlertStore(url).close()  # a second open imports nothing
    assert _count(url, "SELECT count() FROM alert_events") == 3
    assert _count(url, "SELECT count() FROM alert_rules FINAL WHERE deleted = 0") == 2


def test_a_new_chdb_directory_is_private_and_an_open_one_is_warned_about(tmp_path: Path) -> None:
    """Webhook URLs land in the engine's files: a directory spendtrace creates is 0700, and storing webhooks in
    one other users can enter logs one WARNING (in a child process: chDB takes one directory per process)."""
    import os
    import subprocess
    import sys

    script = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from spendtrace.server.store.base import open_alert_store
s = open_alert_store("chdb://" + sys.argv[1])
for name in ("x", "y"):
    s.save_rule(name=name, kind="threshold", scope="total", scope_value="", threshold_nano=1, window_minutes=1,
                cooldown_minutes=1, params={}, webhook="https://hooks.example.com/s3cr3t", webhook_format="slack",
                now_ns=1)
s.close()
"""
    data = tmp_path / "fresh"

    def run() -> str:
        proc = subprocess.run([sys.executable, "-c", script, str(data)], capture_output=True, text=True,
                              timeout=120, check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    assert "other users can read" not in run()
    assert os.stat(data).st_mode & 0o777 == 0o700
    os.chmod(data, 0o755)
    err = run()
    assert err.count("which other users can read (mode 755): chmod 700 it") == 1 and "s3cr3t" not in err
