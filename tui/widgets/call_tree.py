"""A request's call tree: one node per span with feature, direct and subtree cost, and usage leaves."""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode as UINode

from spendtrace.server.model.dashboard import TreeNode
from tui.format import duration, money

#: Cells of the timing waterfall drawn at the start of each span's line.
WATERFALL = 24


def waterfall(start_ns: int, duration_ns: int, window: tuple[int, int], width: int = WATERFALL) -> Text:
    """Where a span ran within the request (``window`` = its first start, last end), as a bar of ``width`` cells.

    The view Jaeger and Langfuse draw: one row per span, offset by its start, as long as it took
    (at least one cell, so an instant span still shows where it happened).
    """
    lo, hi = window
    span = max(hi - lo, 1)
    first = min(width - 1, max(0, (start_ns - lo) * width // span))
    cells = max(1, min(width - first, -(-max(duration_ns, 0) * width // span)))
    bar = Text(no_wrap=True)
    bar.append("·" * first, style="#444444")
    bar.append("█" * cells, style="#5fafff")
    bar.append("·" * (width - first - cells), style="#444444")
    return bar


#: Columns the tree's guides indent each level by (Textual's Tree default).
INDENT = 4


def span_name(node: TreeNode) -> str:
    """'feature · operation' (or the feature alone)."""
    return f"{node.feature} · {node.operation}" if node.operation else node.feature


def node_label(
    node: TreeNode,
    request_total: int,
    window: tuple[int, int] | None = None,
    name_width: int = 0,
    bar_width: int = WATERFALL,
    compact: bool = False,
) -> Text:
    """'feature · operation  [waterfall]   direct $x   subtree $y (z%)   12.3ms', user text kept literal.

    ``name_width`` pads the name so every span's waterfall starts in the same column whatever its depth.
    ``compact`` (a narrow terminal, drawn without the waterfall) spaces the parts by two and leaves out
    the subtree of a span without child spans, which is its direct cost.
    """
    gap = "  " if compact else "   "
    t = Text(no_wrap=True)
    t.append(node.feature, style="bold red" if node.error else "bold")
    if node.operation:
        t.append(f" · {node.operation}", style="dim")
    if window is not None:
        t.append(" " * max(1, name_width - cell_len(span_name(node)) + 1))
        t.append_text(waterfall(node.start_ns, node.duration_ns, window, bar_width))
    t.append(f"{gap}direct ", style="dim")
    t.append(money(node.direct_nano), style="#87ff87" if node.direct_nano else "dim")
    if not compact or node.children:
        t.append(f"{gap}subtree ", style="dim")
        t.append(money(node.subtree_nano), style="bold #ffd75f" if node.subtree_nano else "dim")
    if request_total:
        t.append(f" ({100 * node.subtree_nano / request_total:.0f}%)", style="dim")
    t.append(f"{gap}{duration(node.duration_ns)}", style="dim")
    if node.error:
        t.append(f"{gap}✗ {node.error_type or 'error'}", style="red")
    if node.unpriced:
        t.append(f"{gap}{node.unpriced} unpriced", style="yellow")
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

    _bar = WATERFALL  # 0: a narrow terminal, drawn compact without the waterfall

    def action_scroll_home(self) -> None:
        self.cursor_line = 0

    def action_scroll_end(self) -> None:
        self.cursor_line = max(0, self.last_line)

    def show(self, roots: list[TreeNode]) -> None:
        """Replace the tree with these roots (a request tree is loaded once, not live-updated)."""
        self.clear()
        total = sum(r.subtree_nano for r in roots)
        window = request_window(roots)
        # the names column, in cells from the tree's left edge: deeper spans get less of it
        width = max((_name_start(n) + cell_len(span_name(n)) for n in _walk(roots)), default=0)
        # the bar takes less of a narrower terminal and none of an 80-column one, so the costs stay in view
        cols = self.size.width or 160
        self._bar = WATERFALL if cols >= 140 else 16 if cols >= 100 else 0
        self.root.set_label(Text(f"request  total {money(total)}", style="bold"))
        for r in roots:
            self._add(self.root, r, total, window, width)
        self.root.expand_all()

    def _add(
        self, parent: UINode[str], node: TreeNode, total: int, window: tuple[int, int] | None, width: int
    ) -> None:
        has_kids = bool(node.children or node.usage)
        compact = not self._bar
        label = node_label(node, total, None if compact else window, width - _name_start(node), self._bar, compact)
        ui = parent.add(label, data=node.span_id, allow_expand=has_kids)
        for u in node.usage:
            leaf = Text("  ")
            leaf.append(u.key, style="cyan")
            if u.service and self._bar:  # (the usage key names it; a narrow terminal keeps the cells for the cost)
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
            self._add(ui, child, total, window, width)


def _name_start(node: TreeNode) -> int:
    """Cells before a span's name: the guides of its depth, and the fold icon when it has children."""
    return INDENT * node.depth + (2 if node.children or node.usage else 0)


def _walk(nodes: list[TreeNode]) -> list[TreeNode]:
    return [m for n in nodes for m in (n, *_walk(n.children))]


def request_window(roots: list[TreeNode]) -> tuple[int, int] | None:
    """(first start, last end) of a request's spans, in epoch ns; ``None`` for an empty tree."""
    spans = _walk(roots)
    if not spans:
        return None
    return min(s.start_ns for s in spans), max(s.start_ns + s.duration_ns for s in spans)
