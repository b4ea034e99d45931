"""Alerts: fired events tailing live (from the database and, with a broker, the alerts topic) and the rules."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from spendtrace.server.model.alerts import scope_label
from spendtrace.server.model.dashboard import AlertEventRow, AlertRuleRow
from spendtrace.server.model.money import minutes_text
from spendtrace.server.store.base import DashboardReads
from tui.actions import add_rule, remove_rule
from tui.format import MONEY_WIDTH, money, money_text, utc
from tui.screens.base import DataScreen
from tui.screens.modals import AddRuleModal, ConfirmModal, RuleForm
from tui.widgets.keyed_table import Cell, ColumnSpec, KeyedTable


def event_columns(terminal_width: int = 160) -> list[ColumnSpec]:
    """Fired alerts' columns; the rule's name gives way on a narrow terminal so the value stays in view."""
    return [
        ColumnSpec("fired", "Fired (UTC)", 19, "t", justify="left", unit="utc", csv="fired_utc"),
        ColumnSpec("rule", "Rule", 18 if terminal_width >= 120 else 14, None, numeric=False, justify="left"),
        ColumnSpec("scope", "Scope", 24, None, numeric=False, justify="left"),
        ColumnSpec("value", "Value", MONEY_WIDTH, "v", unit="usd", csv="value_usd"),
        ColumnSpec("threshold", "Threshold", MONEY_WIDTH, None, unit="usd", csv="threshold_usd"),
        ColumnSpec("message", "Message", 40, None, numeric=False, justify="left"),
        ColumnSpec("delivery", "Delivery", 9, None, numeric=False, justify="left"),
    ]


def rule_columns(terminal_width: int = 160) -> list[ColumnSpec]:
    """Rules' columns; name and scope give way on a narrow terminal so threshold and window stay in view."""
    wide = terminal_width >= 120
    return [
        ColumnSpec("name", "Rule", 20 if wide else 14, None, numeric=False, justify="left"),
        ColumnSpec("kind", "Kind", 9, None, numeric=False, justify="left"),
        ColumnSpec("scope", "Scope", 26 if wide else 22, None, numeric=False, justify="left"),
        ColumnSpec("threshold", "Threshold", MONEY_WIDTH, None, unit="usd", csv="threshold_usd"),
        ColumnSpec("window", "Window", 8, None),
        ColumnSpec("cooldown", "Cooldown", 8, None),
        ColumnSpec("webhook", "Webhook", 28, None, numeric=False, justify="left"),
        ColumnSpec("enabled", "On", 3, None, numeric=False),
    ]


_DELIVERY_STYLE = {"delivered": "green", "failed": "bold red", "pending": "yellow", "none": "dim"}


def _scope(scope: str, value: str) -> Text:
    """``tenant acme`` (the stored kind ``user`` reads as tenant, as on the Tenants screen), ``feature search``."""
    t = Text(f"{scope_label(scope)} ", style="dim")
    t.append(value or "(all)")
    return t


def event_cells(e: AlertEventRow) -> dict[str, Cell]:
    """Cells of one fired alert."""
    return {
        "fired": Cell.of(Text(utc(e.fired_ns), style="dim"), e.fired_ns),
        "rule": Cell.of(Text(e.rule_name, style="bold magenta"), e.rule_name),
        "scope": Cell.of(_scope(e.scope, e.scope_value), f"{e.scope}:{e.scope_value}"),
        "value": Cell.of(money_text(e.value_nano, "bold red"), e.value_nano),
        "threshold": Cell.of(money_text(e.threshold_nano), e.threshold_nano),
        "message": Cell.of(Text(e.message), e.message),
        "delivery": Cell.of(Text(e.delivery, style=_DELIVERY_STYLE.get(e.delivery, "")), e.delivery),
    }


def rule_cells(r: AlertRuleRow) -> dict[str, Cell]:
    """Cells of one rule."""
    window = minutes_text(r.window_minutes) if r.window_minutes else "—"
    return {
        "name": Cell.of(Text(r.name, style="bold"), r.name),
        "kind": Cell.of(Text(r.kind), r.kind),
        "scope": Cell.of(_scope(r.scope, r.scope_value), f"{r.scope}:{r.scope_value}"),
        "threshold": Cell.of(money_text(r.threshold_nano), r.threshold_nano),
        "window": Cell.of(Text(window, justify="right"), r.window_minutes),
        "cooldown": Cell.of(Text(minutes_text(r.cooldown_minutes), justify="right"), r.cooldown_minutes),
        "webhook": Cell.of(Text(r.webhook or "—", style="dim"), r.webhook),
        "enabled": Cell.of(Text("●" if r.enabled else "○", style="green" if r.enabled else "dim"), r.enabled),
    }


def live_event(payload: dict[str, Any], seq: int, now_ns: int) -> AlertEventRow:
    """An ``AlertEventRow`` from a message of the alerts topic (fields as in the alert_events table)."""

    def i(name: str) -> int:
        try:
            return int(payload.get(name) or 0)
        except (TypeError, ValueError):
            return 0

    return AlertEventRow(
        id=i("id") or -seq,
        rule_name=str(payload.get("rule_name") or payload.get("rule") or "?"),
        fired_ns=i("fired_ns") or now_ns,
        scope=str(payload.get("scope") or ""),
        scope_value=str(payload.get("scope_value") or ""),
        value_nano=i("value_nano"),
        threshold_nano=i("threshold_nano") or None,
        message=str(payload.get("message") or payload),
        delivery=str(payload.get("delivery") or "live"),
    )


class AlertsScreen(DataScreen):
    """Events above, rules below; ``a`` adds a rule, ``d`` removes the selected rule."""

    MODE = "alerts"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add_rule", "Add rule"),
        Binding("d", "remove_rule", "Remove rule"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, AlertEventRow] = {}

    def compose_body(self) -> ComposeResult:
        yield Static(Text(" fired alerts (newest first)", style="bold"), classes="subtitle")
        yield KeyedTable(event_columns(self.app.size.width), default_sort="fired", id="events")
        yield Static(Text(" rules   a add · d remove · Tab switches table", style="bold"), classes="subtitle")
        yield KeyedTable(rule_columns(self.app.size.width), default_sort="name", default_reverse=False, id="rules")

    def refit(self, width: int) -> None:
        self.query_one("#events", KeyedTable).refit(event_columns(width))
        self.query_one("#rules", KeyedTable).refit(rule_columns(width))

    def extra_hints(self) -> str:
        return "   ·  a add rule  d remove rule  Tab switch table"

    async def fetch(self, store: DashboardReads) -> tuple[list[AlertEventRow], list[AlertRuleRow]]:
        return await store.alert_events(), await store.alert_rules()

    def apply(self, data: tuple[list[AlertEventRow], list[AlertRuleRow]]) -> None:
        events, rules = data
        merged = {e.id: e for e in self.live.values()}
        merged.update({e.id: e for e in events})
        self.query_one("#events", KeyedTable).sync(
            ((str(e.id), event_cells(e)) for e in merged.values()),
            search=lambda k: f"{merged[int(k)].rule_name} {merged[int(k)].scope_value}",
        )
        self.query_one("#rules", KeyedTable).sync((r.name, rule_cells(r)) for r in rules)

    def add_live(self, payload: dict[str, Any]) -> AlertEventRow:
        """Show an alert from the topic at once, before the database refresh brings it."""
        app: Any = self.app
        e = live_event(payload, len(self.live) + 1, app.clock())
        self.live[e.id] = e
        self.query_one("#events", KeyedTable).upsert(str(e.id), event_cells(e))
        return e

    def action_add_rule(self) -> None:
        def done(form: RuleForm | None) -> None:
            if form is not None:
                self._save_rule(form)

        self.app.push_screen(AddRuleModal(), done)

    @work(thread=True, exclusive=True, group="alert-write")
    def _save_rule(self, form: RuleForm) -> None:
        app: Any = self.app
        try:
            msg = add_rule(
                app.db_path,
                name=form.name,
                scope=form.scope,
                scope_value=form.scope_value,
                threshold_usd=form.threshold_usd,
                window_hours=form.window_hours,
                webhook=form.webhook or None,
                kind=form.kind,
                period=form.period,
                factor=form.factor,
            )
        except Exception as exc:
            app.call_from_thread(self.notify, f"could not save the rule: {exc}", severity="error", markup=False)
            return
        app.call_from_thread(self.notify, f"{msg} ({money(form.threshold_usd * 1e9)})", markup=False)
        app.call_from_thread(app.request_refresh, True)

    def action_remove_rule(self) -> None:
        table = self.query_one("#rules", KeyedTable)
        name = table.current_key
        if name is None:
            self.notify("No rule selected (Tab to the rules table)", severity="warning")
            return

        def done(ok: bool | None) -> None:
            if ok:
                self._remove_rule(name)

        self.app.push_screen(ConfirmModal(f"Remove alert rule {name!r}?", yes="Remove"), done)

    @work(thread=True, exclusive=True, group="alert-write")
    def _remove_rule(self, name: str) -> None:
        app: Any = self.app
        try:
            msg = remove_rule(app.db_path, name)
        except Exception as exc:
            app.call_from_thread(self.notify, f"could not remove the rule: {exc}", severity="error", markup=False)
            return
        app.call_from_thread(self.notify, msg, markup=False)
        app.call_from_thread(app.request_refresh, True)

    def active_table(self) -> KeyedTable | None:
        focused = self.focused
        if isinstance(focused, KeyedTable):
            return focused
        return self.query_one("#events", KeyedTable)
