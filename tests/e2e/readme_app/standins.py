"""Minimal real stand-ins for what the README's examples leave undefined, imported by the example scripts.

``dynamo`` and ``bedrock`` wrap real boto3 clients answered by botocore's ``Stubber``, so the
calls go through botocore's whole event path and ``auto_instrument()`` sees them exactly as it
would see AWS. They accept the README's literal ``(...)`` argument and make a real call with real
parameters. Clients are created on first use, i.e. after the example called ``auto_instrument()``.
The constants say what each call uses, so the tests can price it independently.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import time
from typing import Any

from spendtrace import add_api_call, cost_track

#: What one ``dynamo.get_item(...)`` consumes, as DynamoDB reports it (read request units).
DDB_READ_UNITS = 4.0
#: The model one ``bedrock.invoke_model(...)`` calls and the tokens its answer reports.
BEDROCK_MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
BEDROCK_PRICE_KEY = "bedrock_claude_3_haiku"
BEDROCK_INPUT_TOKENS = 1200
BEDROCK_OUTPUT_TOKENS = 400
#: Read units one ``search_products`` call records ($0.001 at the default rate).
SEARCH_READS = 8000
#: Tokens one ``embed_documents`` call records.
EMBED_KEY = "bedrock_titan_embed_text_v2"
EMBED_TOKENS = 50_000
#: Write units one ``child_coroutine`` records.
CHILD_WRITES = 4

_CREDS = {"region_name": "us-east-1", "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "example"}
_clients: dict[str, tuple[Any, Any]] = {}


def _stubbed(service: str) -> tuple[Any, Any]:
    """A real boto3 client of ``service`` and its active Stubber, made once."""
    if service not in _clients:
        import boto3
        from botocore.stub import Stubber

        client = boto3.client(service, **_CREDS)  # type: ignore[call-overload]
        stub = Stubber(client)
        stub.activate()
        _clients[service] = (client, stub)
    return _clients[service]


def make_clients() -> None:
    """Create the stubbed clients now (e.g. before ``auto_instrument()``), as apps that build them at import do."""
    _stubbed("dynamodb")
    _stubbed("bedrock-runtime")


class _DynamoDB:
    """``dynamo.get_item(...)``: one real GetItem on a stubbed DynamoDB client."""

    def get_item(self, *_: object, **__: object) -> dict[str, Any]:
        client, stub = _stubbed("dynamodb")
        stub.add_response(
            "get_item",
            {
                "Item": {"pk": {"S": "user"}, "recs": {"S": "a,b,c"}},
                "ConsumedCapacity": {"TableName": "recommendations", "CapacityUnits": DDB_READ_UNITS},
            },
        )
        return dict(client.get_item(TableName="recommendations", Key={"pk": {"S": "user"}}))


class _BedrockRuntime:
    """``bedrock.invoke_model(...)``: one real InvokeModel on a stubbed Bedrock runtime client."""

    def invoke_model(self, *_: object, **__: object) -> dict[str, Any]:
        from botocore.response import StreamingBody

        client, stub = _stubbed("bedrock-runtime")
        body = json.dumps(
            {
                "type": "message",
                "content": [{"type": "text", "text": "try the blue one"}],
                "usage": {"input_tokens": BEDROCK_INPUT_TOKENS, "output_tokens": BEDROCK_OUTPUT_TOKENS},
            }
        ).encode()
        stub.add_response(
            "invoke_model", {"body": StreamingBody(io.BytesIO(body), len(body)), "contentType": "application/json"}
        )
        return dict(client.invoke_model(modelId=BEDROCK_MODEL_ID, body=b'{"messages": []}'))


dynamo = _DynamoDB()
bedrock = _BedrockRuntime()


@cost_track(feature="search")
def search_products(query: str) -> list[str]:
    """The per-customer example's nested call: a search that reads DynamoDB."""
    add_api_call("dynamodb_read", count=SEARCH_READS)
    return [query]


async def embed_documents(*_: object) -> None:
    """The async example's awaited call: an embedding request after a real suspension point."""
    await asyncio.sleep(0)
    add_api_call(EMBED_KEY, input_tokens=EMBED_TOKENS)


async def child_coroutine() -> None:
    """A task's body with no scope of its own: its usage belongs to the scope that created the task."""
    await asyncio.sleep(0)
    add_api_call("dynamodb_write", count=CHILD_WRITES)


def run_as_of(day: str) -> None:
    """Make this process's spans start at noon UTC on ``day`` (the example app 'ran' then).

    Sets the SDK's wall-clock anchor; it holds for the next 4,095 spans (then the SDK re-anchors).
    """
    from spendtrace.sdk import clock as _clock

    noon = dt.datetime.fromisoformat(day).replace(hour=12, tzinfo=dt.UTC)
    _clock.wall_offset = int(noon.timestamp()) * 1_000_000_000 - time.perf_counter_ns()
