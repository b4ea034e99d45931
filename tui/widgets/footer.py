"""The key footer, rebuilt only when the keys it shows change."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    """Textual's Footer, without rebuilding every key widget each time its screen comes back.

    Footer recomposes (unmounts and mounts a widget per key, restyling each) whenever its screen's
    bindings are announced, which happens on every switch to the screen; that was most of the time
    from pressing a screen's number key to seeing it. The shown keys rarely differ between visits.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._shown_keys: tuple[Any, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        will_compose = screen.app.app_focus and self.is_attached and screen is self.screen
        if will_compose:
            shown = [
                (binding.key, binding.description, binding.action, binding.group, enabled, tooltip)
                for (_, binding, enabled, tooltip) in screen.active_bindings.values()
                if binding.show
            ]
            keys = (*shown, self.show_command_palette, self.compact)
            if self._bindings_ready and keys == self._shown_keys:
                return
            self._shown_keys = keys
        super().bindings_changed(screen)
