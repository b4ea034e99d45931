"""Run a function when a module is first imported, so ``auto_instrument()`` never imports an SDK itself.

An app may have openai, anthropic and boto3 installed and use only one of them; importing the
others just to patch them would cost seconds of start-up (and a Lambda cold start). So an
integration whose library is not imported yet registers a callback here; a finder at the front of
``sys.meta_path`` wraps that module's loader, and the callback runs right after the module's code.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from spendtrace.sdk.instrument._common import note_error

__all__ = ["cancel_all", "install_when_imported", "pending", "when_imported"]

Callback = Callable[[ModuleType], object]

_lock = threading.Lock()
_callbacks: dict[str, list[Callback]] = {}


class _Loader(importlib.abc.Loader):
    """The module's own loader, then the callbacks waiting for it."""

    def __init__(self, loader: Any, callbacks: list[Callback]) -> None:
        self._loader = loader
        self._callbacks = callbacks

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader  # the module sees its real loader (resources, reload)
        self._loader.exec_module(module)
        for callback in self._callbacks:
            try:
                callback(module)
            except Exception:  # an SDK of an unexpected shape must not break the app's import
                note_error(f"{module.__name__} instrumentation")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a watched module, asks the other finders and wraps the loader they return."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        with _lock:
            callbacks = _callbacks.pop(fullname, None)
        if not callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, callbacks)
                return spec
        return None


_finder = _Finder()


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` now if ``name`` is imported, else right after it is first imported."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    with _lock:
        _callbacks.setdefault(name, []).append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def install_when_imported(name: str, patch: Callable[[ModuleType], bool]) -> bool:
    """Patch ``name`` now if it is imported (returning ``patch``'s result), else once it is; ``False`` if absent."""
    module = sys.modules.get(name)
    if module is not None:
        return patch(module)
    if importlib.util.find_spec(name) is None:
        return False
    when_imported(name, patch)
    return True


def pending() -> list[str]:
    """Modules with callbacks still waiting for their import."""
    with _lock:
        return sorted(_callbacks)


def cancel_all() -> None:
    """Forget every waiting callback and take the finder off ``sys.meta_path``."""
    with _lock:
        _callbacks.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
