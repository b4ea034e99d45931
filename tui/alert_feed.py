"""Tail the ``spendtrace.alerts`` Kafka topic (no textual import): yields each alert as a dict."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "spendtrace.alerts"


def decode_alert(value: bytes | None) -> dict[str, Any]:
    """A JSON object as sent by the alert evaluator; anything else is kept as ``{"message": text}``."""
    if not value:
        return {"message": ""}
    try:
        data = json.loads(value)
    except ValueError:
        return {"message": value.decode("utf-8", "replace")}
    return data if isinstance(data, dict) else {"message": str(data)}


async def tail_alerts(
    bootstrap: str, topic: str = DEFAULT_TOPIC, *, retry_s: float = 2.0
) -> AsyncIterator[dict[str, Any]]:
    """Alerts published from now on; reconnects (after ``retry_s``) when the broker goes away."""
    from aiokafka import AIOKafkaConsumer

    while True:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            metadata_max_age_ms=5000,
        )
        try:
            await consumer.start()
            async for msg in consumer:
                yield decode_alert(msg.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker down or topic missing: try again later, never crash the UI
            log.debug("alert feed: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await asyncio.sleep(retry_s)
