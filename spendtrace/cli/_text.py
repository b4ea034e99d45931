"""Stored names printed safely: terminal control and bidi override characters are shown escaped.

Names come from the apps' spans (feature, tenant, endpoint, request ids ...), so anyone who can
record a span chooses them. Printed raw, ``\\x1b`` starts a terminal escape sequence (rewrite the
screen, set the title) and ``\\u202e`` reverses the text after it. ``--json`` output is escaped by
the JSON encoder already.
"""

from __future__ import annotations

import re

__all__ = ["terminal_safe"]

#: C0 and C1 controls, DEL, bidi embeddings / overrides / isolates / marks, line and paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_NEWLINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control and bidi characters written as ``\\x1b`` / ``\\u202e`` escapes."""
    return (_UNSAFE_KEEP_NEWLINES if keep_newlines else _UNSAFE).sub(_escape, text)
