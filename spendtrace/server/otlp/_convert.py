"""OTel spans of one export → spendtrace ``Span``s: ids, timing, attribution and usage.

Trace id → ``request_id``, span and parent ids kept (hex), start and duration kept, the span name
as ``operation``, status ERROR as ``error`` (``error.type`` or the first exception event's type).
Feature, tenant and endpoint follow ``Rules`` (see ``_rules``): the span's own attributes, a rule,
the nearest ancestor in the same export, the resource, then (feature only) ``service.name`` and
``__unattributed__``. ``path`` is the distinct features from the earliest ancestor present in the
export down to the span, so fully-loaded cost per feature works for OTel traces as for SDK ones.

A span without a valid trace or span id cannot be placed in any tree: it is rejected and counted.

Reading protobuf fields from Python is most of the cost (bench_otlp.py), so what conversion uses is
read first, by itself: each span's ids, name, times, status code, first exception type and only the
attributes whose key something reads (``_Plan``: the rules' lists and conditions, the usage and error
keys), with what they feed. Given the body the message was parsed from, the C reader (``_c/wire.c``) reads
it from the bytes; otherwise (JSON, or an install without a C compiler) ``_read_message`` reads upb's
objects. Both give the same tuples (tests compare them); conversion proper works on those.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from spendtrace.schema import MAX_NAME_LEN, UNATTRIBUTED, Span, UsageItem
from spendtrace.server.otlp._rules import DEFAULT_RULES, Rules
from spendtrace.server.otlp._usage import TOKEN_KEYS, USAGE_ATTRIBUTES, USAGE_TRIGGERS, OutOfRange, usage_items

try:
    import spendtrace.server.otlp._c.wire as _wire
except ImportError:  # installed without a C compiler: upb's objects are read instead
    _wire = None  # type: ignore[assignment]

__all__ = ["Converted", "any_value", "attributes", "convert"]

log = logging.getLogger(__name__)

_STATUS_ERROR = 2
_MAX_ENDPOINT = 1024
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16  # all-zero ids, hex: invalid


def any_value(v: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays as lists, kvlists as dicts, bytes as hex)."""
    s = v.string_value  # most values are non-empty strings: one read instead of WhichOneof and getattr
    if s:
        return s
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return s  # the empty string
    if kind is None:
        return None
    if kind == "array_value":  # strings without a call each (DynamoDB's consumed capacity is an array of them)
        return [x.string_value or any_value(x) for x in v.array_value.values]
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
        out[kv.key] = v.string_value or any_value(v)  # the common kind without a call
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


# What an attribute key feeds (bit flags of ``_Plan.wanted``).
_FEATURE, _TENANT, _ENDPOINT, _RULED, _USAGE, _TOKENS = 1, 2, 4, 8, 16, 32


class _Plan:
    """What ``convert`` reads of a span's attributes under one ``Rules``.

    ``wanted`` maps each key that anything reads to what it feeds: ``_FEATURE`` / ``_TENANT`` /
    ``_ENDPOINT`` (the key is in that list), ``_RULED`` (a rule's condition or source: the span's
    rules are worked out anew, else its resource's result stands), ``_USAGE`` (a key without which
    ``usage_items`` finds nothing), ``_TOKENS`` (a GenAI token count). Keys it lacks are skipped without
    reading their values: nothing in conversion looks at them.
    """

    __slots__ = ("keys", "wanted")

    def __init__(self, rules: Rules) -> None:
        wanted = dict.fromkeys(USAGE_ATTRIBUTES, 0)
        wanted.update(dict.fromkeys(USAGE_TRIGGERS, _USAGE))
        wanted.update(dict.fromkeys(TOKEN_KEYS, _USAGE | _TOKENS))
        wanted["error.type"] = 0
        for flag, keys in ((_FEATURE, rules.feature), (_TENANT, rules.tenant), (_ENDPOINT, rules.endpoint)):
            for key in keys:
                wanted[key] = wanted.get(key, 0) | flag
        for rule in rules.rules:
            for key in (*(k for k, _ in rule.match), *(k for _, k in rule.set_from)):
                wanted[key] = wanted.get(key, 0) | _RULED
        self.wanted = wanted
        self.keys = _wire.keys(wanted) if _wire is not None else None  # the same, as the C reader's table


@lru_cache(maxsize=64)
def _plan(rules: Rules) -> _Plan:
    return _Plan(rules)


class _Resource:
    """A resource's attributes and what they give each of its spans when nothing closer does.

    ``found``: what the rules set for the resource's attributes alone, which is what they set for
    each of its spans that has none of the attributes the rules read.
    """

    __slots__ = ("attrs", "endpoint", "feature", "found", "tenant")

    def __init__(self, attrs: dict[str, Any], rules: Rules) -> None:
        self.attrs = attrs
        feature = rules.pick("feature", attrs) or attrs.get("service.name")
        self.feature = _clip(str(feature) if feature is not None else None, MAX_NAME_LEN) or UNATTRIBUTED
        self.tenant = _clip(rules.pick("tenant", attrs), MAX_NAME_LEN)
        self.endpoint = _clip(rules.pick("endpoint", attrs), _MAX_ENDPOINT)
        self.found = rules.apply(attrs) if rules.rules else {}


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


def _error_type(attrs: Mapping[str, Any], exception: Any) -> str | None:
    """A failed span's ``error.type``, else the type of its first exception event, else None."""
    et = attrs.get("error.type")
    if et:
        return str(et)[:MAX_NAME_LEN]
    return str(exception)[:MAX_NAME_LEN] or None if exception is not None else None


def _exception_type(events: Any) -> Any:
    """The value of the first ``exception.type`` attribute of the first ``exception`` event that has a value."""
    for event in events:
        if event.name == "exception":
            for kv in event.attributes:
                if kv.key == "exception.type":
                    value = any_value(kv.value)
                    if value is not None:
                        return value
                    break
    return None


#: What conversion reads of one span: trace id, span id, parent span id (hex), name, start, end (Unix ns),
#: status code, the attributes whose key ``_Plan.wanted`` has, the OR of their flags, and the exception
#: type (``_exception_type``). A tuple, as ``wire.scan`` makes it without a class of its own.
_Read = tuple[str, str, str, str, int, int, int, dict[str, Any], int, Any]


def _read_message(request: Any, wanted: dict[str, int]) -> list[tuple[dict[str, Any], list[_Read]]]:
    """What conversion reads of a parsed ``ExportTraceServiceRequest``, per resource: its attributes and spans."""
    out: list[tuple[dict[str, Any], list[_Read]]] = []
    for rs in request.resource_spans:
        spans: list[_Read] = []
        for ss in rs.scope_spans:
            for span in ss.spans:
                attrs: dict[str, Any] = {}
                flags = 0
                for kv in span.attributes:  # one pass; a repeated key: the last wins
                    key = kv.key
                    flag = wanted.get(key)
                    if flag is not None:
                        v = kv.value
                        s = v.string_value  # any_value's first step, inlined: most values are strings
                        attrs[key] = s if s else v.int_value if v.WhichOneof("value") == "int_value" else any_value(v)
                        flags |= flag
                events = span.events
                spans.append((span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name,
                              span.start_time_unix_nano, span.end_time_unix_nano, span.status.code, attrs, flags,
                              _exception_type(events) if events else None))  # fmt: skip
        out.append((attributes(rs.resource.attributes), spans))
    return out


_Dims = tuple[str | None, str | None, str | None]  # (feature, tenant, endpoint)


def _resolve(i: int, keys: list[str], parents: list[str | None], own: list[_Dims], at: dict[str, int],
             resolved: list[_Dims | None], paths: list[tuple[str, ...]]) -> _Dims:  # fmt: skip
    """Span ``i``'s (feature, tenant, endpoint), each its own or its nearest ancestor's in the export; sets its path.

    Spans are numbered in export order; ``at`` finds a span by trace id + span id (the last span of a
    repeated id). Walks up to the first resolved ancestor, iteratively (traces can be deep), cutting cycles.
    """
    chain: list[int] = []
    seen: set[str] = set()
    cur: int | None = i
    while cur is not None and resolved[cur] is None and keys[cur] not in seen:
        seen.add(keys[cur])
        chain.append(cur)
        parent = parents[cur]
        cur = at.get(parent) if parent is not None else None
    above = resolved[cur] if cur is not None else None
    above_path = paths[cur] if cur is not None and above is not None else ()
    for n in reversed(chain):
        f, t, e = own[n]
        if above is not None:
            f = f if f is not None else above[0]
            t = t if t is not None else above[1]
            e = e if e is not None else above[2]
        resolved[n] = above = (f, t, e)
        paths[n] = above_path = above_path if f is None or f in above_path else (*above_path, f)
    done = resolved[i]
    assert done is not None
    return done


def convert(request: Any, rules: Rules = DEFAULT_RULES, body: bytes | None = None) -> Converted:
    """Turn an ``ExportTraceServiceRequest`` into spendtrace spans under ``rules``.

    ``body``: the protobuf bytes ``request`` was parsed from (so known to be well-formed), for the C reader.
    """
    out = Converted()
    plan = _plan(rules)
    read = _wire.scan(body, plan.keys) if body is not None and plan.keys is not None else None
    if read is None:  # no body, no C reader, or a body the C reader leaves to upb (a merged singular field)
        read = _read_message(request, plan.wanted)
    fkeys, tkeys, ekeys, ruled = rules.feature, rules.tenant, rules.endpoint, bool(rules.rules)
    # The spans of the export, numbered in order; what the second pass needs of each, by number (``rest`` is
    # unpacked by name where it is read). Parallel lists instead of a slotted object per span: 7.73 instead
    # of 7.88 µs/span of CPU for parse + convert (bench_otlp.py payloads, one session): a small gain.
    keys: list[str] = []  # trace id + span id (hex)
    parents: list[str | None] = []  # trace id + parent span id
    own: list[_Dims] = []
    # trace id, span id, parent id, name, start, end, resource, failed, error type, usage
    rest: list[tuple[str, str, str | None, str, int, int, _Resource, bool, str | None, tuple[UsageItem, ...]]] = []
    at: dict[str, int] = {}
    for resource_attrs, spans in read:
        resource = _Resource(resource_attrs, rules)
        for trace_id, span_id, parent, name, start, end, code, attrs, flags, exception in spans:
            if len(trace_id) != 32 or trace_id == _ZERO_TRACE:
                out.reject("span without a valid 16-byte trace_id")
                continue
            if len(span_id) != 16 or span_id == _ZERO_SPAN:
                out.reject("span without a valid 8-byte span_id")
                continue
            f = _first(fkeys, attrs) if flags & _FEATURE else None
            t = _first(tkeys, attrs) if flags & _TENANT else None
            e = _first(ekeys, attrs) if flags & _ENDPOINT else None
            if ruled:
                found = rules.apply({**resource.attrs, **attrs}) if flags & _RULED else resource.found
                if found:
                    f = f if f is not None else found.get("feature")
                    t = t if t is not None else found.get("tenant")
                    e = e if e is not None else found.get("endpoint")
            failed = code == _STATUS_ERROR
            if flags & _USAGE:
                try:
                    usage = usage_items(attrs, failed, tokens=bool(flags & _TOKENS))
                except OutOfRange as exc:  # a unit too large to store: refused, with the reason
                    out.reject(str(exc))
                    continue
                except Exception as exc:  # input no rule foresaw: this span refused with the reason, not the export
                    reason = f"usage attributes could not be read ({type(exc).__name__}: {str(exc)[:200]})"
                    if reason not in out.reasons:  # once per export and reason: a flood of such spans logs once
                        log.warning("refused an OTLP span: %s", reason, exc_info=True)
                    out.reject(reason)
                    continue
            else:
                usage = ()
            key = trace_id + span_id
            at[key] = len(keys)
            keys.append(key)
            has_parent = len(parent) == 16 and parent != _ZERO_SPAN
            parents.append(trace_id + parent if has_parent else None)
            own.append((f[:MAX_NAME_LEN] if f else None, t[:MAX_NAME_LEN] if t else None,
                        e[:_MAX_ENDPOINT] if e else None))  # fmt: skip
            rest.append((trace_id, span_id, parent if has_parent else None, name, start, end, resource, failed,
                         _error_type(attrs, exception) if failed else None, usage))  # fmt: skip

    n = len(keys)
    resolved: list[_Dims | None] = [None] * n
    paths: list[tuple[str, ...]] = [()] * n
    made: list[Any] = [None] * n
    # Last to first: SDKs export a span when it ends, children before their parents, so this order meets a
    # parent first and the walk (_resolve) is rarely needed (on bench_otlp.py's five-span traces the gain is
    # within the noise, 0-0.15 µs/span; deeper traces walk longer chains).
    for i in range(n - 1, -1, -1):
        trace_id, span_id, parent_id, name, start, end, res, failed, error_type, usage = rest[i]
        dims = resolved[i]
        if dims is None:  # the usual cases without the walk: a root, or a parent resolved already
            parent = parents[i]
            p = at.get(parent) if parent is not None else None
            if p is None:
                resolved[i] = dims = own[i]
                paths[i] = (dims[0],) if dims[0] is not None else ()
            elif p != i and (above := resolved[p]) is not None:
                f, t, e = own[i]
                resolved[i] = dims = (f if f is not None else above[0], t if t is not None else above[1],
                                      e if e is not None else above[2])  # fmt: skip
                paths[i] = paths[p] if f is None or f in paths[p] else (*paths[p], f)
            else:
                dims = _resolve(i, keys, parents, own, at, resolved, paths)
        f, t, e = dims
        feature = f if f is not None else res.feature
        path = paths[i]
        if not path or path[-1] != feature:
            path = (*(p for p in path if p != feature), feature)
        made[i] = Span(
            span_id=span_id,
            parent_id=parent_id,
            request_id=trace_id,
            feature=feature,
            operation=name[:MAX_NAME_LEN] if name else None,
            endpoint=e if e is not None else res.endpoint,
            user_id=t if t is not None else res.tenant,
            start_ns=start,
            duration_ns=max(0, end - start),
            error=failed,
            error_type=error_type,
            usage=usage,
            path=path,
        )
    out.spans = made
    return out
