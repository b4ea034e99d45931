"""OTel spans → spendtrace spans: ids, timing, attribution rules and usage, from real SDK spans and OTLP encodings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from spendtrace.errors import ConfigError
from spendtrace.schema import UNATTRIBUTED, Span
from spendtrace.server.otlp import JSON, PROTOBUF, OtlpDecodeError, convert, decode_body, load_rules


def _record(build: Any, service: str | None = "shop") -> Any:
    """Run ``build(tracer)`` under a real SDK tracer; return the OTLP ExportTraceServiceRequest of its spans."""
    memory = InMemorySpanExporter()
    attrs = {"service.name": service} if service else {}
    provider = TracerProvider(resource=Resource(attrs))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    build(provider.get_tracer("test"))
    provider.shutdown()
    return encode_spans(memory.get_finished_spans())


def _by_name(spans: list[Span]) -> dict[str, Span]:
    return {s.operation or "": s for s in spans}


def test_ids_timing_and_inherited_attribution() -> None:
    """Trace id becomes the request id, ids and timing are kept, and children inherit feature, tenant, endpoint."""

    def build(tracer: Any) -> None:
        root_attrs = {"http.route": "/recommend", "enduser.id": "acme"}
        with (
            tracer.start_as_current_span("GET /recommend", attributes=root_attrs),
            tracer.start_as_current_span("recommend", attributes={"spendtrace.feature": "ai_recs"}),
            tracer.start_as_current_span("chat gpt-4o-mini") as leaf,
        ):
            leaf.set_status(Status(StatusCode.ERROR))
            leaf.set_attribute("error.type", "RateLimitError")

    request = _record(build)
    raw = {s.name: s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    out = convert(request)
    assert out.rejected == 0
    spans = _by_name(out.spans)
    root, mid, leaf = spans["GET /recommend"], spans["recommend"], spans["chat gpt-4o-mini"]
    assert root.request_id == raw["GET /recommend"].trace_id.hex() == leaf.request_id
    assert root.parent_id is None and mid.parent_id == root.span_id and leaf.parent_id == mid.span_id
    assert leaf.span_id == raw["chat gpt-4o-mini"].span_id.hex()
    r = raw["chat gpt-4o-mini"]
    assert (leaf.start_ns, leaf.duration_ns) == (r.start_time_unix_nano, r.end_time_unix_nano - r.start_time_unix_nano)
    assert root.feature == "shop"  # no feature attribute on the root: the service name
    assert (mid.feature, leaf.feature) == ("ai_recs", "ai_recs")
    assert {s.user_id for s in out.spans} == {"acme"} and {s.endpoint for s in out.spans} == {"/recommend"}
    assert leaf.path == ("ai_recs",) and mid.path == ("ai_recs",)
    assert (leaf.error, leaf.error_type, mid.error) == (True, "RateLimitError", False)


def test_a_feature_below_another_keeps_both_on_its_path() -> None:
    """Nested features give the fully-loaded path root first, as the SDK's nested scopes do."""

    def build(tracer: Any) -> None:
        with (
            tracer.start_as_current_span("api", attributes={"spendtrace.feature": "api"}),
            tracer.start_as_current_span("search", attributes={"spendtrace.feature": "search"}),
            tracer.start_as_current_span("query"),
        ):
            pass

    spans = _by_name(convert(_record(build)).spans)
    assert spans["api"].path == ("api",)
    assert spans["search"].path == ("api", "search") and spans["query"].path == ("api", "search")
    assert spans["query"].feature == "search"


def test_genai_cached_tokens_are_not_counted_twice() -> None:
    """input_tokens includes cache reads and writes (the conventions): the item's input is what remains."""

    def build(tracer: Any) -> None:
        with tracer.start_as_current_span("chat", attributes={
            "gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5",
            "gen_ai.response.model": "claude-sonnet-4-5-20250929", "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 50, "gen_ai.usage.cache_read.input_tokens": 600,
            "gen_ai.usage.cache_creation.input_tokens": 100}):  # fmt: skip
            pass

    (span,) = convert(_record(build)).spans
    (item,) = span.usage
    tokens = (item.input_tokens, item.cache_read_tokens, item.cache_write_tokens, item.output_tokens)
    assert tokens == (300, 600, 100, 50)
    assert (item.provider, item.model, item.key, item.service) == (
        "anthropic", "claude-sonnet-4-5-20250929", "anthropic:claude-sonnet-4-5-20250929", "anthropic")  # fmt: skip


def test_legacy_gen_ai_system_and_bedrock_profiles() -> None:
    """gen_ai.system (before gen_ai.provider.name) names the provider; a Bedrock profile keeps its geography."""

    def build(tracer: Any) -> None:
        with tracer.start_as_current_span("chat", attributes={
            "gen_ai.system": "aws.bedrock", "gen_ai.request.model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}):  # fmt: skip
            pass

    (item,) = convert(_record(build)).spans[0].usage
    assert (item.provider, item.region) == ("bedrock", "us")
    assert item.key == "bedrock:us.anthropic.claude-3-5-haiku-20241022-v1:0"
    assert (item.input_tokens, item.output_tokens) == (10, 5)


def test_unknown_aws_operations_are_requests_that_stay_unpriced() -> None:
    """An AWS call with no usage mapping is one request under its service and operation, never dropped."""

    def build(tracer: Any) -> None:
        attrs = {"rpc.system": "aws-api", "rpc.service": "Kinesis", "rpc.method": "PutRecord"}
        with tracer.start_as_current_span("Kinesis.PutRecord", attributes=attrs):
            pass

    (item,) = convert(_record(build)).spans[0].usage
    assert (item.key, item.service, item.count) == ("aws_kinesis_putrecord", "kinesis", 1.0)
    from spendtrace.server.pricing import PriceBook

    assert PriceBook.default().price(item, 0)[0] is None  # unpriced, not $0


def test_the_operation_tables_match_the_sdk_instrumentation() -> None:
    """The S3 and SQS operations read from OTel spans are the ones the SDK's boto3 integration bills."""
    from spendtrace.sdk.instrument import _botocore
    from spendtrace.server.otlp._usage import S3_OPERATIONS

    b = _botocore
    sdk = {**dict.fromkeys(b._S3_GET, "s3_get"), **dict.fromkeys(b._S3_PUT, "s3_put"),
           **dict.fromkeys(b._S3_LIST, "s3_list"), **dict.fromkeys(b._S3_DELETE, "s3_delete")}  # fmt: skip
    assert sdk == S3_OPERATIONS


def test_rule_file_maps_other_attributes(tmp_path: Path) -> None:
    """A TOML rule file adds attributes to the lists and maps matching spans to a feature and tenant."""
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        'tenant = ["app.customer"]\n'
        "[[rule]]\n"
        'match = { "rpc.service" = "DynamoDB" }\n'
        'feature = "catalog"\n'
        "[[rule]]\n"
        'match = { "gen_ai.operation.name" = "*" }\n'
        'feature_from = "gen_ai.request.model"\n'
    )
    rules = load_rules(rules_file)

    def build(tracer: Any) -> None:
        with tracer.start_as_current_span("root", attributes={"app.customer": "globex", "enduser.id": "ignored"}):
            with tracer.start_as_current_span("db", attributes={"rpc.service": "DynamoDB"}):
                pass
            with tracer.start_as_current_span("llm", attributes={"gen_ai.operation.name": "chat",
                                                                 "gen_ai.request.model": "gpt-4o"}):  # fmt: skip
                pass

    spans = _by_name(convert(_record(build), rules).spans)
    assert (spans["db"].feature, spans["llm"].feature, spans["root"].feature) == ("catalog", "gpt-4o", "shop")
    assert {s.user_id for s in spans.values()} == {"globex"}  # the file's list replaced the default one


@pytest.mark.parametrize(
    ("text", "needle"),
    [("feature = 3", "attribute name"), ("[[rule]]\nfeature = 'x'", "match"), ("nope = 1", "unknown keys"),
     ("[[rule]]\nmatch = {a = 'b'}", "sets nothing"), ("feature = [", "not valid TOML")],
)  # fmt: skip
def test_bad_rule_files_are_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    """A rule file that cannot mean anything is refused with the file and the problem named."""
    f = tmp_path / "r.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_rules(f)


def test_json_bodies_decode_like_protobuf_and_unplaceable_spans_are_rejected() -> None:
    """OTLP/JSON (hex ids) decodes to the same spans; a span without ids is counted as rejected, not lost."""
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
           "scopeSpans": [{"spans": [
               {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "ok",
                "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000500000000",
                "attributes": [{"key": "enduser.id", "value": {"stringValue": "t1"}}]},
               {"traceId": "", "spanId": "b7ad6b7169203332", "name": "no trace"}]}]}]}  # fmt: skip
    out = convert(decode_body(json.dumps(doc).encode(), JSON))
    assert out.rejected == 1 and "trace_id" in out.reasons[0]
    (span,) = out.spans
    assert (span.request_id, span.span_id, span.feature, span.user_id) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "svc", "t1")  # fmt: skip
    assert span.duration_ns == 500_000_000


def test_a_span_with_no_service_and_no_feature_is_unattributed() -> None:
    """No feature attribute, rule, ancestor or service name: the feature is __unattributed__, never empty."""
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "x"}]}]}]}  # fmt: skip
    (span,) = convert(decode_body(json.dumps(doc).encode(), JSON)).spans
    assert span.feature == UNATTRIBUTED and span.path == (UNATTRIBUTED,)


@pytest.mark.parametrize(
    ("body", "kind", "needle"),
    [(b"\xff\xff\xff", PROTOBUF, "protobuf"), (b"{not json", JSON, "JSON"), (b"[1]", JSON, "object"),
     (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', JSON, "not hex"),
     (b'{"resourceSpans": 5}', JSON, "OTLP/JSON")],
)  # fmt: skip
def test_malformed_bodies_raise_a_reason(body: bytes, kind: str, needle: str) -> None:
    """Bodies that are not trace exports raise OtlpDecodeError naming what is wrong."""
    with pytest.raises(OtlpDecodeError, match=needle):
        decode_body(body, kind)


def test_extreme_attribute_values_still_make_valid_spans() -> None:
    """Oversized names, odd types and negative or NaN tokens give spans the workers' strict decoder accepts."""
    from spendtrace.schema import decode_span, encode_span

    huge = "x" * 10_000

    def build(tracer: Any) -> None:
        attrs = {"spendtrace.feature": huge, "enduser.id": huge, "http.route": huge, "error.type": huge,
                 "gen_ai.provider.name": huge, "gen_ai.request.model": huge, "gen_ai.usage.input_tokens": -5,
                 "gen_ai.usage.output_tokens": float("nan"), "gen_ai.usage.cache_read.input_tokens": "12",
                 "openai.response.service_tier": huge}  # fmt: skip
        with tracer.start_as_current_span(huge, attributes=attrs) as span:
            span.set_status(Status(StatusCode.ERROR))
        aws = {"rpc.system": "aws-api", "rpc.service": huge, "rpc.method": huge, "spendtrace.feature": 42}
        with tracer.start_as_current_span("aws", attributes=aws):
            pass
        ddb = {"rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": "Query",
               "aws.dynamodb.consumed_capacity": ("not json", '{"CapacityUnits": 2.5}', "[1]")}  # fmt: skip
        with tracer.start_as_current_span("ddb", attributes=ddb):
            pass

    spans = _by_name(convert(_record(build)).spans)
    for span in spans.values():
        assert decode_span(encode_span(span)) == span
    (llm,) = spans["x" * 512].usage
    assert (llm.input_tokens, llm.output_tokens, llm.cache_read_tokens) == (0, 0, 12)
    assert spans["aws"].feature == "42" and spans["aws"].usage[0].service == "x" * 64
    assert [(u.key, u.count) for u in spans["ddb"].usage] == [("dynamodb_read", 2.5)]


def test_the_json_encoding_of_a_real_export_converts_like_its_protobuf() -> None:
    """A real SDK export (links, events, error status) as OTLP/JSON (hex ids, camelCase) gives the same spans."""
    import base64

    from google.protobuf import json_format

    def build(tracer: Any) -> None:
        with tracer.start_as_current_span("root", attributes={"enduser.id": "acme", "spendtrace.feature": "f"}) as r:
            r.add_event("exception", {"exception.type": "KeyError"})
            r.set_status(Status(StatusCode.ERROR))
            with tracer.start_as_current_span("child", links=[], attributes={"gen_ai.system": "openai",
                     "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 7}):  # fmt: skip
                pass

    request = _record(build)
    doc = json_format.MessageToDict(request)  # protobuf's JSON: base64 ids; OTLP/JSON wants hex
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    from_json = convert(decode_body(json.dumps(doc).encode(), JSON)).spans
    from_proto = convert(decode_body(request.SerializeToString(), PROTOBUF)).spans
    assert from_json == from_proto and len(from_json) == 2
    root = _by_name(from_json)["root"]
    assert (root.error, root.error_type, root.user_id) == (True, "KeyError", "acme")


def test_a_span_whose_usage_reading_fails_unforeseen_is_refused_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever escapes the usage rules refuses that span with the reason and logs once; the others convert."""
    from spendtrace.server.otlp import _convert

    real = _convert.usage_items

    def failing(attrs: Any, failed: bool, tokens: bool | None = None) -> Any:
        if attrs.get("rpc.method") == "Boom":
            raise RuntimeError("no rule for this")
        return real(attrs, failed, tokens)

    def build(tracer: Any) -> None:
        with tracer.start_as_current_span("root", attributes={"spendtrace.feature": "f"}):
            for method in ("Boom", "GetItem", "Boom"):
                aws = {"rpc.system": "aws-api", "rpc.service": "DynamoDB", "rpc.method": method}
                with tracer.start_as_current_span(method, attributes=aws):
                    pass

    monkeypatch.setattr(_convert, "usage_items", failing)
    with caplog.at_level("WARNING", logger=_convert.__name__):
        out = convert(_record(build))
    assert sorted(s.operation or "" for s in out.spans) == ["GetItem", "root"]
    assert out.rejected == 2
    assert out.reasons == ["usage attributes could not be read (RuntimeError: no rule for this)"]
    assert [r.getMessage() for r in caplog.records].count(f"refused an OTLP span: {out.reasons[0]}") == 1
