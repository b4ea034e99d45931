"""A worker's SQLite writer, in a process of its own: a private detail of the SQLite ingest store.

Pricing is pure Python and so is binding each row of an ``executemany``; in one process the two
take turns for the GIL, and overlapping them in threads was measured slower than running them one
after the other. In a child process the transaction of batch N runs on the other core while the
worker fetches, decodes and prices batch N+1. Requests and replies are the typed messages of
``_writer_protocol`` over a socket; a batch crosses without its ``Span`` objects
(``PreparedBatch.detached_copy``), and a batch holding spans already stored is answered with
``Replayed`` (nothing written): the parent's store prepares the new ones again and sends those.

The child is ``python -m spendtrace.server.store.sqlite._writer`` in a session of its own (a
terminal's Ctrl-C reaches the worker, which decides when to stop, after its last batch); it ignores
SIGINT and SIGTERM and exits when told to or when its socket closes, so it never outlives a worker
killed with SIGKILL by more than the transaction it is in. (Not ``multiprocessing``: its spawn
re-imports the parent's ``__main__``, which an embedding program may not expect.)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import assert_never

from spendtrace.server.store.sqlite._writer_protocol import (
    Aged,
    Failed,
    Ready,
    Replayed,
    Reply,
    Request,
    Retention,
    RetentionDone,
    Stop,
    Write,
    WriterError,
    WriterProtocolError,
    Written,
    decode_reply,
    decode_request,
    encode,
    error_for,
    failure,
    load_batch,
)

__all__ = ["WriterProcess", "main", "serve"]

log = logging.getLogger(__name__)

#: Seconds the child may take to open the database and say it is ready, and to exit when told to.
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_MODULE = "spendtrace.server.store.sqlite._writer"


class WriterProcess:
    """The child process owning a worker's write connection; ``request`` blocks, so run it in a thread."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._proc is None else int(self._proc.pid)

    def start(self) -> None:
        """Start the child and wait until its database is open (raising what opening raised, typed)."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # the child imports this package from where the parent did, installed or not
        root = str(Path(__file__).resolve().parents[4])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", _MODULE, "--fd", str(theirs.fileno()), self.db_path],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        parent = Connection(ours.detach())
        self._conn = parent
        try:
            if not parent.poll(_START_TIMEOUT):
                raise WriterError(f"the writer process did not open {self.db_path} within {_START_TIMEOUT:.0f}s")
            match self._reply():
                case Ready():
                    pass
                case other:
                    raise WriterProtocolError(f"the writer process said {type(other).__name__} instead of Ready")
        except BaseException:
            self.close()  # the child has said why and exited (or is killed): reap it
            raise

    def request(self, message: Request) -> Reply:
        """Send ``message``, return the child's reply (a ``Failed`` reply is raised as its typed error)."""
        return self.exchange(encode(message))

    def exchange(self, data: bytes) -> Reply:
        """Send one encoded request (``encode_write``'s bytes, say) and return the reply, as ``request``."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise WriterError("the writer process is not running")
            try:
                conn.send_bytes(data)
            except OSError as exc:
                raise WriterError(f"the writer process is gone: {exc!r}") from exc
            return self._reply()

    def _reply(self) -> Reply:
        assert self._conn is not None
        try:
            data = self._conn.recv_bytes()
        except (EOFError, OSError) as exc:
            code = None if self._proc is None else self._proc.poll()
            raise WriterError(f"the writer process died (exit code {code})") from exc
        reply = decode_reply(data)
        if isinstance(reply, Failed):
            raise error_for(reply)
        return reply

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
                        conn.send_bytes(encode(Stop()))
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


# -- the child -------------------------------------------------------------------------------------


def serve(conn: Connection, db_path: str) -> None:
    """The child: open the database, then answer requests until told to stop or the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from spendtrace.server.runtime import tune_gc
    from spendtrace.server.store.sqlite._db import connect

    try:
        db = connect(db_path)
        # Checkpoints run after the reply (see _checkpoint), not inside COMMIT.
        db.execute("PRAGMA wal_autocheckpoint = 0")
    except Exception as exc:
        conn.send_bytes(encode(failure(exc)))
        return
    conn.send_bytes(encode(Ready()))
    tune_gc()  # each unpickled batch is hundreds of thousands of objects, freed a moment later
    try:
        while True:
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return  # the worker is gone
            try:
                request = decode_request(data)
            except WriterProtocolError as exc:
                log.error("%s", exc)
                reply: Reply = failure(exc)
            else:
                if isinstance(request, Stop):
                    return
                reply = _handle(db, request)
            try:
                conn.send_bytes(encode(reply))
            except OSError:
                return
            if isinstance(reply, Written | RetentionDone):
                _checkpoint(db)
    finally:
        db.close()


def _handle(db: sqlite3.Connection, request: Write | Retention) -> Reply:
    """Run one request on the write connection; any failure becomes a typed ``Failed`` (nothing changed)."""
    from spendtrace.server.store.sqlite._ingest import AgedSpans, ReplayedSpans, write_batch_sync
    from spendtrace.server.store.sqlite._retention import apply_retention_chunk

    try:
        match request:
            case Write(offsets=offsets, dead_letters=dead):
                rows = [(o.group, o.topic, o.partition, o.next_offset) for o in offsets]
                return Written(write_batch_sync(db, load_batch(request), offsets=rows, dead_letters=dead))
            case Retention(now_ns=now_ns, limit=limit):
                deleted, done = apply_retention_chunk(db, now_ns, limit=limit)
                return RetentionDone(deleted, done)
            case _:
                assert_never(request)
    except ReplayedSpans as replay:
        return Replayed(replay.new_span_ids)
    except AgedSpans as aged:
        return Aged(aged.span_ids, aged.cutoff_ns)
    except Exception as exc:
        return failure(exc)


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
    """``python -m spendtrace.server.store.sqlite._writer --fd N DB``: serve the worker on socket ``N``."""
    p = argparse.ArgumentParser(description="spendtrace worker's SQLite writer (started by the worker's store)")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("db")
    args = p.parse_args(argv)
    serve(Connection(args.fd), args.db)


if __name__ == "__main__":
    main()
