"""OTel spans of one export → spendtrace ``Span``s: ids, timing, attribution and usage.

Trace id → ``request_id``, span and parent ids kept (hex), start and duration kept, the span name
as ``operation``, status ERROR as ``error`` (``error.type`` or the first exception event's type).
Feature, tenant and endpoint follow ``Rules`` (see ``_rules``): the span's own attributes, a rule,
the nearest ancestor in the same export, the resource, then (feature only) ``service.name`` and
``__unattributed__``. ``path`` is the distinct features from the earliest ancestor present in the
export down to the span, so fully-loaded cost per feature works for OTel traces as for SDK ones.

A span without a valid trace or span id cannot be placed in any tree: it is rejected and counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spendtrace.schema import MAX_NAME_LEN, UNATTRIBUTED, Span
from spendtrace.server.otlp._rules import DEFAULT_RULES, Rules
from spendtrace.server.otlp._usage import usage_items

__all__ = ["Converted", "any_value", "attributes", "convert"]

_STATUS_ERROR = 2
_MAX_ENDPOINT = 1024
_ZERO16, _ZERO8 = bytes(16), bytes(8)


def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays as lists, kvlists as dicts, bytes as hex)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)  # int_value, bool_value, double_value


def attributes(kvs: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` as a dict (a repeated key: the last wins)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        if kind == "string_value" or kind == "int_value":  # the common kinds, without a call
            out[kv.key] = getattr(v, kind)
        else:
            out[kv.key] = any_value(v)
    return out


@dataclass
class Converted:
    """The spans made from one export, and the spans rejected (count and the first reasons)."""

    spans: list[Span] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        """Count one rejected span; keep the first few reasons for the partial-success message."""
        self.rejected += 1
        if len(self.reasons) < 5 and reason not in self.reasons:
            self.reasons.append(reason)


class _Node:
    """A span of the export while its attribution is resolved; ``own`` / ``resolved``: (feature, tenant, endpoint)."""

    __slots__ = ("attrs", "own", "parent_id", "path", "raw", "request_id", "resolved", "resource", "span_id")

    def __init__(self, span_id: str, parent_id: str | None, request_id: str, attrs: dict[str, Any],
                 resource: _Resource, raw: Any, own: tuple[str | None, str | None, str | None]) -> None:  # fmt: skip
        self.span_id = span_id
        self.parent_id = parent_id
        self.request_id = request_id
        self.attrs = attrs
        self.resource = resource
        self.raw = raw
        self.own = own
        self.resolved: tuple[str | None, str | None, str | None] | None = None
        self.path: tuple[str, ...] = ()


class _Resource:
    """A resource's attributes and what they give each of its spans when nothing closer does."""

    __slots__ = ("attrs", "endpoint", "feature", "tenant")

    def __init__(self, attrs: dict[str, Any], rules: Rules) -> None:
        self.attrs = attrs
        feature = rules.pick("feature", attrs) or attrs.get("service.name")
        self.feature = _clip(str(feature) if feature is not None else None, MAX_NAME_LEN) or UNATTRIBUTED
        self.tenant = _clip(rules.pick("tenant", attrs), MAX_NAME_LEN)
        self.endpoint = _clip(rules.pick("endpoint", attrs), _MAX_ENDPOINT)


def _first(keys: tuple[str, ...], attrs: dict[str, Any]) -> str | None:
    """``Rules.pick`` with the attribute list in hand: the first non-empty value of ``keys`` in ``attrs``."""
    for key in keys:
        v = attrs.get(key)
        if v is not None and v != "":
            return str(v)
    return None


def _clip(value: str | None, limit: int) -> str | None:
    if value is None or value == "":
        return None
    return value[:limit]


def _error_type(span: Any, attrs: Mapping[str, Any]) -> str | None:
    et = attrs.get("error.type")
    if et:
        return str(et)[:MAX_NAME_LEN]
    for event in span.events:
        if event.name == "exception":
            for kv in event.attributes:
                if kv.key == "exception.type":
                    return str(any_value(kv.value))[:MAX_NAME_LEN] or None
    return None


def _resolve(node: _Node, nodes: dict[tuple[str, str], _Node]) -> tuple[str | None, str | None, str | None]:
    """The span's (feature, tenant, endpoint), each its own or its nearest ancestor's in the export; sets ``path``."""
    if node.resolved is not None:
        return node.resolved
    chain: list[_Node] = []  # iterative walk up to the first resolved ancestor (traces can be deep; cycles are cut)
    seen: set[str] = set()
    cur: _Node | None = node
    while cur is not None and cur.resolved is None and cur.span_id not in seen:
        seen.add(cur.span_id)
        chain.append(cur)
        cur = nodes.get((cur.request_id, cur.parent_id)) if cur.parent_id else None
    above = cur.resolved if cur is not None else None
    above_path = cur.path if cur is not None and cur.resolved is not None else ()
    for n in reversed(chain):
        f, t, e = n.own
        if above is not None:
            f = f if f is not None else above[0]
            t = t if t is not None else above[1]
            e = e if e is not None else above[2]
        n.resolved = res = (f, t, e)
        n.path = above_path if f is None or f in above_path else (*above_path, f)
        above, above_path = res, n.path
    assert node.resolved is not None
    return node.resolved


def convert(request: Any, rules: Rules = DEFAULT_RULES) -> Converted:
    """Turn an ``ExportTraceServiceRequest`` into spendtrace spans under ``rules``."""
    out = Converted()
    nodes: dict[tuple[str, str], _Node] = {}
    order: list[_Node] = []
    fkeys, tkeys, ekeys = rules.feature, rules.tenant, rules.endpoint
    for rs in request.resource_spans:
        resource = _Resource(attributes(rs.resource.attributes), rules)
        for ss in rs.scope_spans:
            for span in ss.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                if len(trace_id) != 16 or trace_id == _ZERO16:
                    out.reject("span without a valid 16-byte trace_id")
                    continue
                if len(span_id) != 8 or span_id == _ZERO8:
                    out.reject("span without a valid 8-byte span_id")
                    continue
                attrs = attributes(span.attributes)
                f, t, e = _first(fkeys, attrs), _first(tkeys, attrs), _first(ekeys, attrs)
                if rules.rules:
                    found = rules.apply({**resource.attrs, **attrs})
                    f = f if f is not None else found.get("feature")
                    t = t if t is not None else found.get("tenant")
                    e = e if e is not None else found.get("endpoint")
                own = (_clip(f, MAX_NAME_LEN), _clip(t, MAX_NAME_LEN), _clip(e, _MAX_ENDPOINT))
                parent_id = parent.hex() if len(parent) == 8 and parent != _ZERO8 else None
                node = _Node(span_id.hex(), parent_id, trace_id.hex(), attrs, resource, span, own)
                nodes[(node.request_id, node.span_id)] = node
                order.append(node)

    for node in order:
        f, t, e = _resolve(node, nodes)
        res = node.resource
        feature = f if f is not None else res.feature
        path = node.path
        if not path or path[-1] != feature:
            path = (*(p for p in path if p != feature), feature)
        span = node.raw
        start = span.start_time_unix_nano
        end = span.end_time_unix_nano
        failed = span.status.code == _STATUS_ERROR
        out.spans.append(
            Span(
                span_id=node.span_id,
                parent_id=node.parent_id,
                request_id=node.request_id,
                feature=feature,
                operation=_clip(span.name, MAX_NAME_LEN),
                endpoint=e if e is not None else res.endpoint,
                user_id=t if t is not None else res.tenant,
                start_ns=start,
                duration_ns=max(0, end - start),
                error=failed,
                error_type=_error_type(span, node.attrs) if failed else None,
                usage=usage_items(node.attrs, failed),
                path=path,
            )
        )
    return out
