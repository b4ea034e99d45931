"""The spill store: framed msgpack on disk, bounded, rotated, replayed in order, shared safely between processes."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spendtrace.schema import Span, decode_spans
from spendtrace.sdk.export._spill import SpillFull, SpillStore, SpillUntrusted


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


def test_torn_tail_ends_the_file_and_is_counted(tmp_path: Path) -> None:
    """A torn last frame (crash mid-write) ends the file; the frames before it are replayed, the loss counted."""
    store = SpillStore(tmp_path)
    store.write(make_spans(2, "ok"))
    store.close()
    (path,) = tmp_path.glob("spill-*.spill")
    with path.open("ab") as f:
        f.write(struct.pack(">III", 1000, 0, 5) + b"\x93partial")
    reader = SpillStore(tmp_path)
    assert [s.span_id for s in drain(reader)] == ["ok0", "ok1"]
    assert (reader.lost_frames, reader.lost_spans) == (1, 0)  # a torn header's count is not trusted
    assert not list(tmp_path.iterdir())


def _three_frames(tmp_path: Path) -> tuple[Path, list[int]]:
    store = SpillStore(tmp_path)
    starts = [0]
    for b in range(3):
        starts.append(starts[-1] + store.write(make_spans(3, f"f{b}-")))
    store.close()
    (path,) = tmp_path.glob("spill-*.spill")
    return path, starts


@pytest.mark.parametrize("where", ["payload", "length", "crc"])
def test_one_flipped_byte_loses_only_its_frame(tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture) -> None:
    """A flipped byte anywhere in the middle frame (its header included) costs that frame only; the loss is logged."""
    path, starts = _three_frames(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[starts[1] + {"length": 1, "crc": 5, "payload": 20}[where]] ^= 0x5A
    path.write_bytes(bytes(raw))
    reader = SpillStore(tmp_path)
    assert [s.span_id for s in drain(reader)] == ["f0-0", "f0-1", "f0-2", "f2-0", "f2-1", "f2-2"]
    assert reader.lost_frames == 1
    # the span count is known when the damaged frame's header still leads to the next good frame
    assert reader.lost_spans == (0 if where == "length" else 3)
    assert "damaged frame" in caplog.text and f"bytes {starts[1]}-{starts[2]}" in caplog.text
    assert not list(tmp_path.iterdir())


def test_a_span_failing_the_wire_schema_is_replayed_unchecked_not_dropped_with_its_frame(tmp_path: Path) -> None:
    """The frame's other spans come back validated; the bad one comes back as written, for the destination to name."""
    good = make_spans(3, "g")
    bad = Span(span_id="bad", parent_id=None, request_id="r", feature="f", start_ns=2**63)
    store = SpillStore(tmp_path)
    store.write([good[0], bad, *good[1:]])
    store.close()
    reader = SpillStore(tmp_path)
    assert drain(reader) == [good[0], bad, *good[1:]]
    assert reader.lost_frames == reader.lost_spans == 0


def test_leftover_files_count_toward_the_size_bound(tmp_path: Path) -> None:
    """``.corrupt`` files of older versions and stray temp files are part of what ``max_bytes`` bounds."""
    (tmp_path / "spill-00000000000000000001-1-000001.corrupt").write_bytes(b"x" * 300)
    (tmp_path / "spill-00000000000000000001-1-000002.spill.tmp").write_bytes(b"x" * 60)
    store = SpillStore(tmp_path, max_bytes=400)
    assert store.bytes_on_disk() == 360
    with pytest.raises(SpillFull):
        store.write(make_spans(1, "x"))


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


# ---- trust: another local user must not be able to plant spans -------------------------------

OTHER_UID = 65534  # "nobody"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def _planted(directory: Path) -> Path:
    """A valid spill file with one $900,000-looking span, left by a writer that has gone."""
    store = SpillStore(directory)
    store.write(make_spans(10, "planted-"))
    store.close()
    (path,) = directory.glob("spill-*.spill")
    return path


def test_default_spill_dir_is_per_user_and_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    """In a fresh process with umask 000, the default spill directory and its per-destination child are 0700."""
    code = textwrap.dedent(
        """
        import os
        os.umask(0)
        from spendtrace.sdk.export._processor import default_spill_dir
        from spendtrace.sdk.export._spill import SpillStore
        from spendtrace.schema import Span
        root = default_spill_dir()
        SpillStore(root / "sqlite-x").write([Span(span_id="a", parent_id=None, request_id="r", feature="f")])
        print(root)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "SPENDTRACE_SPILL_DIR"}
    env["TMPDIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    root = Path(out.strip())
    assert root.parent == tmp_path and root.name == f"spendtrace-spill-{os.getuid()}"
    for d in (root, root / "sqlite-x"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    (f,) = (root / "sqlite-x").glob("spill-*.spill")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


@needs_root
def test_spill_file_owned_by_another_user_is_refused_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spill file another user owns is not replayed, stays in place, is logged once and counted once."""
    path = _planted(tmp_path)
    os.chown(path, OTHER_UID, OTHER_UID)
    store = SpillStore(tmp_path, rescan_interval=0)
    assert drain(store) == [] and drain(store) == []
    assert store.refused == 1 and path.exists()
    assert not store.has_backlog()
    assert caplog.text.count("refusing to replay spill file") == 1 and f"uid {OTHER_UID}" in caplog.text


def test_group_or_world_writable_spill_file_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A spill file others may write is not replayed (anyone could have appended frames to it)."""
    path = _planted(tmp_path)
    path.chmod(0o666)
    store = SpillStore(tmp_path)
    assert drain(store) == []
    assert store.refused == 1 and path.exists()
    assert "group/world-writable" in caplog.text


def test_symlinked_spill_file_is_refused(tmp_path: Path) -> None:
    """A spill name that is a symbolic link is never followed."""
    elsewhere = tmp_path / "elsewhere"
    target = _planted(elsewhere)
    spill = tmp_path / "spill"
    spill.mkdir(mode=0o700)
    (spill / target.name).symlink_to(target)
    store = SpillStore(spill)
    assert drain(store) == [] and store.refused == 1


@needs_root
def test_spill_directory_owned_by_another_user_is_neither_replayed_nor_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A planted directory under the predictable name: its files are refused and our spans are not written there."""
    planted_dir = tmp_path / "spendtrace-spill-0"
    path = _planted(planted_dir)
    os.chown(planted_dir, OTHER_UID, OTHER_UID)
    os.chown(path, OTHER_UID, OTHER_UID)
    store = SpillStore(planted_dir)
    assert drain(store) == [] and store.refused == 1
    with pytest.raises(SpillUntrusted, match=f"owned by uid {OTHER_UID}"):
        store.write(make_spans(1))
    assert [p.name for p in planted_dir.iterdir()] == [path.name]


def test_world_writable_spill_directory_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A directory others can write to (mode 0777, not ours to trust) is neither replayed nor written."""
    spill = tmp_path / "spill"
    _planted(spill)
    spill.chmod(0o777)
    store = SpillStore(spill)
    assert drain(store) == [] and store.refused == 1
    with pytest.raises(SpillUntrusted, match="group/world-writable"):
        store.write(make_spans(1))


def test_refused_spill_files_show_in_the_exporter_stats(tmp_path: Path) -> None:
    """The app's exporter never exports a refused file and get_stats() counts it."""
    import spendtrace
    from spendtrace import InMemoryExporter

    path = _planted(tmp_path)
    path.chmod(0o646)
    exporter = InMemoryExporter()
    spendtrace.configure(exporter=exporter, spill_dir=tmp_path, max_delay=0.01)
    try:
        spendtrace.cost_track(feature="f")(lambda: None)()
        assert spendtrace.flush(10).ok
        deadline = time.monotonic() + 30
        while spendtrace.get_stats().spill_refused == 0:  # the export thread looks at the spill after its batch
            assert time.monotonic() < deadline, "the planted spill file was never looked at"
            time.sleep(0.01)
        stats = spendtrace.get_stats()
        assert stats.spill_refused == 1 and stats.replayed == 0
        assert not [s for s in exporter.spans if s.span_id.startswith("planted-")]
    finally:
        spendtrace.shutdown()


def test_a_damaged_frame_shows_in_the_exporter_stats_and_metrics(tmp_path: Path) -> None:
    """The app's exporter replays the good frames around a damaged one; get_stats() and the metric count the loss."""
    import prometheus_client

    import spendtrace
    from spendtrace import InMemoryExporter
    from spendtrace.sdk.metrics import register_sdk_metrics

    path, starts = _three_frames(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[starts[1] + 20] ^= 0x01
    path.write_bytes(bytes(raw))
    exporter = InMemoryExporter()
    spendtrace.configure(exporter=exporter, spill_dir=tmp_path, max_delay=0.01)
    try:
        deadline = time.monotonic() + 30
        while spendtrace.get_stats().replayed < 6:
            assert time.monotonic() < deadline, f"the good frames were not replayed: {spendtrace.get_stats()}"
            time.sleep(0.01)
        stats = spendtrace.get_stats()
        assert (stats.spill_lost_frames, stats.spill_lost_spans) == (1, 3)
        assert sorted(s.span_id for s in exporter.spans) == ["f0-0", "f0-1", "f0-2", "f2-0", "f2-1", "f2-2"]
        registry = prometheus_client.CollectorRegistry()
        register_sdk_metrics(registry)
        assert registry.get_sample_value("spendtrace_exporter_spill_lost_spans_total") == 3
        assert registry.get_sample_value("spendtrace_exporter_spill_lost_frames_total") == 1
    finally:
        spendtrace.shutdown()
