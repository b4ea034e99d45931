"""The TUI's writes (alert rules, restatements), done through the spendtrace API when it is there.

No textual import: these run in thread workers. Each returns a short human message or raises
``SpendtraceError`` / ``ValueError`` with one the UI can show.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["add_rule", "remove_rule", "restate", "run_reconcile"]


def add_rule(
    db_path: str | Path,
    *,
    name: str,
    scope: str,
    scope_value: str,
    threshold_usd: float,
    window_hours: float,
    webhook: str | None,
    kind: str = "threshold",
    period: str = "month",
    factor: float = 3.0,
) -> str:
    """Create (or replace) a rule: ``threshold`` (spend over ``window_hours`` above ``threshold_usd``),
    ``budget`` (``threshold_usd`` per ``period``) or ``rate`` (the last hour ``factor`` times its usual
    level, once it is at least ``threshold_usd``)."""
    from spendtrace.server.alerts.rules import set_alert, set_budget, set_rate_alert

    if scope != "total" and not scope_value:
        raise ValueError(f"a {scope} rule needs a {scope} name")
    kwargs: dict[str, Any] = {"db_path": str(db_path)}
    if scope == "total":
        kwargs["total"] = True
    else:
        kwargs[{"feature": "feature", "user": "user_id", "endpoint": "endpoint"}[scope]] = scope_value
    if webhook:
        kwargs["webhook"] = webhook
    if name:
        kwargs["name"] = name
    if kind == "budget":
        set_budget(threshold_usd, period, **kwargs)  # type: ignore[arg-type]
    elif kind == "rate":
        set_rate_alert(factor, min_spend=threshold_usd, **kwargs)
    elif kind == "threshold":
        set_alert(threshold=threshold_usd, window_hours=window_hours, **kwargs)
    else:
        raise ValueError(f"unknown rule kind {kind!r}")
    return f"{kind} rule {name or scope_value or 'total'} saved"


def remove_rule(db_path: str | Path, name: str) -> str:
    """Delete the rule called ``name``."""
    from spendtrace.server.alerts.rules import remove_alert

    if not remove_alert(name, db_path=str(db_path)):
        raise ValueError(f"no alert rule named {name!r}")
    return f"alert rule {name} removed"


def run_reconcile(
    db_path: str | Path, start: str, end: str, actuals_file: str | None, now_ns: int | None = None
) -> dict[str, Any]:
    """Run ``spendtrace.server.reconcile.report.reconcile`` (as of ``now_ns``, default now); its report as a dict."""
    try:
        mod = importlib.import_module("spendtrace.server.reconcile.report")
    except ImportError as exc:
        raise ValueError("reconciliation is not available in this build (spendtrace.reconcile missing)") from exc
    kwargs: dict[str, Any] = {"db_path": str(db_path), "start": start, "end": end}
    if now_ns is not None:
        kwargs["now"] = now_ns
    if actuals_file:
        kwargs["actuals_file"] = actuals_file
    report = mod.reconcile(**kwargs)
    data: dict[str, Any] = report.to_dict()
    data["_summary"] = report.summary() if hasattr(report, "summary") else ""
    return data


def restate(db_path: str | Path, factor: float, start: str, end: str) -> str:
    """Apply ``factor`` to stored costs between ``start`` and ``end`` (recorded and undoable)."""
    from spendtrace.server.store.base import open_store

    storage = open_store(str(db_path))
    try:
        result = storage.restate_historical_costs(factor=factor, start_date=start, end_date=end)
    finally:
        storage.close()
    return f"restated {start} → {end} by ×{factor:.4f}" + (f" ({result})" if result is not None else "")
