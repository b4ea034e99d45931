"""A one-row text bar (header, subtitles, hints) that repaints only itself, and only when its text changed."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Line(Static):
    """A Static one row high and as wide as its container, so new text never needs a screen layout.

    ``Static.update`` asks for a layout of the whole screen by default; on the live screens that was
    one layout per refresh (and the table's scrollbars repainted after it, an extra frame).
    """

    DEFAULT_CSS = """
    Line { height: 1; width: 1fr; }
    """

    def __init__(self, text: Text | str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(text, id=id, classes=classes)
        self._shown: tuple[str, object, object] | None = None

    def show(self, text: Text | str, *, layout: bool = False) -> None:
        """Show ``text`` (a plain string is shown as typed, never parsed as markup) if it differs.

        ``layout`` for a line styled ``height: auto``, which wraps on a narrow terminal: new text may need
        another row.
        """
        if isinstance(text, str):
            text = Text(text)
        key = (text.plain, str(text.style), tuple(text.spans))
        if key == self._shown:
            return
        self._shown = key
        if layout and self.size.width and self.size.height:
            # a layout of the screen only when the rows the text needs change (a live line's counts change often)
            layout = len(text.wrap(self.app.console, self.size.width)) != self.size.height
        self.update(text, layout=layout)
