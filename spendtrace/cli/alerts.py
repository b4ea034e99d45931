"""``spendtrace alerts add | list | remove | tail``: manage spend alert rules and follow their events.

Rules are stored in the database, so the consumer workers pick them up on their next batch.
Webhook URLs are always printed masked. ``tail`` follows the store's alert events by id
(``AlertStore.events_after``; any process can read the database), or the alerts Kafka topic with
``--bootstrap``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from spendtrace.cli._args import INT64_MAX, float_in, int_in
from spendtrace.cli._text import terminal_safe
from spendtrace.cli.main import add_store_options
from spendtrace.server.alerts.rules import AlertRule

_NANO = 1_000_000_000
_USD = float_in(0, 1e9, above=True)  # dollars: positive, and nano-dollars fit in 64 bits


def _scope_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--feature", help="watch one feature")
    g.add_argument("--user", dest="user_id", metavar="TENANT", help="watch one tenant (user_id)")
    g.add_argument("--endpoint", help="watch one endpoint")
    g.add_argument("--total", action="store_true", help="watch total spend")


def _percentage(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--percentages: {text.strip()!r} is not a number") from None


def _add(args: argparse.Namespace) -> int:
    from spendtrace import alerts

    scope: dict[str, Any] = {"feature": args.feature, "user_id": args.user_id, "endpoint": args.endpoint,
                             "total": args.total}
    common: dict[str, Any] = {"webhook": args.webhook, "name": args.name, "db_path": args.store,
                              "webhook_format": args.format, "routing_key": args.routing_key,
                              "allow_private": args.allow_private_webhook}
    kinds = [k for k in ("threshold", "budget", "rate") if getattr(args, k) is not None]
    try:
        if len(kinds) != 1:
            raise ValueError("give exactly one of --threshold USD, --budget USD or --rate FACTOR")
        if args.threshold is not None:
            rule = alerts.set_alert(threshold=args.threshold, window_hours=args.window_hours,
                                    cooldown_minutes=args.cooldown_minutes, **scope, **common)
        elif args.budget is not None:
            pcts = [_percentage(p) for p in args.percentages.split(",") if p.strip()]
            rule = alerts.set_budget(args.budget, args.period, percentages=pcts, **scope, **common)
        else:
            rule = alerts.set_rate_alert(args.rate, min_spend=args.min_spend, cooldown_minutes=args.cooldown_minutes,
                                         **scope, **common)
    except ValueError as exc:
        print(f"spendtrace alerts add: {exc}", file=sys.stderr)
        return 2
    print(terminal_safe(f"saved rule #{rule.id} {rule.name!r}: {rule.describe()}"
                        + (f" -> {rule.masked_webhook}" if rule.webhook else "")))
    return 0


def _row(rule: AlertRule) -> tuple[str, ...]:
    return (str(rule.id), rule.name, rule.kind, rule.describe(), rule.masked_webhook or "—",
            rule.webhook_format if rule.webhook else "", "yes" if rule.enabled else "no")


def _list(args: argparse.Namespace) -> int:
    from spendtrace.cli.main import render_table
    from spendtrace.server.alerts.rules import list_alerts

    rules = list_alerts(args.store)
    if args.json:
        print(json.dumps([r.to_dict() for r in rules], indent=2, ensure_ascii=False))
    elif not rules:
        print("no alert rules (add one with: spendtrace alerts add --feature NAME --threshold USD)")
    else:
        print(render_table(("id", "name", "kind", "rule", "webhook", "format", "on"), [_row(r) for r in rules]))
    return 0


def _remove(args: argparse.Namespace) -> int:
    from spendtrace.server.alerts.rules import remove_alert

    if remove_alert(args.rule, db_path=args.store):
        print(f"removed rule {args.rule}")
        return 0
    print(f"spendtrace alerts remove: no rule named {args.rule!r}", file=sys.stderr)
    return 1


def format_event(ev: dict[str, Any]) -> str:
    """One line per alert event: time, rule, message, delivery status."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ev["fired_ns"]) / 1e9))
    delivery = f" [{ev['delivery']}]" if ev.get("delivery") else ""
    return f"{when}Z #{ev['id']} {ev['message']}{delivery}"


def _tail_db(args: argparse.Namespace) -> int:
    from pathlib import Path

    from spendtrace.server.store.base import open_alert_store

    if "://" not in str(args.store) and not Path(args.store).is_file():
        print(f"spendtrace alerts tail: no database at {args.store} (or use --bootstrap HOST:PORT)", file=sys.stderr)
        return 2

    store = open_alert_store(args.store, readonly=True)
    try:
        last = max(0, store.last_event_id() - args.last) if args.since_id is None else args.since_id
        shown = 0
        while True:
            for event in store.events_after(last, 1000):
                print(terminal_safe(format_event({**event.to_dict(), "delivery": event.delivery})), flush=True)
                last = event.id
                shown += 1
                if args.count and shown >= args.count:
                    return 0
            if not args.follow:
                if not shown:
                    print("no alert events" + (" after that id" if args.since_id is not None else ""))
                return 0
            time.sleep(args.interval)
    finally:
        store.close()


def _tail_kafka(args: argparse.Namespace) -> int:
    import asyncio

    async def run() -> int:
        from aiokafka import AIOKafkaConsumer

        from spendtrace.sdk.context import suppress_instrumentation

        with suppress_instrumentation():
            consumer = AIOKafkaConsumer(args.topic, bootstrap_servers=args.bootstrap, group_id=None,
                                        auto_offset_reset="earliest" if args.from_beginning else "latest",
                                        enable_auto_commit=False)
            await consumer.start()
            shown = 0
            try:
                async for msg in consumer:
                    try:
                        ev = json.loads(msg.value)
                        line = format_event(ev)
                    except (ValueError, KeyError, TypeError):
                        line = f"(unreadable alert message at offset {msg.offset})"
                    print(terminal_safe(line), flush=True)
                    shown += 1
                    if args.count and shown >= args.count:
                        return 0
            finally:
                await consumer.stop()
        return 0

    return asyncio.run(run())


def _tail(args: argparse.Namespace) -> int:
    try:
        return _tail_kafka(args) if args.bootstrap else _tail_db(args)
    except KeyboardInterrupt:
        return 0


def register(subparsers: Any) -> None:
    """Add ``alerts`` with its ``add``, ``list``, ``remove`` and ``tail`` subcommands."""
    alerts = subparsers.add_parser("alerts", help="spend alert rules and their events")
    sub = alerts.add_subparsers(dest="alerts_command", metavar="{add,list,remove,tail}")
    alerts.set_defaults(handler=lambda _args: (alerts.print_help(), 2)[1], needs_db=False)

    add = sub.add_parser("add", help="add or replace (by --name) a threshold, budget or rate rule")
    add_store_options(add)
    _scope_args(add)
    add.add_argument("--threshold", type=_USD, help="fire when spend over the window exceeds this many USD")
    add.add_argument("--window-hours", type=float_in(0, 24 * 366, above=True), default=24.0,
                     help="rolling window (default 24)")
    add.add_argument("--budget", type=_USD, help="a budget in USD per --period")
    add.add_argument("--period", choices=("day", "week", "month"), default="month", help="budget period (UTC)")
    add.add_argument("--percentages", default="50,80,100", help="budget warnings, in %% (default 50,80,100)")
    add.add_argument("--rate", type=float_in(1, 1e6, above=True), metavar="FACTOR",
                     help="fire when last hour >= FACTOR x usual")
    add.add_argument("--min-spend", type=_USD, default=1.0, help="rate rules: least last-hour USD (default 1)")
    add.add_argument("--cooldown-minutes", type=int_in(0, 60 * 24 * 366), default=60,
                     help="least minutes between firings (default 60)")
    add.add_argument("--webhook", help="http(s) URL to POST to (Slack-compatible by default)")
    add.add_argument("--format", choices=("slack", "pagerduty"), default="slack", help="webhook body format")
    add.add_argument("--routing-key", help="PagerDuty Events v2 routing key")
    add.add_argument("--allow-private-webhook", action="store_true",
                     help="let --webhook point at a loopback or private address (never link-local or cloud metadata)")
    add.add_argument("--name", help="rule name (default: derived from the rule)")
    add.set_defaults(handler=_add, needs_db=False)

    ls = sub.add_parser("list", help="list the rules (webhooks masked)")
    add_store_options(ls)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_list, needs_db=True)

    rm = sub.add_parser("remove", help="remove a rule by name or id")
    add_store_options(rm)
    rm.add_argument("rule", metavar="NAME_OR_ID")
    rm.set_defaults(handler=_remove, needs_db=True)

    tail = sub.add_parser("tail", help="follow alert events as they fire")
    add_store_options(tail)
    tail.add_argument("--last", type=int_in(0, 1_000_000), default=10, help="start with the last N events (default 10)")
    tail.add_argument("--since-id", type=int_in(0, INT64_MAX), help="start after this event id")
    tail.add_argument("--no-follow", dest="follow", action="store_false", help="print and exit")
    tail.add_argument("--count", type=int_in(0, INT64_MAX), default=0, help="exit after N events")
    tail.add_argument("--interval", type=float_in(0, 3600, above=True), default=1.0,
                      help="seconds between database polls")
    tail.add_argument("--bootstrap", help="follow the Kafka alerts topic on HOST:PORT instead of the database")
    tail.add_argument("--topic", default="spendtrace.alerts", help="alerts topic (with --bootstrap)")
    tail.add_argument("--from-beginning", action="store_true", help="with --bootstrap: from the topic's start")
    tail.set_defaults(handler=_tail, needs_db=False)
