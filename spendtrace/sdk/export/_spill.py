"""Spill files: where batches wait on local disk while the exporter cannot take them.

Layout: a directory of ``spill-<time_ns>-<pid>-<seq>.spill`` files. Each file is a sequence of
frames; a frame is a 12-byte header (payload length, CRC-32 of the payload, span count, all
big-endian u32) followed by the payload, a msgpack array of spans
(``spendtrace.schema.decode_spans`` decodes it). Every frame is fsync'ed before ``write``
returns. A file is rotated at ``max_file_bytes``; the directory as a whole is bounded by
``max_bytes`` (``SpillFull`` past it).

Replay reads files oldest first (names sort by creation time). Whoever replays or writes a
file holds an exclusive ``flock`` on it, so two live processes sharing the directory never
replay the same file, and nobody replays a file still being written. Progress within a file
is kept in a ``<file>.pos`` side file (byte offset of the frames already exported), and a
file is deleted only after all its frames were exported.

Trust: the directory is created 0700 (and any missing parent with it), and is used only while
it is owned by this process's user and not group/world-writable, in a parent owned by this user
or root that is not writable by others (unless sticky, like ``/tmp``). A spill file owned by
another user, group/world-writable, or not a regular file is never replayed: it is logged,
counted (``refused``) and left in place for the operator. Otherwise another local user could
plant spans in a predictable directory and have them exported as ours.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from spendtrace.schema import Span, decode_spans

__all__ = ["SpillFull", "SpillStore", "SpillUntrusted"]

log = logging.getLogger("spendtrace.export")

_HEADER = struct.Struct(">III")
_PREFIX = "spill-"
_SUFFIX = ".spill"
_encoder = msgspec.msgpack.Encoder()


class SpillFull(OSError):
    """The spill directory reached its size bound."""


class SpillUntrusted(OSError):
    """The spill directory belongs to another user or others can write to it: not used."""


def _untrusted(st: os.stat_result) -> str | None:
    """Why a spill directory or file with this ``stat`` is not ours to trust (``None``: it is)."""
    euid = os.geteuid()
    if st.st_uid != euid:
        return f"owned by uid {st.st_uid}, not {euid}"
    if st.st_mode & 0o022:
        return f"mode {stat.S_IMODE(st.st_mode):04o} is group/world-writable"
    return None


def _untrusted_parent(st: os.stat_result) -> str | None:
    """Why the directory holding the spill directory lets others replace it (``None``: it does not)."""
    if st.st_uid not in (os.geteuid(), 0):
        return f"its parent is owned by uid {st.st_uid}"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"its parent (mode {stat.S_IMODE(st.st_mode):04o}) is writable by others and not sticky"
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Cursor:
    """A file being replayed: its locked descriptor and the offset of the next frame."""

    def __init__(self, path: Path, fd: int, offset: int, size: int) -> None:
        self.path = path
        self.fd = fd
        self.offset = offset
        self.size = size


class SpillStore:
    """Append-only spill files in one directory, with bounded size and in-order replay."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 512 * 1024 * 1024,
        max_file_bytes: int = 16 * 1024 * 1024,
        fsync: bool = True,
        rescan_interval: float = 5.0,
    ) -> None:
        if max_bytes <= 0 or max_file_bytes <= 0:
            raise ValueError("spill size bounds must be positive")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes
        self.fsync = fsync
        self.rescan_interval = rescan_interval
        self._init_state()

    def _init_state(self) -> None:
        self._wlock = threading.Lock()  # the file being written
        self._rlock = threading.Lock()  # the file being replayed
        self._seq = 0
        self._wfd: int | None = None
        self._wpath: Path | None = None
        self._wsize = 0
        self._cursor: _Cursor | None = None
        self._dir_bytes: int | None = None  # unknown until the first scan
        self._busy: dict[str, float] = {}  # files locked by another live writer/replayer -> retry time
        self._backlog = True  # assume a previous process may have left files, until a scan says no
        self._next_scan = 0.0
        self._refused: set[str] = set()  # spill files never to replay (untrusted), by name
        self.refused = 0  # spill files refused (each counted once)
        self._dir_refusal: str | None = None  # the last reason the directory was refused, logged once

    # ---- writing -------------------------------------------------------------------------

    def write(self, spans: Sequence[Span]) -> int:
        """Append one frame holding ``spans``, fsync it, and return its size in bytes.

        Raises ``SpillFull`` past ``max_bytes`` and ``OSError`` when the disk refuses.
        """
        payload = _encoder.encode(list(spans))
        frame = _HEADER.pack(len(payload), zlib.crc32(payload), len(spans)) + payload
        with self._wlock:
            if self._dir_bytes is None or self._dir_bytes + len(frame) > self.max_bytes:
                self._dir_bytes = self._scan_bytes()  # others may have replayed and deleted files
                if self._dir_bytes + len(frame) > self.max_bytes:
                    raise SpillFull(f"spill directory {self.directory} is at its bound of {self.max_bytes} bytes")
            if self._wfd is None or self._wsize + len(frame) > self.max_file_bytes:
                self._close_writer()
                self._open_writer()
            assert self._wfd is not None
            try:
                _write_all(self._wfd, frame)
                if self.fsync:
                    os.fsync(self._wfd)
            except OSError:
                self._close_writer()  # never append after a torn frame
                raise
            self._wsize += len(frame)
            self._dir_bytes += len(frame)
            self._backlog = True
            return len(frame)

    def _ensure_dir(self) -> None:
        """Create the directory (and missing parents) 0700 whatever the umask; raise unless it is trustworthy."""
        missing: list[Path] = []
        p = self.directory
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                continue
            os.chmod(d, 0o700)
        reason = self._dir_untrusted()
        if reason is not None:
            raise SpillUntrusted(f"spill directory {self.directory} is {reason}; not using it")

    def _dir_untrusted(self) -> str | None:
        try:
            st = os.stat(self.directory)
            parent = os.stat(self.directory.resolve().parent)
        except FileNotFoundError:
            return None  # nothing there yet: nothing to replay, and writing creates it 0700
        if not stat.S_ISDIR(st.st_mode):
            return "not a directory"
        return _untrusted(st) or _untrusted_parent(parent)

    def _open_writer(self) -> None:
        self._ensure_dir()
        while True:
            self._seq += 1
            name = f"{_PREFIX}{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{_SUFFIX}"
            path = self.directory / name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            break
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        self._wfd, self._wpath, self._wsize = fd, path, 0

    def _close_writer(self) -> None:
        fd, self._wfd, self._wpath = self._wfd, None, None
        self._wsize = 0
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # releases the lock: the file becomes replayable

    def rotate(self) -> None:
        """Close the file being written, so its frames can be replayed."""
        with self._wlock:
            self._close_writer()

    # ---- bookkeeping ---------------------------------------------------------------------

    def _list(self) -> list[Path]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [self.directory / n for n in sorted(names) if n.startswith(_PREFIX) and n.endswith(_SUFFIX)]

    def _replayable(self) -> list[Path]:
        """Spill files that may be replayed: none in an untrusted directory, never a refused file."""
        files = [p for p in self._list() if p.name not in self._refused]
        if not files:
            return files
        reason = self._dir_untrusted()
        if reason is not None:
            for p in files:
                self._refuse(p, f"its directory is {reason}")
            return []
        return files

    def _refuse(self, path: Path, reason: str) -> None:
        """Never replay ``path``: log it once, count it, leave it for the operator to inspect."""
        if path.name in self._refused:
            return
        self._refused.add(path.name)
        self.refused += 1
        log.error("spendtrace: refusing to replay spill file %s: %s (left in place, not exported)", path, reason)

    def _scan_bytes(self) -> int:
        total = 0
        for p in self._list():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def bytes_on_disk(self) -> int:
        """Bytes currently held by spill files in the directory (all processes)."""
        return self._scan_bytes()

    def has_backlog(self) -> bool:
        """Whether there may be frames to replay (cheap; rescans the directory now and then)."""
        if self._backlog or self._cursor is not None:
            return True
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + self.rescan_interval
            self._backlog = bool(self._replayable())
        return self._backlog

    # ---- replay --------------------------------------------------------------------------

    def replay_one(self, export: Callable[[list[Span]], None]) -> int:
        """Export the oldest frame not yet replayed; return its span count (0: nothing replayable now).

        ``export`` raising leaves the frame in place (it is retried later) and propagates.
        """
        with self._rlock:
            for _ in range(16):  # step over empty, torn or corrupt files
                cur = self._cursor or self._next_cursor()
                if cur is None:
                    return 0
                self._cursor = cur
                spans, end = self._read_frame(cur)
                if spans is None:
                    self._finish(cur)
                    continue
                if spans:
                    export(spans)
                cur.offset = end
                self._save_pos(cur)
                if cur.offset >= cur.size:
                    self._finish(cur)
                if spans:
                    return len(spans)
            return 0

    def _next_cursor(self) -> _Cursor | None:
        now = time.monotonic()
        files = self._replayable()
        with self._wlock:
            ready = [p for p in files if p != self._wpath and self._busy.get(p.name, 0.0) <= now]
            if not ready and self._wpath is not None and self._wsize > 0:
                ready = [self._wpath]  # only our own open file is left: close it so it can be replayed
                self._close_writer()
        for path in ready:
            cur = self._try_open(path)
            if cur is not None:
                return cur
            self._busy[path.name] = now + self.rescan_interval  # another live process holds it
        self._backlog = False
        self._next_scan = now + self.rescan_interval
        self._busy = {k: v for k, v in self._busy.items() if v > now}
        return None

    def _try_open(self, path: Path) -> _Cursor | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if os.path.islink(path):
                self._refuse(path, "it is a symbolic link")
            elif not isinstance(exc, FileNotFoundError):
                log.debug("cannot open spill file %s", path, exc_info=True)
            return None
        try:
            st = os.fstat(fd)
            reason = "not a regular file" if not stat.S_ISREG(st.st_mode) else _untrusted(st)
            if reason is not None:
                os.close(fd)
                self._refuse(path, reason)
                return None
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != st.st_ino:  # replayed and deleted by someone else meanwhile
                raise OSError("replaced")
        except OSError:
            os.close(fd)
            return None
        return _Cursor(path, fd, self._load_pos(path), st.st_size)

    @staticmethod
    def _pos_path(path: Path) -> Path:
        return path.with_name(path.name + ".pos")

    def _load_pos(self, path: Path) -> int:
        try:
            return int(self._pos_path(path).read_text("ascii").strip() or 0)
        except (OSError, ValueError):
            return 0

    def _save_pos(self, cur: _Cursor) -> None:
        if cur.offset >= cur.size:
            return  # the file is about to be deleted
        try:
            tmp = self._pos_path(cur.path).with_suffix(".tmp")
            tmp.write_text(str(cur.offset), "ascii")
            os.replace(tmp, self._pos_path(cur.path))
        except OSError:  # worst case the frame is replayed again; consumers drop duplicate span ids
            log.debug("could not record replay progress for %s", cur.path, exc_info=True)

    def _read_frame(self, cur: _Cursor) -> tuple[list[Span] | None, int]:
        head = os.pread(cur.fd, _HEADER.size, cur.offset)
        if len(head) < _HEADER.size:
            return None, cur.offset
        length, crc, _count = _HEADER.unpack(head)
        payload = os.pread(cur.fd, length, cur.offset + _HEADER.size)
        if len(payload) < length:
            log.warning("spill file %s ends in a torn frame at byte %d; ignoring its tail", cur.path, cur.offset)
            return None, cur.offset
        end = cur.offset + _HEADER.size + length
        if zlib.crc32(payload) != crc:
            log.error("spill file %s has a corrupt frame at byte %d; set aside as .corrupt", cur.path, cur.offset)
            with contextlib.suppress(OSError):
                os.replace(cur.path, cur.path.with_suffix(".corrupt"))
            return None, cur.offset
        try:
            return decode_spans(payload), end
        except msgspec.MsgspecError:
            log.error("spill file %s has an undecodable frame at byte %d; skipping it", cur.path, cur.offset)
            return [], end

    def _finish(self, cur: _Cursor) -> None:
        """Delete a fully replayed file (then release its lock)."""
        self._cursor = None
        for p in (cur.path, self._pos_path(cur.path)):
            with contextlib.suppress(OSError):
                p.unlink()
        with self._wlock:
            if self._dir_bytes is not None:
                self._dir_bytes = max(0, self._dir_bytes - cur.size)
        with contextlib.suppress(OSError):
            os.close(cur.fd)

    # ---- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the writer and any replay cursor (their files stay for a later replay)."""
        with self._wlock:
            self._close_writer()
        with self._rlock:
            cur, self._cursor = self._cursor, None
            if cur is not None:
                with contextlib.suppress(OSError):
                    os.close(cur.fd)

    def after_fork_in_child(self) -> None:
        """Drop the parent's descriptors (its locks stay with the parent) and start fresh names."""
        for fd in (self._wfd, self._cursor.fd if self._cursor else None):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)  # closing our copy does not release the parent's flock
        self._init_state()
