"""``python -m spendtrace.server.broker`` prints a working bootstrap address and stops cleanly on SIGINT."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from aiokafka.admin import AIOKafkaAdminClient


async def test_broker_main_serves_until_sigint() -> None:
    """The printed address accepts Kafka admin requests; SIGINT ends the process with 0 and closes the port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendtrace.server.broker", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        bootstrap = proc.stdout.readline().decode().strip()
        host, _, port = bootstrap.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            assert isinstance(await admin.list_topics(), list)
        finally:
            await admin.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        with socket.socket() as s:
            assert s.connect_ex((host, int(port))) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
