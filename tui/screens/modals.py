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
    """What the add-rule form returns."""

    name: str
    scope: str
    scope_value: str
    threshold_usd: float
    window_hours: float
    webhook: str


class AddRuleModal(ModalScreen[RuleForm | None]):
    """A keyboard-first form for a threshold alert rule; Tab moves between fields, Enter saves."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, scope: str = "feature", scope_value: str = "") -> None:
        super().__init__()
        self._scope = scope
        self._value = scope_value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog form"):
            yield Static("[b]New alert rule[/b]  spend over a window above a threshold fires an alert")
            with Grid(classes="fields"):
                yield Label("Name")
                yield Input(placeholder="e.g. recs-daily", id="name")
                yield Label("Scope")
                yield Select(
                    [(s, s) for s in ("feature", "user", "endpoint", "total")],
                    value=self._scope,
                    allow_blank=False,
                    id="scope",
                )
                yield Label("Feature / tenant / endpoint")
                yield Input(value=self._value, id="value")
                yield Label("Threshold (USD)")
                yield Input(placeholder="10.00", id="threshold", type="number")
                yield Label("Window (hours)")
                yield Input(value="24", id="window", type="number")
                yield Label("Webhook (optional)")
                yield Input(placeholder="https://hooks.slack.com/…", id="webhook")
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="success", id="save")
                yield Button("Cancel", variant="primary", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def _read(self) -> RuleForm:
        def num(field: str) -> float:
            raw = self.query_one(f"#{field}", Input).value.strip()
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{field}: enter a number") from None
            if value <= 0:
                raise ValueError(f"{field}: must be above zero")
            return value

        scope = str(self.query_one("#scope", Select).value)
        value = self.query_one("#value", Input).value.strip()
        if scope != "total" and not value:
            raise ValueError(f"which {scope}? fill in the name")
        name = self.query_one("#name", Input).value.strip() or f"{scope}:{value or 'all'}"
        return RuleForm(name, scope, value, num("threshold"), num("window"), self.query_one("#webhook", Input).value)

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
