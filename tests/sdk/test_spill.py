"""The spill store: framed msgpack on disk, bounded, rotated, replayed in order, shared safely between processes."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spendtrace.schema import Span, decode_spans
from spendtrace.sdk.export._spill import SpillFull, SpillStore


def make_spans(n: int, prefix: str = "s") -> list[Span]:
    """``n`` small spans with distinct ids."""
    return [Span(span_id=f"{prefix}{i}", parent_id=None, request_id=f"r{i}", feature="f") for i in range(n)]


def drain(store: SpillStore) -> list[Span]:
    """Replay everything replayable into a list."""
    out: list[Span] = []
    while store.replay_one(out.extend):
        pass
    return out


def test_frame_format_is_length_crc_count_then_msgpack(tmp_path: Path) -> None:
    """A frame is a 12-byte header (length, CRC-32, count) followed by a msgpack array that decode_spans reads."""
    store = SpillStore(tmp_path)
    spans = make_spans(3)
    size = store.write(spans)
    store.close()
    (path,) = tmp_path.glob("spill-*.spill")
    data = path.read_bytes()
    length, _crc, count = struct.unpack(">III", data[:12])
    assert size == len(data) == 12 + length and count == 3
    assert decode_spans(data[12:]) == spans


def test_replay_in_order_then_files_deleted(tmp_path: Path) -> None:
    """Frames come back in the order they were written, across rotated files, and fully replayed files are deleted."""
    store = SpillStore(tmp_path, max_file_bytes=300)
    batches = [make_spans(4, prefix=f"b{b}-") for b in range(6)]
    for batch in batches:
        store.write(batch)
    assert len(list(tmp_path.glob("spill-*.spill"))) > 1  # rotated
    assert drain(store) == [s for batch in batches for s in batch]
    assert not list(tmp_path.glob("spill-*"))
    assert not store.has_backlog()


def test_failed_replay_keeps_the_frame(tmp_path: Path) -> None:
    """An export that raises during replay leaves its frame to be replayed again, nothing skipped."""
    store = SpillStore(tmp_path)
    store.write(make_spans(2, "a"))
    store.write(make_spans(2, "b"))

    def boom(spans: list[Span]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        store.replay_one(boom)
    assert [s.span_id for s in drain(store)] == ["a0", "a1", "b0", "b1"]


def test_size_bound_raises_spill_full(tmp_path: Path) -> None:
    """Past max_bytes the store refuses with SpillFull, and accepts again once replay freed space."""
    store = SpillStore(tmp_path, max_bytes=400)
    spans = make_spans(5)
    written = 0
    with pytest.raises(SpillFull):
        while True:
            written += store.write(spans)
    assert 0 < written <= 400
    drain(store)
    assert store.write(spans) > 0


def test_torn_tail_is_ignored_and_corrupt_frame_set_aside(tmp_path: Path) -> None:
    """A torn last frame (crash mid-write) ends the file; a frame with a bad CRC moves the file aside as .corrupt."""
    store = SpillStore(tmp_path)
    store.write(make_spans(2, "ok"))
    store.close()
    (path,) = tmp_path.glob("spill-*.spill")
    with path.open("ab") as f:
        f.write(struct.pack(">III", 1000, 0, 5) + b"\x93partial")
    assert [s.span_id for s in drain(SpillStore(tmp_path))] == ["ok0", "ok1"]

    store = SpillStore(tmp_path)
    store.write(make_spans(1, "bad"))
    store.close()
    (path,) = tmp_path.glob("spill-*.spill")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert drain(SpillStore(tmp_path)) == []
    assert list(tmp_path.glob("*.corrupt"))


def test_progress_survives_a_new_store(tmp_path: Path) -> None:
    """A store that replayed part of a file records it, so the next store resumes after the exported frames."""
    first = SpillStore(tmp_path)
    for b in range(3):
        first.write(make_spans(2, f"b{b}-"))
    first.rotate()
    got: list[Span] = []
    assert first.replay_one(got.extend) == 2
    first.close()  # e.g. the process exits mid-replay
    rest = drain(SpillStore(tmp_path))
    assert [s.span_id for s in got + rest] == ["b0-0", "b0-1", "b1-0", "b1-1", "b2-0", "b2-1"]


def test_a_file_being_written_by_another_store_is_not_replayed(tmp_path: Path) -> None:
    """The writer's lock keeps another store (another process) off a file until the writer closes it."""
    writer = SpillStore(tmp_path)
    writer.write(make_spans(2))
    other = SpillStore(tmp_path, rescan_interval=0.0)
    assert drain(other) == []
    writer.rotate()
    assert len(drain(other)) == 2


_HOLD = """
import sys, time
from spendtrace.sdk.export._spill import SpillStore
store = SpillStore(sys.argv[1])
got = []
store.replay_one(got.extend)  # holds the lock on the first file, and stays alive
print(len(got), flush=True)
sys.stdin.read()
"""


def test_two_live_processes_never_replay_the_same_file(tmp_path: Path) -> None:
    """While another live process is replaying a file, this process skips it, and later resumes after its progress."""
    store = SpillStore(tmp_path)
    store.write(make_spans(2, "a-"))
    store.write(make_spans(2, "b-"))
    store.rotate()
    store.write(make_spans(2, "c-"))
    store.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLD), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "2"  # replayed a-*, holds file 1
        assert [s.span_id for s in drain(SpillStore(tmp_path))] == ["c-0", "c-1"]
    finally:
        proc.communicate("", timeout=30)
    assert [s.span_id for s in drain(SpillStore(tmp_path))] == ["b-0", "b-1"]
    assert not list(tmp_path.glob("spill-*"))
