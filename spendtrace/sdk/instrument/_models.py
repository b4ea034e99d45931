"""Model id → legacy price key: one table for Bedrock, OpenAI and Anthropic models.

Since issue #14 the consumers price an LLM item by its ``provider`` / ``model`` / ``service_tier``
fields (genai-prices, on the server side), not by this key. The key is still emitted because
consumers from before that change price new producers' items by it during a rolling upgrade, user
overrides may name it, and five Bedrock models genai-prices lacks keep their static row under it
(``spendtrace.server.pricing._book.LOCAL_LLM_KEYS``). It is due to go once those reasons are gone.

The app only records *which* model was used; the consumers price the key with the price
book. Dated and aliased ids (``claude-3-5-haiku-20241022``, ``gpt-4o-2024-08-06``,
``us.anthropic.claude-sonnet-4-5-20250929-v1:0``) collapse to one key per model family
with one price. Ids we do not recognise still get a stable key (``bedrock_<id>``,
``openai_<id>``, ``anthropic_<id>``) so they show up as *unpriced*, never vanish.
"""

from __future__ import annotations

import functools
import re

from spendtrace.schema import MAX_KEY_LEN

__all__ = ["KNOWN_PRICE_KEYS", "price_key_for", "profile_geography", "sanitize"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def sanitize(text: str) -> str:
    """Lower-case ``text`` and turn every run of other characters into one ``_``."""
    return _NON_ALNUM.sub("_", text.lower()).strip("_")


# --- Anthropic (direct API and on Bedrock) ----------------------------------------------

#: Claude families with a price of their own (the key suffix after ``anthropic_`` / ``bedrock_``).
_CLAUDE_FAMILIES = (
    "claude_3_haiku",
    "claude_3_sonnet",
    "claude_3_opus",
    "claude_3_5_haiku",
    "claude_3_5_sonnet",
    "claude_3_7_sonnet",
    "claude_haiku_4_5",
    "claude_sonnet_4",
    "claude_sonnet_4_5",
    "claude_opus_4",
    "claude_opus_4_1",
    "claude_opus_4_5",
)

# A date stamp (claude-3-5-haiku-20241022), "-latest", a Bedrock version (-v1:0, -v2:0) and
# the "-0" of aliases such as claude-sonnet-4-0 carry no price information.
_CLAUDE_SUFFIX = re.compile(r"(-\d{8})?(-latest)?(-v\d+(:\d+)?)?(:\d+k)?$")


def _claude_family(model: str) -> str:
    """``claude-3-5-sonnet-20241022-v2:0`` → ``claude_3_5_sonnet``; ``claude-sonnet-4-0`` → ``claude_sonnet_4``."""
    base = _CLAUDE_SUFFIX.sub("", model)
    if base.endswith("-0") and re.search(r"-\d+-0$", base):
        base = base[:-2]
    return sanitize(base)


# --- Bedrock ----------------------------------------------------------------------------

# Cross-region inference profiles prefix the model id with a geography.
_GEO_PREFIX = re.compile(r"^(us|eu|apac|us-gov|ca|jp|au|global)\.")

#: (pattern on the normalised Bedrock id, price key) for non-Anthropic models; first match wins.
_BEDROCK_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), k)
    for p, k in (
        (r"^amazon\.nova-micro", "bedrock_nova_micro"),
        (r"^amazon\.nova-lite", "bedrock_nova_lite"),
        (r"^amazon\.nova-pro", "bedrock_nova_pro"),
        (r"^amazon\.nova-premier", "bedrock_nova_premier"),
        (r"^amazon\.titan-embed-text-v2", "bedrock_titan_embed_text_v2"),
        (r"^amazon\.titan-embed-text-v1|^amazon\.titan-embed-g1-text", "bedrock_titan_embed_text_v1"),
        (r"^amazon\.titan-embed-image", "bedrock_titan_embed_image"),
        (r"^amazon\.titan-text-lite", "bedrock_titan_text_lite"),
        (r"^amazon\.titan-text-express", "bedrock_titan_text_express"),
        (r"^amazon\.titan-text-premier", "bedrock_titan_text_premier"),
        (r"^meta\.llama3-8b", "bedrock_llama3_8b"),
        (r"^meta\.llama3-70b", "bedrock_llama3_70b"),
        (r"^meta\.llama3-1-8b", "bedrock_llama3_1_8b"),
        (r"^meta\.llama3-1-70b", "bedrock_llama3_1_70b"),
        (r"^meta\.llama3-1-405b", "bedrock_llama3_1_405b"),
        (r"^meta\.llama3-2-1b", "bedrock_llama3_2_1b"),
        (r"^meta\.llama3-2-3b", "bedrock_llama3_2_3b"),
        (r"^meta\.llama3-2-11b", "bedrock_llama3_2_11b"),
        (r"^meta\.llama3-2-90b", "bedrock_llama3_2_90b"),
        (r"^meta\.llama3-3-70b", "bedrock_llama3_3_70b"),
        (r"^meta\.llama4-scout", "bedrock_llama4_scout"),
        (r"^meta\.llama4-maverick", "bedrock_llama4_maverick"),
        (r"^cohere\.embed-english-v3", "bedrock_cohere_embed_english_v3"),
        (r"^cohere\.embed-multilingual-v3", "bedrock_cohere_embed_multilingual_v3"),
        (r"^mistral\.mistral-large", "bedrock_mistral_large"),
        (r"^mistral\.mistral-small", "bedrock_mistral_small"),
    )
)
_BEDROCK_KEYS = frozenset(k for _, k in _BEDROCK_RULES)
_BEDROCK_VERSION = re.compile(r"(-v\d+)?(:\d+(:[0-9a-z]+)?)?$")


def normalise_bedrock_id(model_id: str) -> str:
    """Strip an ARN, an inference-profile geography (``us.``, ``eu.``, ``global.``) and surrounding space."""
    model = model_id.strip().lower()
    if model.startswith("arn:"):
        resource_type, _, model = model.split(":", 5)[-1].partition("/")
        if resource_type not in ("foundation-model", "inference-profile"):
            # application profiles, provisioned and custom models: no public per-token price
            return f"{resource_type}/{model}"
    return _GEO_PREFIX.sub("", model)


def _bedrock_key(model_id: str) -> str:
    model = normalise_bedrock_id(model_id)
    if model.startswith("anthropic.claude"):
        return "bedrock_" + _claude_family(model.removeprefix("anthropic."))
    for pattern, key in _BEDROCK_RULES:
        if pattern.search(model):
            return key
    return "bedrock_" + sanitize(_BEDROCK_VERSION.sub("", model))


# --- OpenAI -----------------------------------------------------------------------------

#: Exact family names (after date stripping) → key, for the names the generic rule gets wrong.
_OPENAI_EXACT = {
    "gpt-4": "openai_gpt4",
    "gpt-4-0613": "openai_gpt4",
    "gpt-4-0314": "openai_gpt4",
    "gpt-4-32k": "openai_gpt4_32k",
    "gpt-4-turbo": "openai_gpt4_turbo",
    "gpt-4-turbo-preview": "openai_gpt4_turbo",
    "gpt-4-1106-preview": "openai_gpt4_turbo",
    "gpt-4-0125-preview": "openai_gpt4_turbo",
    "gpt-4-vision-preview": "openai_gpt4_turbo",
    "o1-preview": "openai_o1",
    "gpt-3.5-turbo-0125": "openai_gpt3_5_turbo",
    "gpt-3.5-turbo-1106": "openai_gpt3_5_turbo",
    "gpt-3.5-turbo-16k": "openai_gpt3_5_turbo",
}
_OPENAI_FAMILIES = (
    "gpt3_5_turbo",
    "gpt4",
    "gpt4_32k",
    "gpt4_turbo",
    "gpt4o",
    "gpt4o_mini",
    "gpt4_1",
    "gpt4_1_mini",
    "gpt4_1_nano",
    "gpt4_5",
    "o1",
    "o1_mini",
    "o1_pro",
    "o3",
    "o3_mini",
    "o3_pro",
    "o4_mini",
    "gpt5",
    "gpt5_mini",
    "gpt5_nano",
    "gpt5_pro",
    "gpt5_1",
    "text_embedding_3_small",
    "text_embedding_3_large",
    "text_embedding_ada_002",
)
# Dated snapshots: -2024-08-06 (current style) or -0613 / -1106 (gpt-4 era); gpt-5-chat-latest is priced as gpt-5.
_OPENAI_DATE = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
_GPT_VERSION = re.compile(r"^gpt-(\d+(?:\.\d+)?)")


def _openai_key(model_id: str) -> str:
    model = model_id.strip().lower()
    prefix = ""
    if model.startswith("ft:"):  # ft:gpt-4o-mini-2024-07-18:org::id → fine-tuned rates of its own
        model, prefix = model[3:].split(":", 1)[0], "ft_"
    exact = _OPENAI_EXACT.get(model)
    if exact is not None:
        return exact.replace("openai_", "openai_" + prefix, 1)
    base = _OPENAI_DATE.sub("", model)
    if base.startswith("gpt-") and base.endswith("-chat-latest"):
        base = base.removesuffix("-chat-latest")
    exact = _OPENAI_EXACT.get(base)
    if exact is not None:
        return exact.replace("openai_", "openai_" + prefix, 1)
    # gpt-4.1-mini → gpt4_1_mini: the version glues to "gpt", its dot becomes "_".
    base = _GPT_VERSION.sub(lambda m: "gpt" + m.group(1).replace(".", "_"), base)
    return "openai_" + prefix + sanitize(base)


def _anthropic_key(model_id: str) -> str:
    return "anthropic_" + _claude_family(model_id.strip().lower())


@functools.lru_cache(maxsize=1024)
def price_key_for(provider: str, model_id: str) -> str:
    """The price key for ``model_id`` served by ``provider`` (``"bedrock"``, ``"openai"`` or ``"anthropic"``).

    Never raises: an empty id gives ``<provider>_unknown``; an unrecognised one a sanitised key
    that the price book does not know, so the consumers store its usage as unpriced.
    """
    if not model_id or not model_id.strip():
        return f"{provider}_unknown"
    if provider == "bedrock":
        key = _bedrock_key(model_id)
    elif provider == "openai":
        key = _openai_key(model_id)
    elif provider == "anthropic":
        key = _anthropic_key(model_id)
    else:
        key = sanitize(f"{provider}_{model_id}")
    if key.endswith("_") or key == f"{provider}_":
        key = f"{provider}_unknown"
    return key[:MAX_KEY_LEN]


#: Every key auto-instrumentation emits for a known service or model; the price book must price them all.
KNOWN_PRICE_KEYS: frozenset[str] = frozenset(
    {
        # AWS services (spendtrace/instrument/_botocore.py)
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
        # models
        *(f"bedrock_{f}" for f in _CLAUDE_FAMILIES),
        *_BEDROCK_KEYS,
        *(f"anthropic_{f}" for f in _CLAUDE_FAMILIES),
        *(f"openai_{f}" for f in _OPENAI_FAMILIES),
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
