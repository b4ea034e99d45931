"""Compare the modelled spend in the store with the AWS bill, per service and per feature.

``reconcile(db_path, start, end)`` reads modelled cost from the day rollups (per-service rows),
and actual cost from Cost Explorer (or a saved response file), and reports:

- per AWS service: modelled, actual, delta, factor (actual / modelled) and the *residual*:
  what is left after the global calibration, ``actual - modelled * global factor``;
- the global calibration factor, over the services the model covers only (a service on the
  bill that we price *and* that has modelled spend in the range); tax, support plans, data
  transfer and anything else we do not price are listed beside it, never folded in;
- per feature: modelled AWS cost, and the actual cost allocated to it through each service's
  factor (a feature's share of a service's modelled cost gets the same share of its bill);
- direct LLM spend (OpenAI, Anthropic: not on the AWS bill) beside the reconciliation;
- provisional days: Cost Explorer keeps revising a day for about two days (``settle_days``)
  after it ends, and marks some ``Estimated``; both count as provisional;
- restatements recorded over the range (so a report made after one shows it).

Dates are UTC calendar days; ``end`` is exclusive, like Cost Explorer's ``End``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from spendtrace.errors import ConfigError
from spendtrace.server.model.reconcile import CE_SERVICE_MAP, CalibrationFactor, ModelledSpend
from spendtrace.server.reconcile.costexplorer import (
    Actuals,
    fetch_pages,
    load_actuals_file,
    map_service,
    parse_pages,
)
from spendtrace.server.store.base import open_reconcile_store
from spendtrace.settings import default_db_path

__all__ = ["FeatureRow", "ReconciliationReport", "ServiceRow", "latest_report", "reconcile"]

NANO = 1_000_000_000
_DAY_S = 86400
DateLike = str | dt.date | dt.datetime


def _usd(nano: int) -> float:
    return nano / NANO


def _money(nano: int) -> str:
    return f"${nano / NANO:.4f}"


def _signed(nano: int) -> str:
    return f"{'-' if nano < 0 else '+'}${abs(nano) / NANO:.4f}"


@dataclass(frozen=True)
class ServiceRow:
    """One AWS service on the bill or in the model (amounts in nano-dollars)."""

    service: str
    modelled_nano: int
    actual_nano: int
    covered: bool
    factor: float | None
    residual_nano: int
    ce_names: tuple[str, ...] = ()

    @property
    def delta_nano(self) -> int:
        return self.actual_nano - self.modelled_nano

    @property
    def modelled(self) -> float:
        return _usd(self.modelled_nano)

    @property
    def actual(self) -> float:
        return _usd(self.actual_nano)

    @property
    def delta(self) -> float:
        return _usd(self.delta_nano)

    @property
    def residual(self) -> float:
        return _usd(self.residual_nano)


@dataclass(frozen=True)
class FeatureRow:
    """One feature: its modelled AWS cost and the actual cost allocated to it through service factors."""

    feature: str
    modelled_nano: int
    actual_nano: int
    non_aws_nano: int = 0
    tagged_actual_nano: int | None = None

    @property
    def gap_nano(self) -> int:
        return self.actual_nano - self.modelled_nano

    @property
    def modelled(self) -> float:
        return _usd(self.modelled_nano)

    @property
    def actual(self) -> float:
        return _usd(self.actual_nano)

    @property
    def gap(self) -> float:
        return _usd(self.gap_nano)


@dataclass
class ReconciliationReport:
    """Modelled vs actual spend over ``[start, end)``; ``summary()`` prints it, ``to_dict()`` serialises it."""

    start: str
    end: str
    created_ns: int
    global_calibration_factor: float
    service_rows: list[ServiceRow]
    feature_rows: list[FeatureRow]
    non_aws_rows: list[dict[str, Any]] = field(default_factory=list)
    daily_rows: list[dict[str, Any]] = field(default_factory=list)
    provisional_days: list[str] = field(default_factory=list)
    restatements: list[dict[str, Any]] = field(default_factory=list)
    tag_key: str | None = None
    tag_rows: list[dict[str, Any]] = field(default_factory=list)
    source: str = "cost-explorer"
    from_cache: bool = False
    id: int | None = None
    #: days of the range the bill had no result for: left out of every comparison and factor
    missing_days: list[str] = field(default_factory=list)
    #: modelled AWS spend on those days (not compared with anything)
    missing_modelled_nano: int = 0

    @property
    def partial(self) -> bool:
        """True when the actuals did not cover every day of the range (no factor should be applied)."""
        return bool(self.missing_days)

    # -- totals --------------------------------------------------------------------------------

    @property
    def modelled_total_nano(self) -> int:
        """Modelled cost of the AWS services the model covers."""
        return sum(r.modelled_nano for r in self.service_rows if r.covered)

    @property
    def actual_total_nano(self) -> int:
        """Actual cost of the same services (what the calibration factor compares)."""
        return sum(r.actual_nano for r in self.service_rows if r.covered)

    @property
    def unmodelled_actual_nano(self) -> int:
        """AWS spend on the bill that the model does not cover (tax, support, data transfer, ...)."""
        return sum(r.actual_nano for r in self.service_rows if not r.covered)

    @property
    def modelled_total(self) -> float:
        return _usd(self.modelled_total_nano)

    @property
    def actual_total(self) -> float:
        return _usd(self.actual_total_nano)

    @property
    def delta(self) -> float:
        return _usd(self.actual_total_nano - self.modelled_total_nano)

    @property
    def service_factors(self) -> dict[str, float]:
        """Per-service calibration factors (covered services), for ``restate_historical_costs(factors=...)``."""
        return {r.service: r.factor for r in self.service_rows if r.covered and r.factor is not None}

    # -- output --------------------------------------------------------------------------------

    def summary(self, top: int = 3) -> str:
        """The printable report: totals, calibration, the ``top`` features (3, as the README shows), then notes.

        The notes (AWS spend outside the model, direct LLM spend, provisional days, restatements)
        appear only when there is something to say, so plain data prints the README's layout.
        """
        bar = "=" * 60
        delta = self.actual_total_nano - self.modelled_total_nano
        lines = [
            bar,
            f"  Reconciliation Report  {self.start} → {self.end}",
            bar,
            f"  Modelled total : {_money(self.modelled_total_nano):>12}",
            f"  Actual total   : {_money(self.actual_total_nano):>12}",
            f"  Delta          : {_signed(delta):>12}",
            f"  Calibration Δ  : {self.global_calibration_factor:10.4f}×"
            if len(self.missing_days) < len(self.daily_rows) or not self.daily_rows
            else "  Calibration Δ  :        n/a (no actuals in range)",
            "",
            "  Top features by modelled cost:",
        ]
        for row in self.feature_rows[:top]:
            actual = _money(row.actual_nano)
            pad = " " * max(0, 9 - len(actual))  # keeps the gap column lined up with the README layout
            lines.append(
                f"    {row.feature:<20} modelled {_money(row.modelled_nano):<8}  actual {actual}{pad}"
                f"  gap {pad}{_signed(row.gap_nano)}"
            )
        uncovered = [r for r in self.service_rows if not r.covered and r.actual_nano]
        if uncovered:
            lines += ["", "  On the bill but not in the model (left out of the factor):"]
            lines += [f"    {r.service:<36} {_money(r.actual_nano):>12}" for r in uncovered]
        if self.non_aws_rows:
            lines += ["", "  Direct LLM spend (not on the AWS bill, not reconciled):"]
            lines += [f"    {r['service']:<36} {_money(int(r['modelled_nano'])):>12}" for r in self.non_aws_rows]
        if self.missing_days:
            days = self.missing_days
            span = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
            lines += [
                "",
                f"  PARTIAL: no actuals for {len(days)} of {len(self.daily_rows)} days ({span}).",
                f"  Modelled {_money(self.missing_modelled_nano)} on those days is left out of the comparison;",
                "  the factor covers the other days only and restatement refuses it unless forced.",
            ]
        if self.provisional_days:
            days = self.provisional_days
            span = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
            lines += ["", f"  Provisional (Cost Explorer still settling): {span}"]
        if self.restatements:
            lines += ["", "  Restatements over this range:"]
            for r in self.restatements:
                how = f"×{r['factor']:.4f}" if r.get("factor") is not None else json.dumps(r.get("factors", {}))
                if r.get("kind") == "reprice":
                    services = r.get("detail", {}).get("services", {})
                    delta = sum(int(s["after_nano"]) - int(s["before_nano"]) for s in services.values())
                    feats = ", ".join(r.get("features") or []) or "all features"
                    how = f"repriced ({feats}) {_signed(delta)}"
                undone = " (undone)" if r.get("undone_ns") else ""
                lines.append(
                    f"    #{r['id']} {r['start_date']} → {r['end_date']} {how} by {r['who']}: {r['why']}{undone}"
                )
        lines.append(bar)
        return "\n".join(lines)

    def service_table(self) -> str:
        """Per-service lines: modelled, actual, delta, factor and residual."""
        head = f"  {'service':<30} {'modelled':>12} {'actual':>12} {'delta':>12} {'factor':>8} {'residual':>12}"
        lines = [head]
        for r in self.service_rows:
            factor = f"{r.factor:.4f}" if r.factor is not None else "—"
            lines.append(
                f"  {r.service:<30} {_money(r.modelled_nano):>12} {_money(r.actual_nano):>12} "
                f"{_signed(r.delta_nano):>12} {factor:>8} {_signed(r.residual_nano):>12}"
            )
        for t in self.tag_rows:
            lines.append(
                f"  tag {self.tag_key}={t['value'] or '(untagged)'}: on the bill {_money(int(t['actual_nano']))}, "
                f"allocated {_money(int(t['allocated_nano']))}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (dollars as floats beside exact nano-dollar integers)."""

        def svc(r: ServiceRow) -> dict[str, Any]:
            d = asdict(r)
            d.update(ce_names=list(r.ce_names), delta_nano=r.delta_nano, modelled=r.modelled, actual=r.actual,
                     delta=r.delta, residual=r.residual)
            return d

        def feat(r: FeatureRow) -> dict[str, Any]:
            d = asdict(r)
            d.update(gap_nano=r.gap_nano, modelled=r.modelled, actual=r.actual, gap=r.gap)
            return d

        return {
            "id": self.id,
            "start": self.start,
            "end": self.end,
            "created_ns": self.created_ns,
            "source": self.source,
            "from_cache": self.from_cache,
            "modelled_total": self.modelled_total,
            "actual_total": self.actual_total,
            "delta": self.delta,
            "modelled_total_nano": self.modelled_total_nano,
            "actual_total_nano": self.actual_total_nano,
            "unmodelled_actual_nano": self.unmodelled_actual_nano,
            # None on a partial report, so nothing applies it by mistake (covered_days_factor has it)
            "global_calibration_factor": None if self.partial else float(self.global_calibration_factor),
            "covered_days_factor": float(self.global_calibration_factor),
            "partial": self.partial,
            "missing_days": self.missing_days,
            "missing_modelled_nano": self.missing_modelled_nano,
            "service_factors": self.service_factors,
            "service_rows": [svc(r) for r in self.service_rows],
            "feature_rows": [feat(r) for r in self.feature_rows],
            "non_aws_rows": self.non_aws_rows,
            "daily_rows": self.daily_rows,
            "provisional_days": self.provisional_days,
            "restatements": self.restatements,
            "tag_key": self.tag_key,
            "tag_rows": self.tag_rows,
        }


# --- inputs ------------------------------------------------------------------------------------


def _as_date(value: DateLike, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date() if value.tzinfo else value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise ConfigError(f"{what} must be a date like 2026-02-01, got {value!r}") from None


def _now_ns(now: DateLike | int | float | None) -> int:
    if now is None:
        return time.time_ns()
    if isinstance(now, int | float) and not isinstance(now, bool):
        return int(now)
    if isinstance(now, dt.datetime):
        aware = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
        return int(aware.timestamp() * 1e9)
    d = _as_date(str(now), "now")
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp()) * NANO


def _epoch(d: dt.date) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC).timestamp())


def _last_full_month(now_ns: int) -> tuple[dt.date, dt.date]:
    today = dt.datetime.fromtimestamp(now_ns / 1e9, tz=dt.UTC).date()
    end = today.replace(day=1)
    return (end - dt.timedelta(days=1)).replace(day=1), end


def _modelled(rows: list[ModelledSpend]) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """((day, service) -> nano, (feature, service) -> nano) from the store's per-service day rollup rows."""
    by_day: dict[tuple[str, str], int] = defaultdict(int)
    by_feature: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        day = dt.datetime.fromtimestamp(row.day_s, tz=dt.UTC).date().isoformat()
        by_day[(day, row.service)] += row.cost_nano
        by_feature[(row.feature, row.service)] += row.cost_nano
    return by_day, by_feature


def _iso_day(day_s: int) -> str:
    return dt.datetime.fromtimestamp(day_s, tz=dt.UTC).date().isoformat()


def _store_url(db_path: str | os.PathLike[str] | None) -> str:
    """The store a Python API call names: a URL or a SQLite path, else the default SQLite file."""
    return os.fspath(db_path) if db_path is not None else default_db_path()


# --- the report ---------------------------------------------------------------------------------


def _build(
    start: dt.date, end: dt.date, now_ns: int, settle_days: int, actuals: Actuals,
    by_day: dict[tuple[str, str], int], by_feature: dict[tuple[str, str], int],
    missing_by_day: dict[str, int] | None = None,
) -> ReconciliationReport:
    """The report of days with actuals (``by_day`` / ``by_feature`` cover only those); ``missing_by_day``:
    modelled AWS spend on the range's days without actuals, which are listed and compared with nothing."""
    missing_by_day = missing_by_day or {}
    missing = sorted(d for d in _days(start, end) if d not in actuals.days)
    # Actual per our service key (AWS services we price) and per unmapped bill line.
    actual: dict[str, int] = defaultdict(int)
    names: dict[str, set[str]] = defaultdict(set)
    actual_day: dict[str, int] = defaultdict(int)
    first, stop = start.isoformat(), end.isoformat()
    for (day, ce_name), amount in actuals.by_day_service.items():
        if not first <= day < stop:  # a saved response may span more days than asked: only the range counts
            continue
        key = map_service(ce_name) or ce_name
        actual[key] += amount
        names[key].add(ce_name)
        actual_day[day] += amount
    aws_keys = set(CE_SERVICE_MAP.values())
    modelled: dict[str, int] = defaultdict(int)
    modelled_day: dict[str, int] = defaultdict(int)
    for (day, service), cost in by_day.items():
        modelled[service] += cost
        if service in aws_keys:
            modelled_day[day] += cost
    covered = {s for s in modelled if s in aws_keys and modelled[s] > 0}
    cov_modelled = sum(modelled[s] for s in covered)
    cov_actual = sum(actual.get(s, 0) for s in covered)
    global_factor = CalibrationFactor(cov_actual / cov_modelled if cov_modelled else 1.0, tuple(missing))

    rows: list[ServiceRow] = []
    for s in sorted(covered | set(actual), key=lambda k: (k not in covered, -actual.get(k, 0), k)):
        m, a = modelled.get(s, 0), actual.get(s, 0)
        is_cov = s in covered
        rows.append(ServiceRow(
            service=s, modelled_nano=m, actual_nano=a, covered=is_cov,
            factor=CalibrationFactor(a / m, tuple(missing)) if is_cov else None,
            residual_nano=a - round(m * global_factor) if is_cov else a,
            ce_names=tuple(sorted(names.get(s, ()))),
        ))
    factors = {r.service: r.factor for r in rows if r.covered and r.factor is not None}

    feats: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # modelled, allocated actual, non-AWS
    for (feature, service), cost in by_feature.items():
        f = feats[feature]
        if service in covered:
            f[0] += cost
            f[1] += round(cost * factors[service])
        elif service not in aws_keys:
            f[2] += cost
    tagged: dict[str, int] = defaultdict(int)
    for (value, ce_name), amount in actuals.by_tag_service.items():
        if map_service(ce_name) in covered:
            tagged[value] += amount
    feature_rows = sorted(
        (FeatureRow(feature=k, modelled_nano=v[0], actual_nano=v[1], non_aws_nano=v[2],
                    tagged_actual_nano=tagged.get(k, 0) if actuals.by_tag_service else None)
         for k, v in feats.items() if v[0] or v[2]),
        key=lambda r: (-r.modelled_nano, -r.non_aws_nano, r.feature),
    )
    non_aws = [{"service": s, "modelled_nano": modelled[s], "modelled": _usd(modelled[s])}
               for s in sorted(modelled) if s not in aws_keys and modelled[s]]
    tag_rows = [
        {"value": v, "actual_nano": a, "actual": _usd(a),
         "allocated_nano": feats[v][1] if v in feats else 0}
        for v, a in sorted(tagged.items(), key=lambda kv: -kv[1])
    ]

    settled_before = dt.datetime.fromtimestamp(now_ns / 1e9, tz=dt.UTC) - dt.timedelta(days=settle_days)
    days, provisional = [], []
    d = start
    while d < end:
        iso = d.isoformat()
        day_end = dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
        prov = day_end > settled_before or iso in actuals.estimated_days
        if prov:
            provisional.append(iso)
        if iso not in actuals.days:
            days.append({"date": iso, "modelled_nano": missing_by_day.get(iso, 0), "actual_nano": None,
                         "provisional": prov, "missing": True})
        else:
            days.append({"date": iso, "modelled_nano": modelled_day.get(iso, 0),
                         "actual_nano": actual_day.get(iso, 0), "provisional": prov, "missing": False})
        d += dt.timedelta(days=1)
    return ReconciliationReport(
        start=start.isoformat(), end=end.isoformat(), created_ns=now_ns, global_calibration_factor=global_factor,
        service_rows=rows, feature_rows=feature_rows, non_aws_rows=non_aws, daily_rows=days,
        provisional_days=provisional, tag_rows=tag_rows, source=actuals.source, missing_days=missing,
        missing_modelled_nano=sum(missing_by_day.values()),
    )


def _days(start: dt.date, end: dt.date) -> list[str]:
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days)]


def reconcile(
    db_path: str | os.PathLike[str] | None = None,
    start: DateLike | None = None,
    end: DateLike | None = None,
    tag_key: str | None = None,
    *,
    actuals_file: str | os.PathLike[str] | None = None,
    ce_client: Any = None,
    now: DateLike | int | None = None,
    settle_days: int = 2,
    cache_max_age_s: float = 6 * 3600,
    save: bool = True,
) -> ReconciliationReport:
    """Reconcile modelled spend in ``db_path`` with the AWS bill over ``[start, end)`` (UTC days).

    ``db_path`` is a store URL (``sqlite:///path/cost_data.db``) or a SQLite path; default: the
    default SQLite file (``configure(db=...)``, ``SPENDTRACE_DB`` or ``cost_data.db``).

    Actuals come from Cost Explorer through ``ce_client`` (a boto3 ``ce`` client; one is made
    when omitted, which needs the ``aws`` extra and credentials), cached per day range in the
    store, or from ``actuals_file``, a saved GetCostAndUsage JSON response (or a list of
    pages). ``tag_key`` also groups the bill by that cost-allocation tag, to compare with the
    features. Without ``start``/``end`` the last full calendar month is used. The report is
    saved in the store (``latest_report`` reads it back) unless ``save=False``.
    """
    now_ns = _now_ns(now)
    if start is None or end is None:
        d0, d1 = _last_full_month(now_ns)
        start, end = start or d0, end or d1
    start_d, end_d = _as_date(start, "start"), _as_date(end, "end")
    if end_d <= start_d:
        raise ConfigError(f"end ({end_d}) must be after start ({start_d})")
    store = open_reconcile_store(_store_url(db_path))
    try:
        from_cache = False
        if actuals_file is not None:
            pages = load_actuals_file(actuals_file)
            source = f"file:{os.fspath(actuals_file)}"
        else:
            pages, from_cache = fetch_pages(
                store, ce_client, start_d.isoformat(), end_d.isoformat(), tag_key,
                final_after_ns=(_epoch(end_d) + settle_days * _DAY_S) * NANO, now_ns=now_ns,
                max_age_s=cache_max_age_s,
            )
            source = "cost-explorer"
        actuals = parse_pages(pages, tag_key, start_d.isoformat(), end_d.isoformat())
        actuals.source = source
        spend = store.modelled_spend(_epoch(start_d), _epoch(end_d))
        # days the bill has no result for are compared with nothing (not with $0)
        compared = [r for r in spend if _iso_day(r.day_s) in actuals.days]
        missing_by_day: dict[str, int] = defaultdict(int)
        for r in spend:
            if _iso_day(r.day_s) not in actuals.days and r.service in CE_SERVICE_MAP.values():
                missing_by_day[_iso_day(r.day_s)] += r.cost_nano
        by_day, by_feature = _modelled(compared)
        report = _build(start_d, end_d, now_ns, settle_days, actuals, by_day, by_feature, missing_by_day)
        report.tag_key = tag_key
        report.from_cache = from_cache
        report.restatements = [r.to_dict() for r in store.restatements_between(report.start, report.end)]
        if save:
            report.id = store.save_report(report.to_dict())
        return report
    finally:
        store.close()


def latest_report(db_path: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The most recently saved reconciliation (its ``to_dict()``), or None; for the TUI and API.

    ``db_path`` is a store URL or a SQLite path (default: the default SQLite file); the store must exist.
    """
    store = open_reconcile_store(_store_url(db_path), readonly=True)
    try:
        return store.latest_report()
    finally:
        store.close()
