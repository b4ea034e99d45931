"""Custom messages passed between widgets, screens and the app."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class SwitchScreen(Message):
    """Ask the app to show another screen (mode) by name."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode


class AlertArrived(Message):
    """An alert event read from the alerts topic (a decoded JSON object, or raw text)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__()
        self.payload = payload


class OpenRequest(Message):
    """Ask the app to open a request's call tree."""

    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id
