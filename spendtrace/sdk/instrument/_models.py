"""Model id -> usage key, and the Bedrock profile geography: what the SDK records of an LLM call's model.

The app only records *which* model served a call; the consumers price it (``PriceBook.key_of``: the
provider, the raw model id, the service tier and the call's size, with genai-prices' data). So the
key of an LLM usage item is just its raw id, ``<provider>:<model id>`` (stripped, lower case: the
same string an unpriced item is listed under, ``spendtrace.server.pricing.unpriced_key``, on every
store), and nothing here knows any model. Until issue #14 the key was a model-family name chosen by
hand-written patterns (``openai_gpt4o``, ``bedrock_claude_3_haiku``); spans recorded that way still
price as before (by their model field), and those names stay valid keys for ``add_api_call``.
"""

from __future__ import annotations

import functools
import re

from spendtrace.schema import MAX_KEY_LEN

__all__ = ["KNOWN_PRICE_KEYS", "model_key", "profile_geography", "sanitize"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def sanitize(text: str) -> str:
    """Lower-case ``text`` and turn every run of other characters into one ``_``."""
    return _NON_ALNUM.sub("_", text.lower()).strip("_")


@functools.lru_cache(maxsize=4096)
def model_key(provider: str, model_id: str) -> str:
    """The usage key of a call to ``model_id`` served by ``provider``: ``openai:gpt-4o-2024-08-06``.

    Never raises: an empty id gives ``<provider>_unknown`` (stored as unpriced, never $0). Memoised: a
    cache hit is a third of building the string, on the path of every recorded LLM call.
    """
    model = model_id.strip().lower()
    if not model:
        return f"{provider}_unknown"
    return f"{provider}:{model}"[:MAX_KEY_LEN]


#: Every key auto-instrumentation emits for an AWS service; the price book must price them all
#: (LLM calls are keyed by model id, ``model_key``, and priced from genai-prices on the server side).
KNOWN_PRICE_KEYS: frozenset[str] = frozenset(
    {
        "dynamodb_read",
        "dynamodb_write",
        "s3_get",
        "s3_put",
        "s3_list",
        "s3_delete",
        "sqs_send",
        "sqs_receive",
        "sqs_delete",
        "aws_lambda_request",
    }
)


#: Geographies of cross-region inference profiles (``us.anthropic...``, ``global.anthropic...``).
_GEOGRAPHIES = frozenset({"us", "eu", "apac", "us-gov", "ca", "jp", "au", "in", "global"})


def profile_geography(model_id: str) -> str | None:
    """``us`` for ``us.anthropic.claude-...`` (also inside an inference-profile ARN); None for an in-region id."""
    model = model_id.strip()
    if model.startswith("arn:"):
        model = model.rsplit("/", 1)[-1]
    head, dot, rest = model.partition(".")
    head = head.lower()
    return head if dot and "." in rest and head in _GEOGRAPHIES else None
