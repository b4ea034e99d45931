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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from spendtrace.schema import MAX_NAME_LEN, UNATTRIBUTED, Span, UsageItem
from spendtrace.server.otlp._rules import DEFAULT_RULES, Rules
from spendtrace.server.otlp._usage import usage_items

__all__ = ["Converted", "any_value", "attributes", "convert"]

_STATUS_ERROR = 2
_MAX_ENDPOINT = 1024


def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays as lists, kvlists as dicts, bytes as hex)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return v.double_value
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def attributes(kvs: Any) -> dict[str, Any]:
    """A repeated ``KeyValue`` as a dict (a repeated key: the last wins)."""
    return {kv.key: any_value(kv.value) for kv in kvs}


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


@dataclass
class _Node:
    span_id: str
    parent_id: str | None
    request_id: str
    attrs: dict[str, Any]
    resource: dict[str, Any]
    raw: Any
    own: dict[str, str | None]
    resolved: dict[str, str | None] | None = None
    path: tuple[str, ...] | None = None


def _clip(value: str | None, limit: int) -> str | None:
    if value is None or value == "":
        return None
    return value[:limit]


def _iter_spans(request: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield resource, span


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


def convert(request: Any, rules: Rules = DEFAULT_RULES) -> Converted:
    """Turn an ``ExportTraceServiceRequest`` into spendtrace spans under ``rules``."""
    out = Converted()
    nodes: dict[tuple[str, str], _Node] = {}
    order: list[_Node] = []
    for resource, span in _iter_spans(request):
        if len(span.trace_id) != 16 or not any(span.trace_id):
            out.reject("span without a valid 16-byte trace_id")
            continue
        if len(span.span_id) != 8 or not any(span.span_id):
            out.reject("span without a valid 8-byte span_id")
            continue
        attrs = attributes(span.attributes)
        own = {dim: rules.pick(dim, attrs) for dim in ("feature", "tenant", "endpoint")}
        if rules.rules:
            for dim, value in rules.apply({**resource, **attrs}).items():
                if own.get(dim) is None:
                    own[dim] = value
        parent = span.parent_span_id.hex() if len(span.parent_span_id) == 8 and any(span.parent_span_id) else None
        node = _Node(span.span_id.hex(), parent, span.trace_id.hex(), attrs, resource, span, own)
        nodes[(node.request_id, node.span_id)] = node
        order.append(node)

    def resolve(node: _Node) -> dict[str, str | None]:
        # iterative walk up to the first resolved ancestor (traces can be deep; cycles are cut)
        chain: list[_Node] = []
        seen: set[str] = set()
        cur: _Node | None = node
        while cur is not None and cur.resolved is None and cur.span_id not in seen:
            seen.add(cur.span_id)
            chain.append(cur)
            cur = nodes.get((cur.request_id, cur.parent_id)) if cur.parent_id else None
        above = cur.resolved if cur is not None and cur.resolved is not None else None
        above_path = cur.path if cur is not None and cur.path is not None else ()
        for n in reversed(chain):
            res: dict[str, str | None] = {}
            for dim in ("feature", "tenant", "endpoint"):
                v = n.own.get(dim)
                if v is None and above is not None:
                    v = above.get(dim)
                res[dim] = v
            n.resolved = res
            feat = res["feature"]
            n.path = above_path if feat is None or feat in above_path else (*above_path, feat)
            above, above_path = res, n.path
        assert node.resolved is not None
        return node.resolved

    for node in order:
        res = resolve(node)
        feature = res["feature"] or rules.pick("feature", node.resource) or node.resource.get("service.name")
        feature = _clip(str(feature) if feature is not None else None, MAX_NAME_LEN) or UNATTRIBUTED
        tenant = res["tenant"] or rules.pick("tenant", node.resource)
        endpoint = res["endpoint"] or rules.pick("endpoint", node.resource)
        path = node.path or ()
        path = tuple(p[:MAX_NAME_LEN] for p in path)
        if not path or path[-1] != feature:
            path = (*tuple(p for p in path if p != feature), feature)
        span = node.raw
        start = span.start_time_unix_nano
        end = span.end_time_unix_nano
        failed = span.status.code == _STATUS_ERROR
        usage: tuple[UsageItem, ...] = usage_items(node.attrs, failed)
        out.spans.append(
            Span(
                span_id=node.span_id,
                parent_id=node.parent_id,
                request_id=node.request_id,
                feature=feature,
                operation=_clip(span.name, MAX_NAME_LEN),
                endpoint=_clip(endpoint, _MAX_ENDPOINT),
                user_id=_clip(tenant, MAX_NAME_LEN),
                start_ns=start,
                duration_ns=max(0, end - start),
                error=failed,
                error_type=_error_type(span, node.attrs) if failed else None,
                usage=usage,
                path=path,
            )
        )
    return out
