"""DynamoDB read / write units of one call: the consumed capacity when the response has it, else an estimate.

auto-instrumentation asks for ``ReturnConsumedCapacity=TOTAL`` (see ``_botocore``), so the exact
figure is the normal case. The estimate is for calls that opted out (``ReturnConsumedCapacity=NONE``)
and follows DynamoDB's on-demand rules with item sizes estimated from the data we can see:

- reads: one unit per 4 KB, rounded up, per item (GetItem, BatchGetItem, TransactGetItems) or per
  call (Query, Scan, ExecuteStatement: the *sum* of the scanned items' sizes is rounded up once);
  eventually consistent reads cost half, transactional reads double. A miss still costs one read.
  Query and Scan are billed on the items *scanned*, before filters and projections, so their
  size is the average returned item times ``ScannedCount`` (1 KB per item if none was returned);
- writes: one unit per 1 KB of the new item, rounded up (PutItem, BatchWriteItem puts), one unit for
  UpdateItem / DeleteItem unless the response returned the item, transactional writes double.
  The old item's size (a Put that replaces a bigger item costs more) is not visible: an underestimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["OPERATIONS", "consumed_units", "estimate_units", "item_size"]

#: Operation → ``"read"`` / ``"write"`` (``ExecuteStatement`` is decided by its statement).
OPERATIONS: dict[str, str] = {
    "GetItem": "read",
    "BatchGetItem": "read",
    "Query": "read",
    "Scan": "read",
    "TransactGetItems": "read",
    "PutItem": "write",
    "UpdateItem": "write",
    "DeleteItem": "write",
    "BatchWriteItem": "write",
    "TransactWriteItems": "write",
    "ExecuteStatement": "read",
}

_WIRE_TYPES = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").lstrip("0") or "0"
    return min(21, (len(digits.rstrip("0") or "0") + 1) // 2 + 1)


def _value_size(value: Any) -> int:
    """Approximate stored size of one attribute value, low-level (``{"S": ...}``) or boto3-deserialised."""
    if isinstance(value, Mapping) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in _WIRE_TYPES:
            if tag == "S":
                return len(str(inner).encode())
            if tag == "N":
                return _number_size(str(inner))
            if tag == "B":
                return len(inner) if isinstance(inner, bytes | bytearray) else len(str(inner))
            if tag in ("NULL", "BOOL"):
                return 1
            if tag in ("SS", "NS", "BS"):
                return sum(_value_size({tag[0]: v}) for v in inner)
            if tag == "L":
                return 3 + sum(_value_size(v) + 1 for v in inner)
            return 3 + sum(len(str(k).encode()) + _value_size(v) + 1 for k, v in inner.items())
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, int | float) or type(value).__name__ == "Decimal":
        return _number_size(str(value))
    if isinstance(value, Mapping):
        return 3 + sum(len(str(k).encode()) + _value_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 3 + sum(_value_size(v) + 1 for v in value)
    if isinstance(value, set | frozenset):
        return sum(_value_size(v) for v in value)
    value = getattr(value, "value", value)  # boto3 Binary
    return len(value) if isinstance(value, bytes | bytearray) else 8


def item_size(item: Mapping[str, Any] | None) -> int:
    """Approximate size in bytes of one item: attribute names plus values, as DynamoDB counts them."""
    if not item:
        return 0
    return sum(len(name.encode()) + _value_size(v) for name, v in item.items())


def consumed_units(consumed: Any, kind: str) -> dict[str, float] | None:
    """``{"read": units, "write": units}`` from a response's ``ConsumedCapacity`` (dict or list), or ``None``."""
    if not consumed:
        return None
    entries = consumed if isinstance(consumed, list) else [consumed]
    out = {"read": 0.0, "write": 0.0}
    for entry in entries:
        read = entry.get("ReadCapacityUnits")
        write = entry.get("WriteCapacityUnits")
        if read is not None or write is not None:  # INDEXES mode gives the split
            out["read"] += float(read or 0.0)
            out["write"] += float(write or 0.0)
        else:
            out[kind] += float(entry.get("CapacityUnits") or 0.0)
    return out


def _reads(sizes: Iterable[int], factor: float) -> float:
    return sum(max(1, math.ceil(s / 4096)) for s in sizes) * factor


def _writes(sizes: Iterable[int], factor: float = 1.0) -> float:
    return sum(max(1, math.ceil(s / 1024)) for s in sizes) * factor


def _count_keys(request_items: Any) -> dict[str, int]:
    if not isinstance(request_items, Mapping):
        return {}
    return {t: len(spec.get("Keys", ())) for t, spec in request_items.items() if isinstance(spec, Mapping)}


def estimate_units(op: str, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> float:
    """Estimated capacity units of one successful call without ``ConsumedCapacity`` (rules in the module doc)."""
    factor = 1.0 if params.get("ConsistentRead") else 0.5
    if op == "GetItem":
        return _reads([item_size(parsed.get("Item"))], factor)
    if op in ("Query", "Scan"):
        items = parsed.get("Items") or []
        scanned = parsed.get("ScannedCount", parsed.get("Count", len(items))) or 0
        avg = sum(item_size(i) for i in items) / len(items) if items else 1024
        return max(1, math.ceil(avg * scanned / 4096)) * factor
    if op == "ExecuteStatement":
        items = parsed.get("Items") or []
        return max(1, math.ceil(sum(item_size(i) for i in items) / 4096)) * factor
    if op == "BatchGetItem":
        requested = params.get("RequestItems") or {}
        keys = _count_keys(requested)
        unprocessed = _count_keys(parsed.get("UnprocessedKeys"))
        total = 0.0
        for table, rows in (parsed.get("Responses") or {}).items():
            spec = requested.get(table) or {}
            f = 1.0 if spec.get("ConsistentRead") else 0.5
            total += _reads((item_size(r) for r in rows), f)
            missed = keys.get(table, 0) - unprocessed.get(table, 0) - len(rows)
            total += max(0, missed) * f
        return total
    if op == "TransactGetItems":
        return sum(_reads([item_size(r.get("Item"))], 2.0) for r in parsed.get("Responses") or [])
    if op == "PutItem":
        return _writes([item_size(params.get("Item"))])
    if op in ("UpdateItem", "DeleteItem"):
        return _writes([item_size(parsed.get("Attributes"))])
    if op == "BatchWriteItem":
        return _batch_write(params.get("RequestItems")) - _batch_write(parsed.get("UnprocessedItems"))
    if op == "TransactWriteItems":
        sizes = [item_size((t.get("Put") or {}).get("Item")) for t in params.get("TransactItems") or []]
        return _writes(sizes, 2.0)
    return 1.0


def _batch_write(request_items: Any) -> float:
    if not isinstance(request_items, Mapping):
        return 0.0
    sizes = [
        item_size((req.get("PutRequest") or {}).get("Item")) for reqs in request_items.values() for req in reqs or ()
    ]
    return _writes(sizes)
