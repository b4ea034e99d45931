"""A request's call tree: one node per span with feature, direct and subtree cost, and usage leaves."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode as UINode

from spendtrace.server.model.dashboard import TreeNode
from tui.format import duration, money


def node_label(node: TreeNode, request_total: int) -> Text:
    """'feature · operation   direct $x   subtree $y (z%)   12.3ms' with user text kept literal."""
    t = Text(no_wrap=True)
    t.append(node.feature, style="bold red" if node.error else "bold")
    if node.operation:
        t.append(f" · {node.operation}", style="dim")
    t.append("   direct ", style="dim")
    t.append(money(node.direct_nano), style="#87ff87" if node.direct_nano else "dim")
    t.append("   subtree ", style="dim")
    t.append(money(node.subtree_nano), style="bold #ffd75f" if node.subtree_nano else "dim")
    if request_total:
        t.append(f" ({100 * node.subtree_nano / request_total:.0f}%)", style="dim")
    t.append(f"   {duration(node.duration_ns)}", style="dim")
    if node.error:
        t.append(f"   ✗ {node.error_type or 'error'}", style="red")
    if node.unpriced:
        t.append(f"   {node.unpriced} unpriced", style="yellow")
    return t


class CallTree(Tree[str]):
    """Tree with vim motions; spans are expandable nodes, usage items are leaves."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_home", "Top", show=False),
        Binding("G", "scroll_end", "Bottom", show=False),
        Binding("h", "cursor_parent", "Parent", show=False),
    ]

    def action_scroll_home(self) -> None:
        self.cursor_line = 0

    def action_scroll_end(self) -> None:
        self.cursor_line = max(0, self.last_line)

    def show(self, roots: list[TreeNode]) -> None:
        """Replace the tree with these roots (a request tree is loaded once, not live-updated)."""
        self.clear()
        total = sum(r.subtree_nano for r in roots)
        self.root.set_label(Text(f"request  total {money(total)}", style="bold"))
        for r in roots:
            self._add(self.root, r, total)
        self.root.expand_all()

    def _add(self, parent: UINode[str], node: TreeNode, total: int) -> None:
        has_kids = bool(node.children or node.usage)
        ui = parent.add(node_label(node, total), data=node.span_id, allow_expand=has_kids)
        for u in node.usage:
            leaf = Text("  ")
            leaf.append(u.key, style="cyan")
            if u.service:
                leaf.append(f" [{u.service}]", style="dim")
            if u.units:
                leaf.append(f"  {u.units}", style="dim")
            leaf.append("  ")
            if u.priced:
                leaf.append(money(u.cost_nano), style="#87ff87")
            else:
                leaf.append("unpriced", style="bold yellow")
            ui.add_leaf(leaf, data=None)
        for child in node.children:
            self._add(ui, child, total)
