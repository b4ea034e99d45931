"""Parse Python source for the tests that read the code itself.

CPython 3.11 keeps the AST builder's recursion counter in one global: when a collection during
``ast.parse`` finalizes an object whose ``__del__`` logs a traceback (asyncio's "Future exception was
never retrieved"), the traceback's caret placement parses again and the outer parse fails with
``SystemError: AST constructor recursion depth mismatch``. Pausing the collector for the parse keeps it
from being re-entered (no collection first: on the suite's late heap a full one costs a second).
"""

from __future__ import annotations

import ast
import gc


def parse_source(source: str) -> ast.Module:
    """``ast.parse`` with the garbage collector paused, so no finalizer runs inside it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if was_enabled:
            gc.enable()
