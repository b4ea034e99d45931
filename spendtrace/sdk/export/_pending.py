"""The crash record: how many spans a process held in memory, so the next start can count them if it was killed.

Each ``BatchProcessor`` keeps one small file in its spill directory, ``pending-<pid>-<id>.rec``,
locked (``flock``) for as long as the process lives. Its content is one line, the number of spans
accepted from the app and not yet exported, spilled or dropped, as of the last time the export
thread (before it hands a batch over) or the spill thread (before it writes a frame) looked;
``os.pwrite`` over the same bytes, no fsync: a killed process's page cache survives it, a host
crash is not what this counts. At most one write per batch handed over, none on the recording path.

The figure is a lower bound of what a SIGKILL (or the OOM killer) loses: it leaves out the batch
being handed over at that moment and spans recorded since the last write (at most ``max_delay``).
It never counts a span that was delivered: spans are only counted while they wait in memory, and
the record is rewritten before any of them is handed over.

A process's lock dies with it. ``reap`` (called when a processor starts) takes every record whose
lock it can take, by renaming it first so that two starting processes never count one record twice,
and returns what they held; a clean shutdown deletes its own record.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["PendingRecord", "reap"]

_PREFIX = "pending-"
_SUFFIX = ".rec"
_WIDTH = 24  # the record's bytes: a number, spaces, a newline; rewritten in place


class PendingRecord:
    """This processor's record; ``write`` it with the spans held in memory, ``close`` it on a clean exit."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{_PREFIX}{os.getpid()}-{os.urandom(4).hex()}{_SUFFIX}"
        self._last = -1
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        self._fd: int | None = fd
        self.write(0)

    def write(self, pending: int) -> None:
        """Record ``pending`` (the caller serialises writes); nothing is written when it did not change."""
        fd = self._fd
        if fd is None or pending == self._last:
            return
        os.pwrite(fd, f"{pending}".ljust(_WIDTH - 1).encode() + b"\n", 0)
        self._last = pending

    def close(self, *, delete: bool) -> None:
        """Release the record; ``delete`` it when nothing is left in memory (a clean shutdown)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if delete:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(fd)

    def forget_in_child(self) -> None:
        """In a forked child: close the parent's descriptor (its lock stays the parent's) without touching the file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def reap(directory: Path) -> list[tuple[int, int]]:
    """Take the records of dead processes in ``directory``: ``[(pid, spans it held), ...]``, records deleted.

    A record whose lock is held belongs to a live process and is left alone. An unreadable figure
    counts 0 (the file is still removed).
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out: list[tuple[int, int]] = []
    for name in names:
        if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
            continue
        path = directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its process is alive
            claimed = directory / f"claimed-{os.getpid()}-{name}"
            try:
                os.rename(path, claimed)  # only one reaper wins a record
            except OSError:
                continue
            data = os.pread(fd, _WIDTH, 0)
            with contextlib.suppress(OSError):
                os.unlink(claimed)
        finally:
            os.close(fd)
        try:
            held = int(data.strip() or b"0")
        except ValueError:
            held = 0
        pid_text = name[len(_PREFIX) :].split("-", 1)[0]
        out.append((int(pid_text) if pid_text.isdigit() else 0, max(held, 0)))
    return out
