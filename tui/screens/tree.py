"""One request's call tree, pushed over the Requests screen; Esc goes back."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Static

from spendtrace.server.model.dashboard import TreeNode
from spendtrace.server.store.base import DashboardReads
from tui.format import duration, money, utc
from tui.widgets.call_tree import CallTree, request_window
from tui.widgets.footer import KeyFooter
from tui.widgets.status import StatusHeader


class RequestTreeScreen(Screen[None]):
    """Shows the spans of ``request_id`` as a foldable tree with direct and subtree costs."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "expand_all", "Expand all"),
        Binding("c", "collapse_all", "Collapse all"),
    ]

    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.roots: list[TreeNode] = []

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield Static(Text(f"request {self.request_id}", style="bold"), id="subtitle", classes="subtitle")
        yield CallTree("request", id="tree")
        yield KeyFooter()

    async def load(self, store: DashboardReads) -> None:
        """Query the request's spans and show them (awaited by the app when it opens the screen)."""
        self.roots = await store.request_tree(self.request_id)
        tree = self.query_one(CallTree)
        tree.show(self.roots)
        total = sum(r.subtree_nano for r in self.roots)
        spans = _count(self.roots)
        t = Text("request ", style="dim")  # (the line's padding is the first column, also where it wraps)
        t.append(self.request_id, style="bold")
        root = self.roots[0] if self.roots else None
        if root is not None:  # what the request was: the root span says (names kept literal)
            if root.endpoint:
                t.append("  ")
                t.append(root.endpoint, style="bold")
            if root.user_id:
                t.append("   tenant ", style="dim")
                t.append(root.user_id, style="bold")
            window = request_window(self.roots)
            if window is not None:
                t.append(f"   {utc(window[0])}  took {duration(window[1] - window[0])}", style="dim")
        t.append(f"   {spans} spans   total ", style="dim")
        t.append(money(total), style="bold #ffd75f")
        if not self.roots:
            t.append("   (no spans stored for this request)", style="yellow")
        t.append("   ·  Enter/space fold  e expand all  c collapse all  Esc back", style="dim")
        self.query_one("#subtitle", Static).update(t)
        tree.focus()

    def action_expand_all(self) -> None:
        self.query_one(CallTree).root.expand_all()

    def action_collapse_all(self) -> None:
        tree = self.query_one(CallTree)
        for child in tree.root.children:
            child.collapse_all()

    def on_mount(self) -> None:
        app: Any = self.app
        app.load_tree(self)


def _count(nodes: list[TreeNode]) -> int:
    return sum(1 + _count(n.children) for n in nodes)
