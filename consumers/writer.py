"""A worker's SQLite writer, in a process of its own.

Pricing is pure Python and so is binding each row of an ``executemany``; in one process the two
take turns for the GIL, and overlapping them in threads was measured slower than running them one
after the other. In a child process the transaction of batch N runs on the other core while the
worker fetches, decodes and prices batch N+1. Batches cross a socket pickled, without their ``Span``
objects (``PreparedBatch.detached_copy``); a replay is answered with ``ReplayedSpans`` (nothing
written) and the worker sends the new spans again.

The child is ``python -m consumers.writer`` in a session of its own (a terminal's Ctrl-C reaches
the worker, which decides when to stop, after its last batch); it ignores SIGINT and SIGTERM and
exits when told to or when its socket closes, so it never outlives a worker killed with SIGKILL by
more than the transaction it is in. (Not ``multiprocessing``: its spawn re-imports the parent's
``__main__``, which an embedding program may not expect.)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import pickle
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

__all__ = ["GC_THRESHOLDS", "WriterError", "WriterProcess", "encode_write", "tune_gc"]

log = logging.getLogger(__name__)

#: Seconds the child may take to open the database and say it is ready, and to exit when told to.
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0


class WriterError(RuntimeError):
    """The writer process failed, or died, while doing what it was asked."""


class WriterProcess:
    """The child process owning a worker's write connection; ``call`` blocks, so run it in a thread."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._proc: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._proc is None else int(self._proc.pid)

    def start(self) -> None:
        """Start the child and wait until its database connection is open (raising what opening raised)."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # the child imports this package from where the parent did, installed or not
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "consumers.writer", "--fd", str(theirs.fileno()), self.db_path],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        parent = Connection(ours.detach())
        self._conn = parent
        if not parent.poll(_START_TIMEOUT):
            self.close()
            raise WriterError(f"the writer process did not open {self.db_path} within {_START_TIMEOUT:.0f}s")
        try:
            self._reply()
        except BaseException:
            self.close()  # the child has said why and exited: reap it
            raise

    def write(self, payload: bytes) -> Any:
        """Write one batch (``encode_write``'s bytes) and return its ``WriteResult``."""
        return self._call(payload)

    def call(self, op: str, *args: Any) -> Any:
        """Run ``op`` in the child, return its result (``"retention", now_ns, limit``: one chunk, (deleted, done))."""
        return self._call(pickle.dumps((op, args), pickle.HIGHEST_PROTOCOL))

    def _call(self, payload: bytes) -> Any:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise WriterError("the writer process is not running")
            try:
                conn.send_bytes(payload)
            except OSError as exc:
                raise WriterError(f"the writer process is gone: {exc!r}") from exc
            return self._reply()

    def _reply(self) -> Any:
        assert self._conn is not None
        try:
            kind, value = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError) as exc:
            code = None if self._proc is None else self._proc.poll()
            raise WriterError(f"the writer process died (exit code {code})") from exc
        if kind == "ok":
            return value
        raise _error_from(value)

    def close(self) -> None:
        """Ask the child to close its connection and exit; kill it if it does not.

        A request still in flight (its caller cancelled) is waited for, up to the stop timeout.
        """
        idle = self._lock.acquire(timeout=_STOP_TIMEOUT)
        try:
            conn, self._conn = self._conn, None
            proc, self._proc = self._proc, None
            if conn is not None:
                if idle:
                    with contextlib.suppress(OSError):
                        conn.send_bytes(pickle.dumps(("stop", ())))
                conn.close()
        finally:
            if idle:
                self._lock.release()
        if proc is not None:
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("the writer process did not exit; killing it")
                proc.kill()
                proc.wait(_STOP_TIMEOUT)


def encode_write(batch: Any, offsets: list[tuple[str, str, int, int]], dead: list[Any]) -> bytes:
    """The message for one batch: its detached copy, the offsets it reaches, its dead letters."""
    return pickle.dumps(("write", (batch.detached_copy(), offsets, dead)), pickle.HIGHEST_PROTOCOL)


#: Young-generation size before a collection (CPython's default is 700) and the older generations' ratios.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Collect garbage less often in a worker process (``spendtrace-consumer`` and its writer child call this).

    A batch allocates hundreds of thousands of short-lived containers (Kafka records, rows, deltas),
    and with CPython's default thresholds a worker spent ~1 s in collections per 400,000 spans
    (2.4 us a span, timed with ``gc.callbacks``); with these, ~0.34 s. Objects alive at start-up
    (modules, the price book) are frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _error_from(value: tuple[str, Any]) -> BaseException:
    """Rebuild an exception raised in the child (those the worker handles keep their type)."""
    from spendtrace.errors import SchemaVersionError, StorageError
    from spendtrace.server.store.sqlite._ingest import ReplayedSpans

    name, arg = value
    known: dict[str, type[BaseException]] = {
        "OperationalError": sqlite3.OperationalError,
        "StorageError": StorageError,
        "SchemaVersionError": SchemaVersionError,
    }
    if name == "ReplayedSpans":
        return ReplayedSpans(arg)
    if name in known:
        return known[name](arg)
    return WriterError(f"the writer process failed: {name}: {arg}")


def _serve(conn: Connection, db_path: str) -> None:
    """The child: open the database, then run requests until told to stop or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from spendtrace.server.store.sqlite._db import connect
    from spendtrace.server.store.sqlite._ingest import ReplayedSpans, write_batch_sync
    from spendtrace.server.store.sqlite._retention import apply_retention_chunk

    try:
        db = connect(db_path)
        # Checkpoints run after the reply (see _checkpoint), not inside COMMIT.
        db.execute("PRAGMA wal_autocheckpoint = 0")
    except Exception as exc:
        conn.send_bytes(pickle.dumps(("err", (type(exc).__name__, str(exc)))))
        return
    conn.send_bytes(pickle.dumps(("ok", None)))
    tune_gc()  # each unpickled batch is hundreds of thousands of objects, freed a moment later
    try:
        while True:
            try:
                op, args = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                return  # the worker is gone
            if op == "stop":
                return
            try:
                if op == "write":
                    batch, offsets, dead = args
                    result: Any = write_batch_sync(db, batch, offsets=offsets, dead_letters=dead)
                elif op == "retention":
                    now_ns, limit = args
                    result = apply_retention_chunk(db, now_ns, limit=limit)
                else:
                    raise ValueError(f"unknown writer operation {op!r}")
                reply = pickle.dumps(("ok", result), pickle.HIGHEST_PROTOCOL)
            except ReplayedSpans as exc:
                reply = pickle.dumps(("err", ("ReplayedSpans", exc.new_span_ids)))
            except Exception as exc:
                reply = pickle.dumps(("err", (type(exc).__name__, str(exc))))
            try:
                conn.send_bytes(reply)
            except OSError:
                return
            if op in ("write", "retention"):
                _checkpoint(db)
    finally:
        db.close()


def _checkpoint(db: sqlite3.Connection) -> None:
    """Copy the WAL into the database file while the worker prices the next batch.

    Run here, between the reply and the next request, the WAL restarts from its beginning at the
    next write and stays about one batch long; inside COMMIT (auto-checkpoints) it would delay the reply.
    """
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error as exc:  # a later checkpoint does the work
        log.info("WAL checkpoint skipped: %r", exc)


def main(argv: list[str] | None = None) -> None:
    """``python -m consumers.writer --fd N DB``: serve the worker connected on socket ``N``."""
    p = argparse.ArgumentParser(description="spendtrace worker's SQLite writer (started by the worker)")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("db")
    args = p.parse_args(argv)
    _serve(Connection(args.fd), args.db)


if __name__ == "__main__":
    main()
