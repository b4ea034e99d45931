"""``spendtrace demo`` / ``spendtrace-tui --demo``: one command that starts everything and opens the TUI.

It starts, in this order: the embedded Kafka-protocol broker, one consumer worker process
(``python -m consumers``: pricing, storage, alert evaluation), and the synthetic instrumented
shop (``python -m tui.demo_app``); adds spend alerts the shop's cost spike will trip (threshold,
rate against the backfilled history, daily budget); then runs the TUI on the demo database with
live alerts from the broker. Whatever happens, everything it started is stopped on exit (processes
first, then the broker), and a temporary store is removed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

#: The alert the demo's cost spike fires: Bedrock spend of ai_recommendations above $1 in an hour.
DEMO_RULE = {"feature": "ai_recommendations", "threshold": 1.0, "window_hours": 1, "name": "demo-recs-spike",
             "cooldown_minutes": 5}  # fmt: skip
#: The rate alert the spike fires: the spiking tenant's last hour against the same clock hour of the
#: backfilled history's last 7 days. The spike (~300 Sonnet calls at the default 20 requests a second)
#: costs tenant-globex about $29, while an hour of the live shop's normal traffic is about $9 and a
#: history hour at most about $1.50 (5x: $7.50): so the spike fires it, an hour of normal live traffic
#: does not, and without history (``--history-days 0``) there is no baseline and it never fires.
DEMO_RATE_RULE = {"factor": 5.0, "user_id": "tenant-globex", "min_spend": 10.0, "name": "demo-globex-rate"}
#: A daily budget for ai_recommendations: a weekday of history is about $11 and the spike about $37, so
#: the spike crosses 50% at any hour of the day, while the live shop alone takes a few hours to.
DEMO_BUDGET_RULE = {"amount": 50.0, "period": "day", "feature": "ai_recommendations", "percentages": (50, 100),
                    "name": "demo-recs-budget"}  # fmt: skip


def add_demo_rules(db_path: str | Path) -> None:
    """Save the demo's threshold, rate and budget rules (replacing them by name in a kept database)."""
    from spendtrace.server.alerts.rules import set_alert, set_budget, set_rate_alert

    set_alert(db_path=str(db_path), **DEMO_RULE)  # type: ignore[arg-type]
    set_rate_alert(db_path=str(db_path), **DEMO_RATE_RULE)  # type: ignore[arg-type]
    set_budget(db_path=str(db_path), **DEMO_BUDGET_RULE)  # type: ignore[arg-type]


class Demo:
    """The demo's background parts; ``start()`` brings them up, ``stop()`` takes them down (idempotent)."""

    def __init__(
        self, db: str | Path | None = None, *, rate: float = 20.0, spike_after: float = 20.0, history_days: int = 0
    ) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="spendtrace-demo-"))
        self.db_path = Path(db) if db else self._tmp / "demo.db"
        self.rate = rate
        self.spike_after = spike_after
        #: days of past traffic the shop backfills first (not into a kept database that already has data)
        self.history_days = history_days
        self.broker: Any = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._keep_db = db is not None
        #: set when a background process died, so ``stop`` leaves its log for the user to read
        self.keep_logs = False

    @property
    def bootstrap(self) -> str:
        """The broker's ``host:port``."""
        return str(self.broker.bootstrap)

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self._tmp / f"{name}.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def start(self) -> Demo:
        """Broker, topics, the alert rules, the worker and the shop; returns once all are running."""
        from spendtrace.server.broker import EmbeddedBroker
        from spendtrace.server.topics import ensure_topics

        if self.db_path.exists() and self.db_path.stat().st_size > 0:
            self.history_days = 0  # a kept demo database has its history already: never add it twice
        self.broker = EmbeddedBroker(log_path=self._tmp / "broker.log").start()
        topics = ["spendtrace.spans", "spendtrace.alerts", "spendtrace.dlq"]
        asyncio.run(ensure_topics(self.bootstrap, topics, partitions=3))
        add_demo_rules(self.db_path)
        self._spawn("worker", "-m", "consumers", "--bootstrap", self.bootstrap, "--db", str(self.db_path),
                    "--partitions", "3", "--log-level", "WARNING")  # fmt: skip
        history = ["--history-days", str(self.history_days), "--bill-out", str(self.bill_path)]
        self._spawn("shop", "-m", "tui.demo_app", "--bootstrap", self.bootstrap, "--rate", str(self.rate),
                    "--spike-after", str(self.spike_after), *(history if self.history_days > 0 else []))  # fmt: skip
        return self

    def check(self) -> list[str]:
        """Names of background processes that have exited (they should all still run)."""
        return [str(p.args[2]) for p in self.procs if p.poll() is not None]  # type: ignore[index]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the shop, then the worker (SIGTERM, then SIGKILL after ``timeout``), then the broker."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.keep_logs:
            if self._keep_db:  # the database lives elsewhere: only the logs are left here
                return
            (self._tmp / "demo.db").unlink(missing_ok=True)
            for suffix in ("-wal", "-shm"):
                (self._tmp / f"demo.db{suffix}").unlink(missing_ok=True)
            return
        shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def bill_path(self) -> Path:
        """The Cost Explorer response the shop writes for its history (what Reconciliation offers first)."""
        return self._tmp / "cost-explorer.json"

    @property
    def log_dir(self) -> Path:
        """Where the broker, worker and shop write their logs (removed by ``stop`` unless ``keep_logs``)."""
        return self._tmp

    def __enter__(self) -> Demo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_demo(
    db: str | Path | None = None,
    *,
    refresh: float = 0.25,
    rate: float = 20.0,
    spike_after: float = 20.0,
    history_days: int = 0,
) -> int:
    """Start the demo, run the TUI on it until the user quits, and stop everything."""
    from tui.app import SpendtraceApp

    print("spendtrace demo: starting the broker, a worker and the demo shop …", file=sys.stderr)
    with ExitStack() as stack:
        demo = stack.enter_context(Demo(db, rate=rate, spike_after=spike_after, history_days=history_days))
        bill = demo.bill_path if demo.history_days > 0 else None
        app = SpendtraceApp(demo.db_path, bootstrap=demo.bootstrap, refresh_interval=refresh, actuals_file=bill)
        app.run()
        dead = demo.check()
        demo.keep_logs = bool(dead)
    if dead:
        print(
            f"spendtrace demo: {', '.join(dead)} had stopped early; logs kept in {demo.log_dir}", file=sys.stderr
        )
    print("spendtrace demo: stopped everything it started", file=sys.stderr)
    return 0
