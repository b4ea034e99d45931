"""Auto-instrumentation: record what boto3, openai and anthropic calls use, with no change to the calls.

``auto_instrument()`` installs one integration per library that is importable and returns their
names; libraries that are missing are skipped. It is idempotent, and ``uninstrument()`` removes
everything (mostly for tests). What each integration records, and how tokens are normalised so
nothing is counted twice, is documented in its module: ``_botocore`` (DynamoDB, S3, SQS, Lambda,
Bedrock runtime), ``_openai``, ``_anthropic``; an LLM call is keyed by its raw model id (``_models``).

Nothing here raises into the app: a response we cannot read is counted (``error_count()``), logged
once, and the app's call returns untouched. Calls made inside ``suppress_instrumentation()``
(the exporter's and the pricing clients' own) record nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# Only the pure key table at import: the OTLP receiver (server layer) imports ``_models`` and ``_dynamodb``,
# and importing them runs this file, which must not load the recording machinery (``_common`` -> scope).
from spendtrace.sdk.instrument._models import KNOWN_PRICE_KEYS, model_key

__all__ = ["INTEGRATIONS", "KNOWN_PRICE_KEYS", "auto_instrument", "error_count", "installed", "model_key",
           "reset_errors", "uninstrument"]  # fmt: skip

#: Integration names, in the order they are installed.
INTEGRATIONS = ("boto3", "openai", "anthropic")

_lock = threading.Lock()
_installed: set[str] = set()


def _installers() -> dict[str, tuple[Callable[[], bool], Callable[[], None]]]:
    from spendtrace.sdk.instrument import _anthropic, _botocore, _openai

    return {
        "boto3": (_botocore.install, _botocore.uninstall),
        "openai": (_openai.install, _openai.uninstall),
        "anthropic": (_anthropic.install, _anthropic.uninstall),
    }


def auto_instrument(*, only: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Instrument boto3, openai and anthropic (or just the integrations named in ``only``); idempotent.

    Returns the names of the integrations active after the call, e.g. ``["boto3", "openai"]`` when
    anthropic is not installed. boto3 clients created before this call are instrumented too. A
    library that is installed but not imported yet is not imported here: it is instrumented when
    the app first imports it, so instrumenting costs no start-up time for SDKs the app never uses.
    """
    if only is not None:
        unknown = set(only) - set(INTEGRATIONS)
        if unknown:
            raise ValueError(f"unknown integrations {sorted(unknown)}; choose from {list(INTEGRATIONS)}")
    wanted = INTEGRATIONS if only is None else tuple(only)
    with _lock:
        installers = _installers()
        for name in wanted:
            if name in _installed:
                continue
            try:
                ok = installers[name][0]()
            except Exception:  # a library of an unexpected shape: skip it, never break the app's start-up
                from spendtrace.sdk.instrument._common import note_error

                note_error(f"{name} install")
                ok = False
            if ok:
                _installed.add(name)
        return [n for n in INTEGRATIONS if n in _installed]


def uninstrument() -> None:
    """Remove every integration ``auto_instrument`` installed (live boto3 clients included)."""
    with _lock:
        installers = _installers()
        from spendtrace.sdk.instrument import _hooks

        _hooks.cancel_all()
        for name in INTEGRATIONS:
            try:
                installers[name][1]()
            except Exception:
                from spendtrace.sdk.instrument._common import note_error

                note_error(f"{name} uninstall")
        _installed.clear()


def error_count(where: str | None = None) -> int:
    """Failures counted so far for integration ``where``, or for all of them (each kind logged once)."""
    from spendtrace.sdk.instrument import _common

    return _common.error_count(where)


def reset_errors() -> None:
    """Forget the counts (and log the next failure of each integration again); for tests."""
    from spendtrace.sdk.instrument import _common

    _common.reset_errors()


def installed() -> list[str]:
    """Names of the integrations currently installed."""
    return [n for n in INTEGRATIONS if n in _installed]
