"""Reconciliation: modelled vs actual (Cost Explorer or a saved response file), and restatement."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, Input, Static

from tui.actions import restate, run_reconcile
from tui.format import money, money_text, utc, whole_nano
from tui.screens.base import DataScreen
from tui.screens.modals import ConfirmModal
from tui.widgets.keyed_table import Cell, ColumnSpec, KeyedTable

SERVICE_COLUMNS = [
    ColumnSpec("name", "Service", 18, "f", numeric=False, justify="left"),
    ColumnSpec("modelled", "Modelled", 13, "m", csv="modelled_usd"),
    ColumnSpec("actual", "Actual", 13, "a", csv="actual_usd"),
    ColumnSpec("delta", "Gap", 13, "d", csv="gap_usd"),
    ColumnSpec("factor", "Factor", 8, None),
]
FEATURE_COLUMNS = [
    ColumnSpec("name", "Feature", 28, None, numeric=False, justify="left"),
    ColumnSpec("modelled", "Modelled", 13, None, csv="modelled_usd"),
    ColumnSpec("actual", "Actual (est.)", 13, None, csv="actual_estimated_usd"),
    ColumnSpec("delta", "Gap", 13, None, csv="gap_usd"),
]

_NAME_KEYS = ("service", "feature", "name")


def _num(d: dict[str, Any], *names: str) -> float | None:
    for n in names:
        v = d.get(n)
        if isinstance(v, int | float):
            return float(v)
    return None


def _rows(section: Any) -> list[dict[str, Any]]:
    """A report section as a list of dicts, whether it came as a list or a {name: {...}} mapping."""
    if isinstance(section, dict):
        out = []
        for name, v in section.items():
            row = dict(v) if isinstance(v, dict) else {"value": v}
            row.setdefault("name", name)
            out.append(row)
        return out
    return [dict(r) for r in section or [] if isinstance(r, dict)]


def comparison_cells(row: dict[str, Any]) -> tuple[str, dict[str, Cell]]:
    """(key, cells) of one modelled-vs-actual row (amounts in USD)."""
    name = next((str(row[k]) for k in _NAME_KEYS if row.get(k)), "?")
    modelled = _num(row, "modelled", "modelled_cost", "modelled_usd") or 0.0
    actual = _num(row, "actual", "actual_cost", "actual_usd")
    delta = _num(row, "delta", "gap", "delta_usd")
    if delta is None and actual is not None:
        delta = actual - modelled
    factor = _num(row, "factor", "calibration_factor")
    if factor is None and actual is not None and modelled:
        factor = actual / modelled
    gap_style = "red" if (delta or 0) > 0 else "green"
    cells = {
        "name": Cell.of(Text(name), name),
        "modelled": Cell.of(money_text(modelled * 1e9), modelled),
        "actual": Cell.of(money_text(None if actual is None else actual * 1e9, "bold"), actual),
        "delta": Cell.of(Text(_signed(delta), style=gap_style, justify="right"), delta),
        "factor": Cell.of(Text("—" if factor is None else f"{factor:.4f}×", justify="right"), factor),
    }
    return name, cells


def _signed(usd: float | None) -> str:
    if usd is None:
        return "—"
    return ("+" if usd >= 0 else "-") + money(whole_nano(abs(usd) * 1e9))  # to the nano-dollar: fits the column


def report_notes(report: dict[str, Any]) -> Text:
    """What the CLI report says besides the totals: bill lines the model lacks, direct LLM spend, provisional days."""
    t = Text()
    unmodelled = [r for r in _rows(report.get("service_rows")) if r.get("covered") is False]
    if unmodelled:
        t.append(" not in the model ", style="dim")
        t.append(", ".join(f"{r.get('service', '?')} {money(int(r.get('actual_nano') or 0))}" for r in unmodelled))
    llm = _rows(report.get("non_aws_rows"))
    if llm:
        t.append("   direct LLM spend " if t else " direct LLM spend ", style="dim")
        t.append(", ".join(f"{r.get('service', '?')} {money(int(r.get('modelled_nano') or 0))}" for r in llm))
        t.append(" (not on the AWS bill)", style="dim")
    days = [str(d) for d in report.get("provisional_days") or []]
    if days:
        t.append("   provisional " if t else " provisional ", style="dim")
        t.append(days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}", style="yellow")
        t.append(" (Cost Explorer still settling)", style="dim")
    return t


class ReconcileScreen(DataScreen):
    """Run a reconciliation for a date range; ``R`` restates history by the global factor, after confirming."""

    MODE = "reconcile"
    AUTO_FOCUS = "KeyedTable"  # digits switch screens until the user tabs into a date field
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Run"),
        Binding("R", "restate", "Restate"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report: dict[str, Any] | None = None

    def compose_body(self) -> ComposeResult:
        app: Any = self.app
        now = app.clock()
        with Horizontal(id="recon-form"):
            yield Input(utc(now, "%Y-%m-01"), placeholder="start YYYY-MM-DD", id="start")
            yield Input(utc(now + 86_400_000_000_000, "%Y-%m-%d"), placeholder="end YYYY-MM-DD", id="end")
            yield Input(app.actuals_file or "", placeholder="saved GetCostAndUsage JSON (blank: ask Cost Explorer)",
                        id="file")
            yield Button("Run", variant="primary", id="run")
            yield Button("Restate…", variant="warning", id="restate", disabled=True)
        yield Static(Text(" enter a date range and run (ctrl+r)", style="dim"), id="summary", classes="summary")
        notes = Static("", id="notes", classes="summary")
        notes.display = False  # shown once a report has something to note
        yield notes
        yield Static(Text(" per service", style="bold"), classes="subtitle")
        yield KeyedTable(SERVICE_COLUMNS, default_sort="modelled", id="services")
        yield Static(Text(" per feature", style="bold"), classes="subtitle")
        yield KeyedTable(FEATURE_COLUMNS, default_sort="modelled", id="features")

    def extra_hints(self) -> str:
        return "   ·  ctrl+r run  R restate (confirms)"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id in ("start", "end", "file"):
            event.stop()
            self.action_run()
        else:
            super().on_input_submitted(event)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run":
            self.action_run()
        elif event.button.id == "restate":
            self.action_restate()

    def action_run(self) -> None:
        start = self.query_one("#start", Input).value.strip()
        end = self.query_one("#end", Input).value.strip()
        file = self.query_one("#file", Input).value.strip() or None
        self.query_one("#summary", Static).update(Text(f" reconciling {start} → {end} …", style="yellow"))
        self._run(start, end, file)

    @work(thread=True, exclusive=True, group="reconcile")
    def _run(self, start: str, end: str, file: str | None) -> None:
        app: Any = self.app
        try:
            report = run_reconcile(app.db_path, start, end, file, app.clock())
        except Exception as exc:
            msg = f" reconciliation failed: {type(exc).__name__}: {exc}"
            app.call_from_thread(self.query_one("#summary", Static).update, Text(msg, style="bold red"))
            app.call_from_thread(setattr, self.query_one("#notes", Static), "display", False)
            return
        app.call_from_thread(self.show_report, report)

    def show_report(self, report: dict[str, Any]) -> None:
        """Fill the summary and both tables from a ``ReconciliationReport.to_dict()``."""
        self.report = report
        modelled = _num(report, "modelled_total", "total_modelled", "modelled") or 0.0
        actual = _num(report, "actual_total", "total_actual", "actual")
        factor = _num(report, "global_calibration_factor", "calibration_factor")
        t = Text(" ")
        t.append(f"{report.get('start', '')} → {report.get('end', '')}", style="bold")
        t.append("   modelled ", style="dim")
        t.append(money(modelled * 1e9), style="bold #87ff87")
        t.append("   actual ", style="dim")
        t.append("—" if actual is None else money(actual * 1e9), style="bold #ffd75f")
        if actual is not None:
            t.append("   gap ", style="dim")
            t.append(_signed(actual - modelled), style="red" if actual > modelled else "green")
        t.append("   calibration ", style="dim")
        t.append("—" if factor is None else f"{factor:.4f}×", style="bold")
        missing = report.get("missing_days") or []
        if missing:  # the bill did not cover the range: no factor to apply (restate stays disabled)
            t.append(f"   PARTIAL: no actuals for {len(missing)} day(s) from {missing[0]}",
                     style="bold black on yellow")  # fmt: skip
        self.query_one("#summary", Static).update(t)
        notes = report_notes(report)
        self.query_one("#notes", Static).update(notes)
        self.query_one("#notes", Static).display = bool(notes)
        services = _rows(report.get("service_rows") or report.get("services"))
        features = _rows(report.get("feature_rows") or report.get("features"))
        self.query_one("#services", KeyedTable).sync(comparison_cells(r) for r in services)
        self.query_one("#features", KeyedTable).sync(comparison_cells(r) for r in features)
        self.query_one("#restate", Button).disabled = factor is None

    def action_restate(self) -> None:
        if not self.report:
            self.notify("Run a reconciliation first", severity="warning")
            return
        factor = _num(self.report, "global_calibration_factor", "calibration_factor")
        if factor is None:
            self.notify("The report has no calibration factor", severity="warning")
            return
        start, end = str(self.report.get("start", "")), str(self.report.get("end", ""))
        question = f"Restate stored costs from {start} to {end} by ×{factor:.4f}? This is recorded and can be undone."

        def done(ok: bool | None) -> None:
            if ok:
                self._restate(factor, start, end)

        self.app.push_screen(ConfirmModal(question, yes="Restate"), done)

    @work(thread=True, exclusive=True, group="reconcile")
    def _restate(self, factor: float, start: str, end: str) -> None:
        app: Any = self.app
        try:
            msg = restate(app.db_path, factor, start, end)
        except Exception as exc:
            app.call_from_thread(self.notify, f"restatement failed: {exc}", severity="error", markup=False)
            return
        app.call_from_thread(self.notify, msg, markup=False)
        app.call_from_thread(app.request_refresh, True)
