"""Live alerts: an event published on the alerts topic of the real broker shows up in the TUI at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from _snap import screen_text
from _tui_helpers import SIZE, settle, until
from aiokafka import AIOKafkaProducer

from consumers.alerting import AlertEvent
from spendtrace.server.broker import EmbeddedBroker
from spendtrace.server.topics import ensure_topics
from tui.alert_feed import decode_alert
from tui.screens.alerts import AlertsScreen
from tui.widgets.keyed_table import KeyedTable


async def test_alert_from_topic_is_shown(
    tui_db: Path, make_app, broker: EmbeddedBroker, topic_name: str, fixed_now_ns: int
) -> None:  # type: ignore[no-untyped-def]
    """With --bootstrap, an alert published by the evaluator appears as a toast and in the events table."""
    await ensure_topics(broker.bootstrap, [topic_name], partitions=1)
    event = AlertEvent(
        id=9001, rule_id=1, rule_name="spike-live", kind="threshold", fired_ns=fixed_now_ns, scope="feature",
        scope_value="recommend", value_nano=2_500_000_000, threshold_nano=1_000_000_000, state_key="",
        message="recommend spent $2.50 in 1h (> $1.00)",
    )
    app = make_app(tui_db, bootstrap=broker.bootstrap, alerts_topic=topic_name)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("5")
            await settle(app, pilot)
            assert isinstance(app.screen, AlertsScreen)
            # the feed starts at the end of the topic: publish until the app has seen one (it may join late)
            deadline = time.monotonic() + 30
            while not app.live_alerts:
                assert time.monotonic() < deadline, "no alert received from the topic"
                await producer.send_and_wait(topic_name, event.to_json())
                for _ in range(10):
                    if app.live_alerts:
                        break
                    await pilot.pause(0.1)
                    await asyncio.sleep(0)
            assert app.live_alerts[0]["rule_name"] == "spike-live"
            events = app.screen.query_one("#events", KeyedTable)
            await until(pilot, lambda: "9001" in events.ordered_keys(), "live event row")
            assert "spike-live" in screen_text(app)
            assert any("recommend spent $2.50" in n.message for n in app._notifications)
    finally:
        await producer.stop()


def test_decode_alert_tolerates_garbage() -> None:
    """Non-JSON or non-object messages on the alerts topic become a message text, never an error."""
    assert decode_alert(b"not json") == {"message": "not json"}
    assert decode_alert(b"[1, 2]") == {"message": "[1, 2]"}
    assert decode_alert(b'{"rule_name": "r"}') == {"rule_name": "r"}
    assert decode_alert(None) == {"message": ""}
