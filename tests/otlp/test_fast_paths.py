"""The receiver's shortcuts give what the long way gives: one-pass attribute reading, the rules' per-resource
result, the usage key list."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from spendtrace.server.otlp import _usage, convert, load_rules

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def _export(resource: dict[str, str], spans: list[tuple[str, int, int | None, list[tuple[str, Any]]]]) -> Any:
    """A raw ExportTraceServiceRequest: spans as (name, span number, parent number, [(key, value), ...]).

    Built with the protobuf classes, not the SDK, so a span can carry a key twice.
    """
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in resource.items():
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    scope = rs.scope_spans.add()
    for name, number, parent, attrs in spans:
        span = scope.spans.add()
        span.name, span.trace_id, span.span_id = name, TRACE, number.to_bytes(8, "big")
        if parent is not None:
            span.parent_span_id = parent.to_bytes(8, "big")
        span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_000_000_100
        for key, value in attrs:
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
    return req


def test_rules_see_span_attributes_over_resource_ones_for_each_span(tmp_path: Path) -> None:
    """A rule matching the resource applies to spans without the attributes it reads, not to a span whose own
    value fails its condition, and a ``*_from`` attribute only the span has still fills the dimension."""
    f = tmp_path / "rules.toml"
    f.write_text(
        '[[rule]]\nmatch = { "deployment.tier" = "gold" }\nfeature = "premium"\ntenant_from = "app.customer"\n'
    )
    rules = load_rules(f)
    req = _export({"service.name": "shop", "deployment.tier": "gold"}, [
        ("plain", 1, None, [("http.method", "GET")]),
        ("free", 2, None, [("deployment.tier", "free")]),
        ("customer", 3, None, [("app.customer", "initech")]),
    ])  # fmt: skip
    spans = {s.operation: s for s in convert(req, rules).spans}
    assert (spans["plain"].feature, spans["plain"].user_id) == ("premium", None)
    assert (spans["free"].feature, spans["free"].user_id) == ("shop", None)
    assert (spans["customer"].feature, spans["customer"].user_id) == ("premium", "initech")


def test_a_repeated_attribute_key_keeps_its_last_value_and_unread_attributes_change_nothing() -> None:
    """A key sent twice counts as its last value (as before); attributes nothing reads leave the span as it was."""
    usage = [("gen_ai.provider.name", "openai"), ("gen_ai.request.model", "gpt-4o-mini"),
             ("gen_ai.usage.input_tokens", 100), ("gen_ai.usage.input_tokens", 250),
             ("gen_ai.usage.output_tokens", 9)]  # fmt: skip
    noise = [(f"x.attr{i}", f"value {i}") for i in range(20)] + [("gen_ai.usage.total_tokens", 7)]
    plain = convert(_export({}, [("chat", 1, None, [("spendtrace.feature", "a"), ("spendtrace.feature", "b"),
                                                     *usage])])).spans  # fmt: skip
    noisy = convert(_export({}, [("chat", 1, None, [*noise[:10], ("spendtrace.feature", "a"), *noise[10:],
                                                     ("spendtrace.feature", "b"), *usage])])).spans  # fmt: skip
    assert plain == noisy
    (span,) = plain
    assert span.feature == "b" and span.path == ("b",)
    (item,) = span.usage
    assert (item.input_tokens, item.output_tokens, item.model) == (250, 9, "gpt-4o-mini")


def test_a_child_before_its_parent_inherits_as_one_after_it() -> None:
    """Children end, and are exported, before their parents: the order in the export changes no span."""
    tree = [("root", 1, None, [("spendtrace.feature", "checkout"), ("enduser.id", "acme"), ("http.route", "/buy")]),
            ("mid", 2, 1, [("spendtrace.feature", "pricing")]),
            ("leaf", 3, 2, [("rpc.system", "aws-api"), ("rpc.service", "S3"), ("rpc.method", "PutObject")]),
            ("sibling", 4, 2, [])]  # fmt: skip
    forward = {s.operation: s for s in convert(_export({"service.name": "shop"}, tree)).spans}
    backward = {s.operation: s for s in convert(_export({"service.name": "shop"}, tree[::-1])).spans}
    assert forward == backward
    leaf = forward["leaf"]
    assert (leaf.feature, leaf.user_id, leaf.endpoint) == ("pricing", "acme", "/buy")
    assert leaf.path == ("checkout", "pricing")
    assert [u.key for u in leaf.usage] == ["s3_put"] and forward["sibling"].usage == ()


def test_usage_attributes_list_every_key_the_usage_reader_reads() -> None:
    """``convert`` keeps only the listed keys for usage: each key ``_usage`` reads from a span must be listed."""
    read: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(_usage))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "attrs" and isinstance(node.args[0], ast.Constant):
                read.add(node.args[0].value)
    assert len(read) >= 15  # the walk found the reads (a refactoring that hides them must update this test)
    assert read | _usage._TOKEN_KEYS <= _usage.USAGE_ATTRIBUTES
    assert {*_usage._TOKEN_KEYS, "rpc.system"} == _usage.USAGE_TRIGGERS
