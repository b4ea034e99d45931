"""The header bar: totals, spend rate, ingest rate, what is left out, the clock and the PAUSED badge."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from spendtrace.server.model.dashboard import Overview
from tui.format import count, money, utc
from tui.widgets.line import Line

#: Below this many columns the header drops the file name, the ingest rate and the broker, and
#: shortens its labels, so the money and what is left out (unpriced, dead letters, alerts) stay visible.
COMPACT_BELOW = 120


def header_text(
    ov: Overview | None, *, db_name: str, now_ns: int, paused: bool, broker: str | None, width: int | None = None
) -> Text:
    """Compose the header line (pure, so it can be tested and snapshotted); compact below ``COMPACT_BELOW``."""
    if width is not None and width < COMPACT_BELOW:
        return _compact(ov, now_ns=now_ns, paused=paused)
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" ◆ spendtrace ", style="bold black on #5fd7ff")
    t.append(f" {db_name} ", style="dim")
    t.append(utc(now_ns, "%H:%M:%S UTC"), style="dim")
    if paused:
        t.append("  ")
        t.append(" PAUSED ", style="bold black on yellow")
    if ov is None:
        t.append("   loading…", style="dim")
        return t
    sep = ("  │ ", "dim")
    t.append(*sep)
    t.append("total ", style="dim")
    t.append(money(ov.total_nano), style="bold #87ff87")
    t.append("  ")
    t.append(f"{money(ov.last_hour_nano)}/h", style="bold #ffd75f")
    t.append(*sep)
    t.append(f"{count(ov.spans)} spans", style="bold")
    t.append("  ingest ", style="dim")
    t.append("—" if ov.ingest_per_s is None else f"{count(round(ov.ingest_per_s))}/s", style="bold")
    t.append(*sep)
    t.append("unpriced ", style="dim")
    t.append(count(ov.unpriced_items), style="bold yellow" if ov.unpriced_items else "dim")
    t.append("  dead ", style="dim")
    t.append(count(ov.dead_letters), style="bold red" if ov.dead_letters else "dim")
    t.append("  alerts ", style="dim")
    t.append(count(ov.alert_events), style="bold magenta" if ov.alert_events else "dim")
    t.append(*sep)
    t.append("broker ", style="dim")
    t.append(broker or "off", style="green" if broker else "dim")
    return t


def _compact(ov: Overview | None, *, now_ns: int, paused: bool) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(" ◆ spendtrace ", style="bold black on #5fd7ff")
    t.append(" " + utc(now_ns, "%H:%M"), style="dim")
    if paused:
        t.append(" ")
        t.append(" PAUSED ", style="bold black on yellow")
    if ov is None:
        t.append("  loading…", style="dim")
        return t
    sep = (" │ ", "dim")
    t.append(*sep)
    t.append(money(ov.total_nano), style="bold #87ff87")
    t.append(" ")
    t.append(f"{money(ov.last_hour_nano)}/h", style="bold #ffd75f")
    t.append(*sep)
    t.append(f"{count(ov.spans)} spans", style="bold")
    t.append(*sep)
    t.append("unpr ", style="dim")
    t.append(count(ov.unpriced_items), style="bold yellow" if ov.unpriced_items else "dim")
    t.append(" dead ", style="dim")
    t.append(count(ov.dead_letters), style="bold red" if ov.dead_letters else "dim")
    t.append(" alerts ", style="dim")
    t.append(count(ov.alert_events), style="bold magenta" if ov.alert_events else "dim")
    return t


class StatusHeader(Line):
    """Mirrors the app's ``overview`` and ``paused`` state; one per screen."""

    DEFAULT_CSS = """
    StatusHeader { height: 1; background: $panel; }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "overview", self._changed, init=False)
        self.watch(self.app, "paused", self._changed, init=False)
        self._changed()

    def _changed(self, *_: Any) -> None:
        app: Any = self.app
        self.show(
            header_text(
                app.overview,
                db_name=app.db_label,
                now_ns=app.clock(),
                paused=app.paused,
                broker=app.bootstrap,
                width=self.size.width or None,
            )
        )

    def on_resize(self) -> None:
        self._changed()
