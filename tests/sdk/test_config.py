"""configure(), environment variables, the default local store, flush/stats, and the exit flush."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import spendtrace
from spendtrace import (
    AWSCostModel,
    ConfigError,
    InMemoryExporter,
    KafkaExporter,
    LocalStoreExporter,
    add_api_call,
    cost_track,
    get_tracker,
)
from spendtrace import settings as _settings
from spendtrace.sdk import config as _config
from spendtrace.sdk import pipeline as _pipeline

pytestmark = pytest.mark.usefixtures("export_reset")


@cost_track(feature="search")
def search_products(query: str) -> str:
    add_api_call("dynamodb_read", count=3)
    add_api_call("bedrock_claude_3_haiku", input_tokens=512, output_tokens=128)
    return query


def stored(db: Path) -> list[tuple[str, str, int]]:
    """(span_id, feature, cost_nano) of every stored span."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT span_id, feature, cost_nano FROM spans ORDER BY span_id").fetchall()


def test_kafka_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """SPENDTRACE_KAFKA_BOOTSTRAP and SPENDTRACE_TOPIC select the Kafka exporter without arguments."""
    monkeypatch.setenv("SPENDTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("SPENDTRACE_TOPIC", "custom.spans")
    monkeypatch.setenv("SPENDTRACE_SPILL_DIR", str(tmp_path / "spill"))
    processor = spendtrace.configure(replay=False)
    assert isinstance(processor.exporter, KafkaExporter)
    assert (processor.exporter.bootstrap, processor.exporter.topic) == ("127.0.0.1:1", "custom.spans")
    assert processor.spill.directory == tmp_path / "spill"


def test_local_store_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Kafka, SPENDTRACE_DB names the SQLite store, and the default spill dir is per destination."""
    monkeypatch.delenv("SPENDTRACE_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("SPENDTRACE_SPILL_DIR", raising=False)
    monkeypatch.setenv("SPENDTRACE_DB", str(tmp_path / "env.db"))
    processor = spendtrace.configure(replay=False)
    assert isinstance(processor.exporter, LocalStoreExporter)
    assert processor.exporter.db_path == tmp_path / "env.db"
    other = _config._spill_dir_for(LocalStoreExporter(tmp_path / "other.db"))
    assert processor.spill.directory != other and processor.spill.directory.parent == other.parent


def test_explicit_arguments_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """configure(db=...) beats SPENDTRACE_KAFKA_BOOTSTRAP and becomes the default database of the query API."""
    monkeypatch.setenv("SPENDTRACE_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    exporter = InMemoryExporter()
    assert spendtrace.configure(exporter=exporter, spill_dir=tmp_path).exporter is exporter
    try:
        processor = spendtrace.configure(db=tmp_path / "mine.db", spill_dir=tmp_path, replay=False)
        assert isinstance(processor.exporter, LocalStoreExporter)
        assert processor.exporter.db_path == tmp_path / "mine.db"
        assert _settings.default_db_path() == str(tmp_path / "mine.db")
        processor = spendtrace.configure(kafka_bootstrap="127.0.0.1:2", spill_dir=tmp_path, replay=False)
        assert isinstance(processor.exporter, KafkaExporter) and processor.exporter.bootstrap == "127.0.0.1:2"
    finally:
        _settings.set_db_path(None)


def test_local_store_prices_with_the_shared_price_book(db_path: Path, tmp_path: Path) -> None:
    """Spans land in SQLite priced by the in-process price book, so a README-style rate override applies."""
    spendtrace.configure(db=db_path, spill_dir=tmp_path / "spill")
    search_products("a")
    assert spendtrace.flush(10).all_delivered
    (default_row,) = stored(db_path)
    model = AWSCostModel()
    model.api_costs["dynamodb_read"] = 1.0  # a dollar a read: the override must dominate the cost
    get_tracker().cost_model = model
    try:
        search_products("b")
        assert spendtrace.flush(10).all_delivered
    finally:
        get_tracker().cost_model = None
        _settings.set_db_path(None)
    rows = stored(db_path)
    assert len(rows) == 2
    overridden = next(r for r in rows if r[0] != default_row[0])
    assert 0 < default_row[2] < 1_000_000_000 and overridden[2] >= 3_000_000_000


def test_flush_local_makes_spans_visible(db_path: Path, tmp_path: Path) -> None:
    """flush_local(db) delivers pending spans for that file (long max_delay), and is a no-op for another file."""
    spendtrace.configure(db=db_path, spill_dir=tmp_path / "spill", max_delay=60, batch_size=10_000)
    try:
        search_products("q")
        _config.flush_local(tmp_path / "other.db")
        assert spendtrace.get_stats().queued == 1
        _config.flush_local(db_path)
        assert len(stored(db_path)) == 1
    finally:
        _settings.set_db_path(None)


def test_reconfigure_delivers_to_the_previous_exporter(tmp_path: Path) -> None:
    """Spans buffered under one configuration reach its exporter when configure is called again."""
    first, second = InMemoryExporter(), InMemoryExporter()
    spendtrace.configure(exporter=first, spill_dir=tmp_path, max_delay=60, batch_size=10_000)
    search_products("1")
    spendtrace.configure(exporter=second, spill_dir=tmp_path)
    search_products("2")
    assert spendtrace.flush(5).all_delivered
    assert len(first.spans) == 1 and len(second.spans) == 1


def test_sample_rate_and_lambda_memory_settings(tmp_path: Path) -> None:
    """configure(sample_rate=..., lambda_memory_mb=...) set the process-wide sampling rate and Lambda size."""
    exporter = InMemoryExporter()
    try:
        spendtrace.configure(exporter=exporter, spill_dir=tmp_path, sample_rate=1.0, lambda_memory_mb=512)
        search_products("x")
        assert spendtrace.flush(5).all_delivered
        assert exporter.spans[0].lambda_memory_mb == 512
        spendtrace.configure(exporter=exporter, spill_dir=tmp_path, sample_rate=0.0)
        search_products("y")
        spendtrace.flush(5)
        assert len(exporter.spans) == 1
    finally:
        spendtrace.set_global_sample_rate(1.0)
        from spendtrace.sdk import scope as _scope

        _scope.set_lambda_memory_mb(None)


def test_bad_settings_raise_at_the_call(tmp_path: Path) -> None:
    """Bad settings fail in configure, with the usual exception types, never later in the worker."""
    with pytest.raises(TypeError):
        spendtrace.configure(exporter=object(), spill_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        spendtrace.configure(exporter=InMemoryExporter(), spill_dir=tmp_path, batch_size=0)
    with pytest.raises(ValueError):
        spendtrace.configure(exporter=InMemoryExporter(), spill_dir=tmp_path, sample_rate=2)
    with pytest.raises(ConfigError):
        KafkaExporter("")
    with pytest.raises(ConfigError):
        KafkaExporter("127.0.0.1:9092", acks="some")


def test_stats_and_flush_before_any_configuration() -> None:
    """Before anything is recorded the counters are zero and flush has nothing to do."""
    _pipeline.reset_sink()
    assert spendtrace.get_stats().recorded == 0
    assert spendtrace.flush(0.1).ok


_README = """
from spendtrace import SQLiteStorage, add_api_call, cost_track, get_feature_cost_breakdown

@cost_track(feature="search")
def search_products(query):
    add_api_call("dynamodb_read", count=3)
    add_api_call("bedrock_claude_3_haiku", input_tokens=512, output_tokens=128)

for _ in range(7):
    search_products("shoes")

storage = SQLiteStorage("cost_data.db")
rows = {row["feature"]: row for row in storage.aggregate_by_feature()}
print(rows["search"]["transaction_count"], rows["search"]["total_cost"] > 0)
"""


def test_readme_example_runs_without_configure(tmp_path: Path) -> None:
    """With no configure and no Kafka, spans go to ./cost_data.db and the same process can query them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDTRACE_")}
    env["SPENDTRACE_SPILL_DIR"] = str(tmp_path / "spill")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_README)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["7", "True"]
    assert len(stored(tmp_path / "cost_data.db")) == 7


_EXIT = """
import spendtrace
from spendtrace import cost_track
spendtrace.configure(max_delay=60, batch_size=100000)

@cost_track(feature="batch_processing")
def job(i):
    return i

for i in range(1234):
    job(i)
print(spendtrace.get_stats().exported)
"""


def test_spans_are_flushed_at_exit(tmp_path: Path) -> None:
    """Spans still buffered when the program ends are written by the exit handler."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDTRACE_")}
    env["SPENDTRACE_SPILL_DIR"] = str(tmp_path / "spill")
    env["SPENDTRACE_DB"] = str(tmp_path / "exit.db")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_EXIT)], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "0"  # nothing was exported before exit
    assert len(stored(tmp_path / "exit.db")) == 1234
