"""Modal dialogs: confirm an action, and the add-alert-rule form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static


class ConfirmModal(ModalScreen[bool]):
    """Ask yes/no; dismisses with True only on an explicit yes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(False)", "Cancel"),
        Binding("y", "dismiss(True)", "Yes", show=False),
        Binding("n", "dismiss(False)", "No", show=False),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(escape(self.question), classes="question")
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button("Cancel", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


@dataclass(frozen=True, slots=True)
class RuleForm:
    """What the add-rule form returns: a threshold, budget or rate rule on one scope."""

    name: str
    scope: str
    scope_value: str
    threshold_usd: float
    window_hours: float
    webhook: str
    #: "threshold" (spend over a window above an amount), "budget" (a share of an amount per
    #: period, warned at 50/80/100 %) or "rate" (the last hour ``factor`` times its usual level)
    kind: str = "threshold"
    period: str = "month"
    factor: float = 3.0


#: Scope choices as the rest of the UI names them; the values are the rule's scope names.
SCOPES = (("Feature", "feature"), ("Tenant", "user"), ("Endpoint", "endpoint"), ("Total", "total"))
KINDS = (("Threshold", "threshold"), ("Budget", "budget"), ("Rate (spike)", "rate"))
#: What the amount field means for each kind.
AMOUNT_LABEL = {"threshold": "Threshold (USD)", "budget": "Budget (USD)", "rate": "Min. spend / hour (USD)"}


class AddRuleModal(ModalScreen[RuleForm | None]):
    """A keyboard-first form for an alert rule (threshold, budget or rate); Tab moves between fields, Enter saves."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, scope: str = "feature", scope_value: str = "") -> None:
        super().__init__()
        self._scope = scope
        self._value = scope_value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog form"):
            yield Static("[b]New alert rule[/b]  threshold: spend over a window; budget: per period; rate: a spike")
            with Grid(classes="fields"):
                yield Label("Name")
                yield Input(placeholder="e.g. recs-daily", id="name")
                yield Label("Kind")
                yield Select(KINDS, value="threshold", allow_blank=False, id="kind")
                yield Label("Scope")
                yield Select(SCOPES, value=self._scope, allow_blank=False, id="scope")
                yield Label("Feature / tenant / endpoint")
                yield Input(value=self._value, id="value")
                yield Label(AMOUNT_LABEL["threshold"], id="threshold-label")
                yield Input(placeholder="10.00", id="threshold", type="number")
                yield Label("Window (hours)", id="window-label", classes="for-threshold")
                yield Input(value="24", id="window", type="number", classes="for-threshold")
                yield Label("Period", id="period-label", classes="for-budget")
                yield Select(
                    [("Day", "day"), ("Week", "week"), ("Month", "month")],
                    value="month",
                    allow_blank=False,
                    id="period",
                    classes="for-budget",
                )
                yield Label("Factor (x usual hour)", id="factor-label", classes="for-rate")
                yield Input(value="3", id="factor", type="number", classes="for-rate")
                yield Label("Webhook (optional)")
                yield Input(placeholder="https://hooks.slack.com/…", id="webhook")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="success", id="save")
                yield Button("Cancel", variant="primary", id="cancel")

    def on_mount(self) -> None:
        self._show_kind("threshold")
        self.query_one("#name", Input).focus()

    def _show_kind(self, kind: str) -> None:
        """Only the fields the kind uses are shown (and reached with Tab)."""
        for other in ("threshold", "budget", "rate"):
            for widget in self.query(f".for-{other}"):
                widget.display = other == kind
        self.query_one("#threshold-label", Label).update(AMOUNT_LABEL[kind])
        amount = self.query_one("#threshold", Input)
        if kind == "rate" and not amount.value:
            amount.value = "1"

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "kind":
            self._show_kind(str(event.value))

    def _read(self) -> RuleForm:
        def num(field: str, what: str) -> float:
            raw = self.query_one(f"#{field}", Input).value.strip()
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{what}: enter a number") from None
            if not value > 0:
                raise ValueError(f"{what}: must be above zero")
            return value

        kind = str(self.query_one("#kind", Select).value)
        scope = str(self.query_one("#scope", Select).value)
        value = self.query_one("#value", Input).value.strip()
        if scope != "total" and not value:
            label = dict((v, k) for k, v in SCOPES)[scope].lower()
            raise ValueError(f"which {label}? fill in its name")
        name = self.query_one("#name", Input).value.strip() or f"{scope}:{value or 'all'}"
        amount = num("threshold", {"threshold": "threshold", "budget": "budget", "rate": "minimum spend"}[kind])
        window = num("window", "window") if kind == "threshold" else 24.0
        factor = num("factor", "factor") if kind == "rate" else 3.0
        if kind == "rate" and factor <= 1:
            raise ValueError("factor: a spike is more than 1x the usual hour")
        return RuleForm(
            name,
            scope,
            value,
            amount,
            window,
            self.query_one("#webhook", Input).value,
            kind=kind,
            period=str(self.query_one("#period", Select).value),
            factor=factor,
        )

    def _save(self) -> None:
        try:
            form = self._read()
        except ValueError as exc:
            self.query_one("#error", Static).update(escape(str(exc)))
            return
        self.dismiss(form)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self._save()
        else:
            self.dismiss(None)
