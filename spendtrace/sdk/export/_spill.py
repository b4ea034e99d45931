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
import re
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from spendtrace.schema import Span, UsageItem, decode_span, decode_spans

__all__ = ["SpillFull", "SpillStore", "SpillUntrusted"]

log = logging.getLogger("spendtrace.export")

_HEADER = struct.Struct(">III")
_PREFIX = "spill-"
_SUFFIX = ".spill"
_encoder = msgspec.msgpack.Encoder()
_raw_list = msgspec.msgpack.Decoder(list[msgspec.Raw])
_any = msgspec.msgpack.Decoder()
#: where a frame's payload (a msgpack array: fixarray, array16, array32) may start
_ARRAY_MARKER = re.compile(rb"[\x90-\x9f\xdc\xdd]")


def _unchecked_span(raw: msgspec.Raw) -> Span | None:
    """``raw`` as a ``Span``: validated when it passes the wire schema, else built field by field unchecked."""
    try:
        return decode_span(raw)
    except msgspec.ValidationError:
        pass
    except msgspec.MsgspecError:
        return None
    try:
        fields = _any.decode(raw)
        if not isinstance(fields, list):
            return None
        del fields[len(Span.__struct_fields__) :]  # fields a newer SDK appended: ignored, as decoding does
        if len(fields) > 12 and isinstance(fields[12], list):
            n = len(UsageItem.__struct_fields__)
            fields[12] = tuple(UsageItem(*u[:n]) if isinstance(u, list) else u for u in fields[12])
        if len(fields) > 14 and isinstance(fields[14], list):
            fields[14] = tuple(fields[14])
        return Span(*fields)
    except (TypeError, msgspec.MsgspecError):
        return None


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
        self.lost_frames = 0  # frames given up on replay (damaged, torn, undecodable)
        self.lost_spans = 0  # spans known to be in them (a damaged header does not say how many)
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
        """Bytes of every ``spill-*`` file in the directory: spill files, and also ``.pos`` / ``.tmp`` leftovers and
        ``.corrupt`` files set aside by older versions, so that nothing grows past ``max_bytes`` unseen."""
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for e in entries:
                    if e.name.startswith(_PREFIX):
                        with contextlib.suppress(OSError):
                            total += e.stat(follow_symlinks=False).st_size
        except OSError:
            return 0
        return total

    def bytes_on_disk(self) -> int:
        """Bytes currently held by ``spill-*`` files in the directory (all processes, every suffix)."""
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
        """The frame at ``cur.offset``: (its spans, the offset after it); (None, _) past the file's last good frame.

        A frame that does not check out (a flipped byte: bad CRC, or a header whose length runs past
        the end) costs only itself: replay goes on at the next frame that checks out, and the loss
        is logged and counted (``lost_frames``, ``lost_spans``). Nothing valid after it means a torn
        tail (a crash mid-write) or damage in the last frame: the file ends there.
        """
        head = os.pread(cur.fd, _HEADER.size, cur.offset)
        if len(head) < _HEADER.size:
            if head:
                self._lose(cur, cur.offset, cur.size, None, "a torn frame header at the end")
            return None, cur.offset
        length, crc, count = _HEADER.unpack(head)
        end = cur.offset + _HEADER.size + length
        if end <= cur.size:
            payload = os.pread(cur.fd, length, cur.offset + _HEADER.size)
            if zlib.crc32(payload) == crc:
                return self._decode(cur, payload, count), end
        nxt = end if end == cur.size or (end < cur.size and self._valid_at(cur, end)) else self._resync(cur)
        if nxt is None:
            self._lose(cur, cur.offset, cur.size, count if end == cur.size else None, "a damaged or torn last frame")
            return None, cur.offset
        self._lose(cur, cur.offset, nxt, count if nxt == end else None, "a damaged frame (CRC mismatch)", more=True)
        return [], nxt

    def _valid_at(self, cur: _Cursor, offset: int) -> bool:
        """Whether a frame that checks out (length within the file, CRC) starts at ``offset``."""
        head = os.pread(cur.fd, _HEADER.size, offset)
        if len(head) < _HEADER.size:
            return False
        length, crc, count = _HEADER.unpack(head)
        if not 0 < count <= length or offset + _HEADER.size + length > cur.size:
            return False
        return bool(zlib.crc32(os.pread(cur.fd, length, offset + _HEADER.size)) == crc)

    def _resync(self, cur: _Cursor) -> int | None:
        """Offset of the first frame after ``cur.offset`` that checks out, or None.

        Candidates are found in C (a msgpack array marker where a payload would start), then checked:
        plausible header, marker matching the header's span count, CRC.
        """
        start = cur.offset + 1
        data = os.pread(cur.fd, cur.size - start, start)
        n = len(data)
        for m in _ARRAY_MARKER.finditer(data, _HEADER.size):
            p = m.start() - _HEADER.size
            length, crc, count = _HEADER.unpack_from(data, p)
            if not 0 < count <= length or p + _HEADER.size + length > n:
                continue
            marker = data[m.start()]
            if marker != (0x90 | count if count < 16 else 0xDC if count < 65536 else 0xDD):
                continue
            if zlib.crc32(data[p + _HEADER.size : p + _HEADER.size + length]) == crc:
                return start + p
        return None

    def _lose(self, cur: _Cursor, start: int, end: int, spans: int | None, what: str, *, more: bool = False) -> None:
        """Count and log one frame given up (``spans``: how many it held, None when its header is not trustworthy)."""
        self.lost_frames += 1
        self.lost_spans += spans or 0
        log.error(
            "spendtrace: spill file %s has %s at bytes %d-%d: %s spans lost (%s)",
            cur.path,
            what,
            start,
            end,
            "an unknown number of" if spans is None else spans,
            "replay goes on at the next good frame" if more else "the file's good frames before it were replayed",
        )

    def _decode(self, cur: _Cursor, payload: bytes, count: int) -> list[Span]:
        """The spans of a frame that checked out; a span that fails the wire schema is kept unchecked.

        The destination then names what is wrong with it (the local store keeps it as a dead letter
        with the reason, the consumers do the same), instead of the whole frame being skipped.
        """
        try:
            return decode_spans(payload)
        except msgspec.MsgspecError:
            pass
        try:
            raws = _raw_list.decode(payload)
        except msgspec.MsgspecError:
            end = cur.offset + _HEADER.size + len(payload)
            self._lose(cur, cur.offset, end, count, "an undecodable frame", more=True)
            return []
        spans: list[Span] = []
        for raw in raws:
            span = _unchecked_span(raw)
            if span is None:
                self.lost_spans += 1
                log.error("spendtrace: spill file %s: undecodable span in the frame at byte %d", cur.path, cur.offset)
            else:
                spans.append(span)
        return spans

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
