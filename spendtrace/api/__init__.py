"""The read-only HTTP API (``spendtrace api``): JSON over the same queries as the CLI and TUI.

Needs the ``[api]`` extra (FastAPI, uvicorn, prometheus-client). ``create_app(db_path)`` returns
the ASGI app; ``serve(...)`` runs it with uvicorn.
"""

from __future__ import annotations

from spendtrace.api.app import MAX_LIMIT, create_app, serve

__all__ = ["MAX_LIMIT", "create_app", "serve"]
