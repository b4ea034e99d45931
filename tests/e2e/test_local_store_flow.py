"""The no-Kafka setup end to end: recorded spans are readable at once in the same process; none is lost at exit.

Each app runs in a fresh interpreter in a temporary directory with no ``SPENDTRACE_*``
settings (``readme_examples.run_script``), so the SDK installs its default exporter, the
local SQLite store ``cost_data.db``, on the first span. Reads go through ``SQLiteStorage`` and
the module query functions with no call to ``flush``: they must deliver this process's
pending spans to the file they read before reading it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from readme_examples import price_nano, run_script, script

from spendtrace import SQLiteStorage

READ = price_nano("dynamodb_read", count=8)  # one "search" span
WRITE = price_nano("dynamodb_write", count=2)  # one "checkout" span
TOKENS = price_nano("bedrock_claude_3_haiku", input_tokens=400, output_tokens=80)  # one "chat" span
N_FIRST = 3000  # spans of each feature recorded before the first read
N_THREAD = 1500  # "chat" spans recorded by a worker thread before the first read
N_LATER = 6000  # spans of each feature recorded after the reads, just before exit

APP = script(
    """
    import json
    import os
    import threading

    from spendtrace import SQLiteStorage, add_api_call, cost_track, get_request_cost, track_request

    storage = SQLiteStorage("cost_data.db")   # opened at start-up, before any span exists

    @cost_track(feature="search")
    def search():
        add_api_call("dynamodb_read", count=8)

    @cost_track(feature="checkout")
    def checkout():
        add_api_call("dynamodb_write", count=2)

    @cost_track(feature="chat")
    def chat():
        add_api_call("bedrock_claude_3_haiku", input_tokens=400, output_tokens=80)

    def traffic(n):
        for i in range(n):
            with track_request(endpoint="/api/shop", user_id=f"tenant-{i % 3}"):
                search()
                checkout()

    def counts(rows):
        return {r["feature"]: [r["span_count"], r["cost_nano"]] for r in rows}
    """,
    f"""
    worker = threading.Thread(target=lambda: [chat() for _ in range({N_THREAD})])
    worker.start()
    traffic({N_FIRST})
    worker.join()
    # No flush anywhere: each read must already see every span recorded above.
    print(json.dumps(counts(storage.aggregate_by_feature())))
    print(json.dumps(counts(SQLiteStorage(os.path.abspath("cost_data.db")).aggregate_by_feature())))
    print(json.dumps(storage.total()["transaction_count"]))
    print(json.dumps(len(get_request_cost(limit=10_000))))
    traffic({N_LATER})   # then exit at once: the exporter must deliver these on the way out
    """,
)


def test_spans_are_visible_in_process_without_a_flush_and_all_survive_exit(tmp_path: Path) -> None:
    """Reads right after recording see every span, whatever object reads; after exit, a new process sees them all."""
    out = run_script(tmp_path, APP).stdout.splitlines()
    first = {"search": [N_FIRST, N_FIRST * READ], "checkout": [N_FIRST, N_FIRST * WRITE],
             "chat": [N_THREAD, N_THREAD * TOKENS]}  # fmt: skip
    assert json.loads(out[0]) == first  # the storage opened before any span existed
    assert json.loads(out[1]) == first  # a second storage naming the same file by its absolute path
    assert json.loads(out[2]) == 2 * N_FIRST + N_THREAD
    assert json.loads(out[3]) == N_FIRST + N_THREAD  # one request per traffic() iteration and per chat() root span

    n = N_FIRST + N_LATER
    with SQLiteStorage(tmp_path / "cost_data.db", readonly=True) as storage:
        rows = {r["feature"]: [r["span_count"], r["cost_nano"]] for r in storage.aggregate_by_feature()}
        users = {r["user_id"]: r["cost_nano"] for r in storage.aggregate_by_user()}
    assert rows == {"search": [n, n * READ], "checkout": [n, n * WRITE], "chat": [N_THREAD, N_THREAD * TOKENS]}
    per_tenant = n // 3 * (READ + WRITE)
    assert users == {"tenant-0": per_tenant, "tenant-1": per_tenant, "tenant-2": per_tenant, "": N_THREAD * TOKENS}


def test_a_second_process_appends_to_the_same_store_and_reads_both(tmp_path: Path) -> None:
    """Two app runs share the default store; the second reads its own spans and the first's at once."""
    record = script(
        "from spendtrace import add_api_call, cost_track",
        '@cost_track(feature="search")\ndef search():\n    add_api_call("dynamodb_read", count=8)',
        "for _ in range(500):\n    search()",
    )
    run_script(tmp_path, record)
    out = run_script(
        tmp_path,
        script(
            record, 'from spendtrace import SQLiteStorage\nprint(SQLiteStorage("cost_data.db").total()["cost_nano"])'
        ),
    ).stdout
    assert int(out) == 1000 * READ


def test_spans_an_app_could_not_store_before_exit_are_stored_by_the_next_run(tmp_path: Path) -> None:
    """With the store locked by another writer, an exiting app spills its spans; the next app run stores them all."""
    record = script(
        "import sys",
        "from spendtrace import add_api_call, configure, cost_track",
        "configure(exit_timeout=0.5)   # the default store; give up on it quickly at exit",
        '@cost_track(feature="search")\ndef search():\n    add_api_call("dynamodb_read", count=8)',
        "for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 2000):\n    search()",
    )
    SQLiteStorage(tmp_path / "cost_data.db").close()  # create the schema, then hold the write lock
    blocker = sqlite3.connect(tmp_path / "cost_data.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        run_script(tmp_path, record)
        assert blocker.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 0
    finally:
        blocker.close()
    # The next run of the app (one span, then it keeps reading for a while) replays the spill.
    poll = script(
        "import time",
        "from spendtrace import SQLiteStorage, add_api_call, cost_track",
        '@cost_track(feature="search")\ndef search():\n    add_api_call("dynamodb_read", count=8)',
        "search()",
        'storage = SQLiteStorage("cost_data.db")',
        "deadline = time.monotonic() + 60",
        "while storage.total()['transaction_count'] < 2001 and time.monotonic() < deadline:\n    time.sleep(0.05)",
        "print(storage.total()['cost_nano'])",
    )
    assert int(run_script(tmp_path, poll).stdout) == 2001 * READ


def test_spans_recorded_in_a_multiprocessing_child_are_stored_when_it_exits(tmp_path: Path) -> None:
    """A multiprocessing child (fork start method) that returns normally delivers its spans, as any exiting process."""
    code = script(
        "import multiprocessing",
        "from spendtrace import SQLiteStorage, add_api_call, cost_track",
        '@cost_track(feature="search")\ndef search():\n    add_api_call("dynamodb_read", count=8)',
        "def work(n):\n    for _ in range(n):\n        search()",
        "search()   # the parent records too, so its exporter thread exists when it forks",
        'child = multiprocessing.get_context("fork").Process(target=work, args=(500,))',
        "child.start()\nchild.join()",
        'print(child.exitcode, SQLiteStorage("cost_data.db").total()["transaction_count"])',
    )
    assert run_script(tmp_path, code).stdout.split() == ["0", "501"]
