"""auto_instrument() on real boto3 clients: DynamoDB, S3, SQS, Lambda and Bedrock runtime.

Non-streamed calls are answered by botocore's ``Stubber``. Stubber cannot return an event stream,
so the streamed Bedrock calls are answered one level lower, at botocore's ``before-send`` event,
with real encoded event-stream bytes that botocore's own parser decodes.
"""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

import spendtrace
from spendtrace.schema import UNATTRIBUTED, Span, UsageItem
from spendtrace.sdk.context import suppress_instrumentation
from spendtrace.sdk.instrument import auto_instrument, error_count, model_key, uninstrument

_CREDS = {"region_name": "us-east-1", "aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret"}


#: key (``<provider>:<model id>``, lower case), service, provider and raw model id (as the API returned it)
#: of the items these tests expect, by the model-family name older SDKs keyed them with.
_RAW: dict[str, dict[str, Any]] = {
    "bedrock_claude_3_5_haiku": {
        "key": "bedrock:us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "service": "bedrock",
        "provider": "bedrock",
        "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "region": "us",
    },
    "bedrock_claude_haiku_4_5": {
        "key": "bedrock:global.anthropic.claude-haiku-4-5-20251001-v1:0",
        "service": "bedrock",
        "provider": "bedrock",
        "model": "global.anthropic.claude-haiku-4-5-20251001-v1:0",
        "region": "global",
    },
    "bedrock_claude_sonnet_4_5": {
        "key": "bedrock:anthropic.claude-sonnet-4-5-20250929-v1:0",
        "service": "bedrock",
        "provider": "bedrock",
        "model": "anthropic.claude-sonnet-4-5-20250929-v1:0",
    },
    "bedrock_cohere_embed_english_v3": {
        "key": "bedrock:cohere.embed-english-v3",
        "service": "bedrock",
        "provider": "bedrock",
        "model": "cohere.embed-english-v3",
    },
    "bedrock_llama3_1_8b": {
        "key": "bedrock:meta.llama3-1-8b-instruct-v1:0",
        "service": "bedrock",
        "provider": "bedrock",
        "model": "meta.llama3-1-8b-instruct-v1:0",
    },
    "bedrock_nova_lite": {
        "key": "bedrock:amazon.nova-lite-v1:0",
        "service": "bedrock",
        "provider": "bedrock",
        "model": "amazon.nova-lite-v1:0",
    },
}


def _client(service: str) -> Any:
    return boto3.client(service, **_CREDS)  # type: ignore[call-overload]


@pytest.fixture
def instrumented() -> Iterator[None]:
    """boto3 instrumented for the test, removed afterwards."""
    assert "boto3" in auto_instrument(only=["boto3"])
    try:
        yield
    finally:
        uninstrument()


def _capture_params(client: Any) -> list[dict[str, Any]]:
    """The parameters each call is serialised with, seen after our handlers ran.

    Stubber checks ``expected_params`` before our ``before-parameter-build`` handler runs, so it
    cannot see what we add; a handler on the less specific event name runs after ours.
    """
    sent: list[dict[str, Any]] = []
    client.meta.events.register("before-parameter-build", lambda params, **_: sent.append(dict(params)))
    return sent


def _items(spans: list[Span]) -> list[UsageItem]:
    return [u for s in spans for u in s.usage]


# --------------------------------------------------------------------------- DynamoDB


def test_dynamodb_get_item_records_consumed_capacity_and_hides_the_injected_field(
    instrumented: None, spans: list[Span]
) -> None:
    """GetItem asks for ReturnConsumedCapacity, records the units as dynamodb_read, and returns the caller's shape."""
    ddb = _client("dynamodb")
    sent = _capture_params(ddb)
    with Stubber(ddb) as stub:
        stub.add_response(
            "get_item", {"Item": {"pk": {"S": "a"}}, "ConsumedCapacity": {"TableName": "t", "CapacityUnits": 0.5}}
        )

        @spendtrace.cost_track(feature="search")
        def lookup() -> dict[str, Any]:
            return ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})  # type: ignore[no-any-return]

        response = lookup()
    assert sent == [{"TableName": "t", "Key": {"pk": {"S": "a"}}, "ReturnConsumedCapacity": "TOTAL"}]
    assert "ConsumedCapacity" not in response
    assert response["Item"] == {"pk": {"S": "a"}}
    assert [(s.feature, s.usage) for s in spans] == [
        ("search", (UsageItem(key="dynamodb_read", service="dynamodb", count=0.5),))
    ]


def test_dynamodb_writes_sum_consumed_capacity_and_keep_it_when_the_caller_asked(
    instrumented: None, spans: list[Span]
) -> None:
    """Write operations record dynamodb_write units; a caller who asked for ConsumedCapacity still gets it."""
    ddb = _client("dynamodb")
    with Stubber(ddb) as stub:
        stub.add_response("put_item", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 3.0}})
        stub.add_response(
            "batch_write_item",
            {
                "UnprocessedItems": {},
                "ConsumedCapacity": [
                    {"TableName": "a", "CapacityUnits": 2.0},
                    {"TableName": "b", "CapacityUnits": 1.0},
                ],
            },
        )
        stub.add_response(
            "transact_write_items", {"ConsumedCapacity": [{"TableName": "t", "CapacityUnits": 4.0}]},
            expected_params={"TransactItems": ANY, "ReturnConsumedCapacity": "INDEXES"},
        )  # fmt: skip
        with spendtrace.track(feature="ingest"):
            ddb.put_item(TableName="t", Item={"pk": {"S": "x"}})
            ddb.batch_write_item(
                RequestItems={
                    "a": [{"PutRequest": {"Item": {"pk": {"S": "1"}}}}],
                    "b": [{"DeleteRequest": {"Key": {"pk": {"S": "2"}}}}],
                }
            )
            kept = ddb.transact_write_items(
                TransactItems=[{"Put": {"TableName": "t", "Item": {"pk": {"S": "y"}}}}],
                ReturnConsumedCapacity="INDEXES",
            )
    assert kept["ConsumedCapacity"] == [{"TableName": "t", "CapacityUnits": 4.0}]
    assert [(u.key, u.count) for u in _items(spans)] == [
        ("dynamodb_write", 3.0),
        ("dynamodb_write", 3.0),
        ("dynamodb_write", 4.0),
    ]


def test_dynamodb_estimates_units_when_the_caller_opted_out_of_consumed_capacity(
    instrumented: None, spans: list[Span]
) -> None:
    """With ReturnConsumedCapacity=NONE the units are estimated from item sizes and counts (documented rules)."""
    ddb = _client("dynamodb")
    big = "x" * 5000  # a 5 KB item: two 4 KB read units, five 1 KB write units
    with Stubber(ddb) as stub:
        stub.add_response("get_item", {"Item": {"pk": {"S": "a"}, "blob": {"S": big}}})
        stub.add_response("get_item", {"Item": {"pk": {"S": "a"}, "blob": {"S": big}}})
        stub.add_response("get_item", {})
        stub.add_response(
            "query", {"Items": [{"pk": {"S": "a"}, "v": {"S": "y" * 1000}}] * 2, "Count": 2, "ScannedCount": 10}
        )
        stub.add_response("put_item", {})
        stub.add_response("update_item", {})
        stub.add_response("transact_get_items", {"Responses": [{"Item": {"pk": {"S": "a"}}}, {}]})
        stub.add_response(
            "batch_get_item",
            {"Responses": {"t": [{"pk": {"S": "a"}}]}, "UnprocessedKeys": {"t": {"Keys": [{"pk": {"S": "c"}}]}}},
        )
        with spendtrace.track(feature="estimate"):
            none = {"ReturnConsumedCapacity": "NONE"}
            ddb.get_item(TableName="t", Key={"pk": {"S": "a"}}, **none)  # eventually consistent: half
            ddb.get_item(TableName="t", Key={"pk": {"S": "a"}}, ConsistentRead=True, **none)
            ddb.get_item(TableName="t", Key={"pk": {"S": "missing"}}, **none)  # a miss still costs a read
            ddb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "a"}},
                      **none)  # fmt: skip
            ddb.put_item(TableName="t", Item={"pk": {"S": "a"}, "blob": {"S": big}}, **none)
            ddb.update_item(TableName="t", Key={"pk": {"S": "a"}}, UpdateExpression="SET v = :v",
                            ExpressionAttributeValues={":v": {"N": "1"}}, **none)  # fmt: skip
            ddb.transact_get_items(
                TransactItems=[{"Get": {"TableName": "t", "Key": {"pk": {"S": k}}}} for k in ("a", "b")], **none
            )
            # 3 keys asked: 1 found (0.5), 1 missing (0.5), 1 unprocessed (not billed, retried by the caller)
            ddb.batch_get_item(RequestItems={"t": {"Keys": [{"pk": {"S": k}} for k in "abc"]}}, **none)
    # query: ~1006 bytes per item x 10 scanned = ~10 KB -> 3 units, eventually consistent -> 1.5
    assert [(u.key, u.count) for u in _items(spans)] == [
        ("dynamodb_read", 1.0),
        ("dynamodb_read", 2.0),
        ("dynamodb_read", 0.5),
        ("dynamodb_read", 1.5),
        ("dynamodb_write", 5.0),
        ("dynamodb_write", 1.0),
        ("dynamodb_read", 4.0),
        ("dynamodb_read", 1.0),
    ]


def test_dynamodb_table_resource_is_covered_and_sizes_its_python_values(instrumented: None, spans: list[Span]) -> None:
    """The boto3 Table resource goes through the same client events; estimates read its (de)serialised items."""
    table = boto3.resource("dynamodb", **_CREDS).Table("t")  # type: ignore[call-overload]
    with Stubber(table.meta.client) as stub:
        stub.add_response("get_item", {"Item": {"pk": {"S": "a"}, "doc": {"S": "d" * 9000}}})
        stub.add_response("put_item", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 2.0}})
        with spendtrace.track(feature="resource"):
            item = table.get_item(Key={"pk": "a"}, ConsistentRead=True, ReturnConsumedCapacity="NONE")["Item"]
            table.put_item(Item={"pk": "b", "n": 5, "tags": {"x", "y"}})
    assert item["doc"] == "d" * 9000  # the resource layer still deserialised the response
    assert [(u.key, u.count) for u in _items(spans)] == [("dynamodb_read", 3.0), ("dynamodb_write", 2.0)]


def test_calls_outside_any_scope_are_unattributed_and_failed_calls_record_nothing(
    instrumented: None, spans: list[Span]
) -> None:
    """A call outside any scope becomes an __unattributed__ span; an error response records no usage."""
    ddb = _client("dynamodb")
    with Stubber(ddb) as stub:
        stub.add_response("delete_item", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}})
        stub.add_client_error("get_item", service_error_code="ResourceNotFoundException", http_status_code=400)
        ddb.delete_item(TableName="t", Key={"pk": {"S": "a"}})
        with pytest.raises(ddb.exceptions.ResourceNotFoundException):
            ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert [(s.feature, s.usage) for s in spans] == [
        (UNATTRIBUTED, (UsageItem(key="dynamodb_write", service="dynamodb", count=1.0),))
    ]


# --------------------------------------------------------------------------- S3, SQS, Lambda


def test_s3_operations_record_request_class_and_bytes(instrumented: None, spans: list[Span]) -> None:
    """S3 GET/HEAD → s3_get (GET with ContentLength bytes), PUT/COPY → s3_put (body bytes), LIST, DELETE."""
    s3 = _client("s3")
    payload = b"z" * 2048
    with Stubber(s3) as stub:
        stub.add_response(
            "get_object", {"Body": StreamingBody(io.BytesIO(payload), len(payload)), "ContentLength": len(payload)}
        )
        stub.add_response("head_object", {"ContentLength": 10})
        stub.add_response("put_object", {"ETag": '"e"'})
        stub.add_response("put_object", {"ETag": '"e"'})
        stub.add_response("copy_object", {})
        stub.add_response("list_objects_v2", {"KeyCount": 0})
        stub.add_response("delete_object", {})
        with spendtrace.track(feature="files"):
            assert s3.get_object(Bucket="b", Key="k")["Body"].read() == payload
            s3.head_object(Bucket="b", Key="k")
            s3.put_object(Bucket="b", Key="k", Body=b"abc")
            s3.put_object(Bucket="b", Key="k", Body=io.BytesIO(b"0123456789"))
            s3.copy_object(Bucket="b", Key="k2", CopySource="b/k")
            s3.list_objects_v2(Bucket="b")
            s3.delete_object(Bucket="b", Key="k")
    assert [(u.key, u.service, u.count, u.bytes) for u in _items(spans)] == [
        ("s3_get", "s3", 1.0, 2048),
        ("s3_get", "s3", 1.0, 0),
        ("s3_put", "s3", 1.0, 3),
        ("s3_put", "s3", 1.0, 10),
        ("s3_put", "s3", 1.0, 0),
        ("s3_list", "s3", 1.0, 0),
        ("s3_delete", "s3", 1.0, 0),
    ]


def test_sqs_counts_billed_requests_per_64kb_and_lambda_invokes(instrumented: None, spans: list[Span]) -> None:
    """SQS records one request per started 64 KB of payload (a batch is one request); Lambda Invoke one request."""
    sqs = _client("sqs")
    lam = _client("lambda")
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
    with Stubber(sqs) as sstub, Stubber(lam) as lstub:
        sstub.add_response("send_message", {"MessageId": "1"})
        sstub.add_response("send_message", {"MessageId": "2"})
        sstub.add_response("send_message_batch", {"Successful": [], "Failed": []})
        sstub.add_response("receive_message", {"Messages": [{"MessageId": "1", "Body": "hello"}]})
        sstub.add_response("receive_message", {})
        sstub.add_response("delete_message_batch", {"Successful": [], "Failed": []})
        lstub.add_response("invoke", {"StatusCode": 200})
        with spendtrace.track(feature="queue"):
            sqs.send_message(QueueUrl=url, MessageBody="hi")
            sqs.send_message(QueueUrl=url, MessageBody="x" * 70_000)  # two 64 KB chunks
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(10)])
            sqs.receive_message(QueueUrl=url)
            sqs.receive_message(QueueUrl=url)  # empty receives are billed too
            sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": "1", "ReceiptHandle": "r"}])
            lam.invoke(FunctionName="f")
    assert [(u.key, u.service, u.count, u.bytes) for u in _items(spans)] == [
        ("sqs_send", "sqs", 1.0, 2),
        ("sqs_send", "sqs", 2.0, 70_000),
        ("sqs_send", "sqs", 1.0, 10),
        ("sqs_receive", "sqs", 1.0, 5),
        ("sqs_receive", "sqs", 1.0, 0),
        ("sqs_delete", "sqs", 1.0, 0),
        ("aws_lambda_request", "lambda", 1.0, 0),
    ]


# --------------------------------------------------------------------------- Bedrock, non-streamed


def _json_body(doc: dict[str, Any]) -> StreamingBody:
    data = json.dumps(doc).encode()
    return StreamingBody(io.BytesIO(data), len(data))


def test_bedrock_invoke_model_reads_anthropic_usage_with_cache_split_and_leaves_the_body_readable(
    instrumented: None, spans: list[Span]
) -> None:
    """InvokeModel on Claude records tokens with 5-minute and 1-hour cache writes apart; the body stays readable."""
    brt = _client("bedrock-runtime")
    body = {
        "type": "message",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {
            "input_tokens": 12,
            "output_tokens": 30,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 500,
            "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
        },
    }
    with Stubber(brt) as stub:
        stub.add_response("invoke_model", {"body": _json_body(body), "contentType": "application/json"})
        with spendtrace.track(feature="chat"):
            response = brt.invoke_model(modelId="us.anthropic.claude-3-5-haiku-20241022-v1:0", body=b"{}")
        assert json.loads(response["body"].read()) == body
    assert _items(spans) == [
        UsageItem(**_RAW["bedrock_claude_3_5_haiku"], count=1.0, input_tokens=12, output_tokens=30,
                  cache_read_tokens=1000, cache_write_tokens=200, cache_write_1h_tokens=300)
    ]  # fmt: skip


def test_bedrock_invoke_model_uses_token_headers_for_other_models(instrumented: None, spans: list[Span]) -> None:
    """Models without usage in the body are counted from the x-amzn-bedrock-*-token-count headers."""
    brt = _client("bedrock-runtime")
    headers = {"x-amzn-bedrock-input-token-count": "40", "x-amzn-bedrock-output-token-count": "7"}
    with Stubber(brt) as stub:
        stub.add_response(
            "invoke_model",
            {"body": _json_body({"embedding": [0.1]}), "contentType": "application/json",
             "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": headers}},
        )  # fmt: skip
        with spendtrace.track(feature="embed"):
            brt.invoke_model(modelId="cohere.embed-english-v3", body=b"{}")
    assert _items(spans) == [
        UsageItem(**_RAW["bedrock_cohere_embed_english_v3"], count=1.0, input_tokens=40, output_tokens=7)
    ]


def test_bedrock_converse_records_usage_and_cache_details(instrumented: None, spans: list[Span]) -> None:
    """Converse usage is copied as is (cache counts are outside inputTokens); a 1h cacheDetails entry is split out."""
    brt = _client("bedrock-runtime")
    with Stubber(brt) as stub:
        stub.add_response(
            "converse",
            {
                "output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 20, "outputTokens": 5, "totalTokens": 425, "cacheReadInputTokens": 100,
                          "cacheWriteInputTokens": 300, "cacheDetails": [{"ttl": "1h", "inputTokens": 120},
                                                                         {"ttl": "5m", "inputTokens": 180}]},
                "metrics": {"latencyMs": 10},
            },
        )  # fmt: skip
        with spendtrace.track(feature="chat"):
            brt.converse(modelId="amazon.nova-lite-v1:0", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert _items(spans) == [
        UsageItem(**_RAW["bedrock_nova_lite"], count=1.0, input_tokens=20, output_tokens=5,
                  cache_read_tokens=100, cache_write_tokens=180, cache_write_1h_tokens=120)
    ]  # fmt: skip


def test_unreadable_bedrock_body_is_counted_not_raised(instrumented: None, spans: list[Span]) -> None:
    """A body we cannot parse records nothing and counts an error; the caller's call and body are untouched."""
    brt = _client("bedrock-runtime")
    before = error_count("boto3")
    with Stubber(brt) as stub:
        data = b"{not json"
        stub.add_response("invoke_model", {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "x"})
        with spendtrace.track(feature="chat"):
            response = brt.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0", body=b"{}")
        assert response["body"].read() == data
    assert error_count("boto3") == before + 1
    assert _items(spans) == []


# --------------------------------------------------------------------------- Bedrock, streamed


def _frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream message (prelude, string headers, JSON payload, CRCs), as Bedrock sends it."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    head = b"".join(
        len(k).to_bytes(1, "big") + k.encode() + b"\x07" + len(v).to_bytes(2, "big") + v.encode()
        for k, v in headers.items()
    )
    body = json.dumps(payload).encode()
    prelude = (12 + len(head) + len(body) + 4).to_bytes(4, "big") + len(head).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    message = prelude + head + body
    return message + zlib.crc32(message).to_bytes(4, "big")


class _RawStream:
    """The raw HTTP body botocore hands to its event-stream parser."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        for i in range(0, len(self._data), 37):  # odd-sized chunks: frames split across reads
            yield self._data[i : i + 37]

    def read(self, *_: Any) -> bytes:
        return self._data

    def close(self) -> None:
        pass


def _answer_with(client: Any, operation: str, frames: list[bytes]) -> None:
    def send(request: Any, **_: Any) -> AWSResponse:
        headers = {"content-type": "application/vnd.amazon.eventstream"}
        return AWSResponse(request.url, 200, headers, _RawStream(b"".join(frames)))

    client.meta.events.register(f"before-send.bedrock-runtime.{operation}", send)


def _chunk(doc: dict[str, Any]) -> bytes:
    return _frame("chunk", {"bytes": base64.b64encode(json.dumps(doc).encode()).decode()})


def test_invoke_model_with_response_stream_records_when_read_to_the_span_that_called(
    instrumented: None, spans: list[Span]
) -> None:
    """Claude stream usage (message_start + message_delta) is recorded once read, to the span that made the call."""
    brt = _client("bedrock-runtime")
    _answer_with(brt, "InvokeModelWithResponseStream", [
        _chunk({"type": "message_start", "message": {"model": "claude", "usage": {
            "input_tokens": 9, "output_tokens": 1, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 0}}}),
        _chunk({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "usage?"}}),
        _chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}}),
        _chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 9, "outputTokenCount": 42, "invocationLatency": 5, "firstByteLatency": 1}}),
    ])  # fmt: skip
    with spendtrace.track(feature="chat"):
        response = brt.invoke_model_with_response_stream(modelId="anthropic.claude-sonnet-4-5-20250929-v1:0", body="{}")
        assert spans == []  # nothing yet: the stream has not been read
    events = list(response["body"])  # read after the scope closed
    assert len(events) == 4
    assert [s.feature for s in spans] == ["chat", "chat"]  # the scope's span, then the late usage as its child
    late = spans[1]
    assert late.parent_id == spans[0].span_id and late.request_id == spans[0].request_id
    assert late.usage == (
        UsageItem(**_RAW["bedrock_claude_sonnet_4_5"], count=1.0, input_tokens=9, output_tokens=42,
                  cache_read_tokens=50),
    )  # fmt: skip


def test_invoke_model_stream_falls_back_to_invocation_metrics(instrumented: None, spans: list[Span]) -> None:
    """Non-Anthropic streams are counted from the last chunk's amazon-bedrock-invocationMetrics."""
    brt = _client("bedrock-runtime")
    _answer_with(brt, "InvokeModelWithResponseStream", [
        _chunk({"generation": "hi", "prompt_token_count": None}),
        _chunk({"generation": "", "stop_reason": "stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 17, "outputTokenCount": 3, "invocationLatency": 5, "firstByteLatency": 1}}),
    ])  # fmt: skip
    with spendtrace.track(feature="llama"):
        for _ in brt.invoke_model_with_response_stream(modelId="meta.llama3-1-8b-instruct-v1:0", body="{}")["body"]:
            pass
    assert _items(spans) == [UsageItem(**_RAW["bedrock_llama3_1_8b"], count=1.0, input_tokens=17, output_tokens=3)]


def test_converse_stream_records_the_metadata_usage(instrumented: None, spans: list[Span]) -> None:
    """ConverseStream records the usage of its metadata event when the stream has been read."""
    brt = _client("bedrock-runtime")
    _answer_with(brt, "ConverseStream", [
        _frame("messageStart", {"role": "assistant"}),
        _frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}}),
        _frame("messageStop", {"stopReason": "end_turn"}),
        _frame("metadata", {"usage": {"inputTokens": 30, "outputTokens": 2, "totalTokens": 32,
                                      "cacheWriteInputTokens": 64}, "metrics": {"latencyMs": 4}}),
    ])  # fmt: skip
    with spendtrace.track(feature="chat"):
        stream = brt.converse_stream(modelId="global.anthropic.claude-haiku-4-5-20251001-v1:0", messages=[])["stream"]
        kinds = [next(iter(event)) for event in stream]
    assert kinds == ["messageStart", "contentBlockDelta", "messageStop", "metadata"]
    assert [(s.feature, s.usage) for s in spans] == [
        ("chat", (UsageItem(**_RAW["bedrock_claude_haiku_4_5"], count=1.0, input_tokens=30,
                            output_tokens=2, cache_write_tokens=64),)),
    ]  # fmt: skip


# --------------------------------------------------------------------------- installation


def test_clients_made_before_instrumenting_are_covered_once_and_uninstrument_removes_all(spans: list[Span]) -> None:
    """A client created before auto_instrument() is instrumented; calling it twice installs nothing twice."""
    ddb = _client("dynamodb")  # exists before auto_instrument()
    try:
        assert auto_instrument(only=["boto3"]) == ["boto3"]
        assert auto_instrument(only=["boto3"]) == ["boto3"]
        later = _client("dynamodb")
        consumed = {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}}
        with Stubber(ddb) as s1, Stubber(later) as s2:
            s1.add_response("put_item", consumed)
            s2.add_response("put_item", consumed)
            with spendtrace.track(feature="f"):
                ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
                later.put_item(TableName="t", Item={"pk": {"S": "a"}})
        assert [u.count for u in _items(spans)] == [1.0, 1.0]
    finally:
        uninstrument()
    spans.clear()
    sent = _capture_params(ddb)
    with Stubber(ddb) as stub:
        stub.add_response("put_item", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}})
        with spendtrace.track(feature="f"):
            ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
    assert sent == [{"TableName": "t", "Item": {"pk": {"S": "a"}}}]  # nothing injected any more
    assert _items(spans) == []


def test_live_clients_of_every_service_are_instrumented_without_errors(spans: list[Span]) -> None:
    """Sessions and clients whose emitters hold operation-specific handlers (S3, SQS) are scanned without error."""
    s3, sqs = _client("s3"), _client("sqs")  # botocore registers e.g. before-parameter-build.s3.PutObject
    before = error_count()
    try:
        assert auto_instrument(only=["boto3"]) == ["boto3"]
        with Stubber(s3) as stub, Stubber(sqs) as qstub:
            stub.add_response("list_objects_v2", {"KeyCount": 0})
            qstub.add_response("delete_message", {})
            with spendtrace.track(feature="scan"):
                s3.list_objects_v2(Bucket="b")
                sqs.delete_message(QueueUrl="https://sqs.us-east-1.amazonaws.com/1/q", ReceiptHandle="r")
    finally:
        uninstrument()
    assert error_count() == before
    assert [u.key for u in _items(spans)] == ["s3_list", "sqs_delete"]


_DEFERRED = """
import json, sys
import spendtrace
from spendtrace.sdk import pipeline as _pipeline
got = []
_pipeline.set_sink(got.append)
active = spendtrace.auto_instrument()
sdks = {"botocore", "boto3", "openai", "anthropic"}
imported = sorted(m for m in sys.modules if m.split(".")[0] in sdks)
import boto3, httpx2, anthropic
from botocore.stub import Stubber
ddb = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
with Stubber(ddb) as stub:
    stub.add_response("put_item", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 2.0}})
    ddb.put_item(TableName="t", Item={"pk": {"S": "a"}})
message = {"id": "m", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [],
           "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 4}}
transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=message))
client = anthropic.Anthropic(api_key="t", http_client=httpx2.Client(transport=transport))
client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[])
print(json.dumps({"active": active, "imported": imported,
                  "usage": [[u.key, u.count, u.input_tokens] for s in got for u in s.usage]}))
"""


def test_auto_instrument_imports_no_sdk_and_instruments_each_on_first_import() -> None:
    """In a fresh process auto_instrument() imports none of the SDKs; each is instrumented when the app imports it."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _DEFERRED], capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["active"] == ["boto3", "openai", "anthropic"]
    assert result["imported"] == []
    assert result["usage"] == [["dynamodb_write", 2.0, 0], ["anthropic:claude-haiku-4-5", 1.0, 3]]


def test_suppressed_calls_record_nothing_and_are_not_altered(instrumented: None, spans: list[Span]) -> None:
    """Inside suppress_instrumentation() (the exporter's own traffic) nothing is recorded or injected."""
    ddb = _client("dynamodb")
    sent = _capture_params(ddb)
    with Stubber(ddb) as stub:
        stub.add_response("get_item", {"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}})
        with spendtrace.track(feature="f"), suppress_instrumentation():
            response = ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert sent == [{"TableName": "t", "Key": {"pk": {"S": "a"}}}]
    assert "ConsumedCapacity" in response  # left as the service sent it
    assert [s.usage for s in spans] == [()]


def test_bedrock_calls_are_keyed_by_the_model_id_as_called() -> None:
    """Inference profiles and ARNs are kept in the key (their price can differ); unknown ids stay visible."""
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    cases = {
        "anthropic.claude-3-haiku-20240307-v1:0": "bedrock:anthropic.claude-3-haiku-20240307-v1:0",
        "us.anthropic.claude-3-5-sonnet-20241022-v2:0": "bedrock:us.anthropic.claude-3-5-sonnet-20241022-v2:0",
        arn: f"bedrock:{arn}",
        "ai21.jamba-1-5-large-v1:0": "bedrock:ai21.jamba-1-5-large-v1:0",
    }
    assert {m: model_key("bedrock", m) for m in cases} == cases
