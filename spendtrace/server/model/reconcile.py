"""Reconciliation types the ``ReconcileStore`` takes and returns: modelled spend, restatements, cached bills.

Below the storage interface so the store, the report and the apps share one definition of each.
Money is integer nano-dollars; days are UTC, bucket starts in epoch seconds (``*_s``), dates as
``YYYY-MM-DD`` strings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spendtrace.errors import ConfigError

__all__ = [
    "AWS_SERVICES",
    "CE_SERVICE_MAP",
    "CachedPages",
    "CalibrationFactor",
    "ModelledSpend",
    "Restatement",
    "check_calibration",
]

#: Cost Explorer SERVICE dimension values -> spendtrace usage service keys (the AWS services the model prices).
CE_SERVICE_MAP: dict[str, str] = {
    "Amazon DynamoDB": "dynamodb",
    "Amazon Simple Storage Service": "s3",
    "Amazon Simple Queue Service": "sqs",
    "Amazon Simple Notification Service": "sns",
    "AWS Lambda": "lambda",
    "Amazon Bedrock": "bedrock",
    "Amazon Kinesis": "kinesis",
    "Amazon Kinesis Firehose": "firehose",
    "AWS Step Functions": "stepfunctions",
    "Amazon EventBridge": "eventbridge",
    "Amazon Textract": "textract",
    "Amazon Comprehend": "comprehend",
    "Amazon Rekognition": "rekognition",
    "Amazon Translate": "translate",
    "Amazon Polly": "polly",
    "Amazon Transcribe": "transcribe",
    "AWS Secrets Manager": "secretsmanager",
    "AWS Key Management Service": "kms",
}

#: Services billed on the AWS bill, hence what a calibration factor from Cost Explorer may scale.
#: Bedrock is among them (AWS bills it, whatever model it serves); OpenAI and Anthropic's own API
#: are not (their bills are not in Cost Explorer), nor are a user's own usage keys.
AWS_SERVICES: frozenset[str] = frozenset(CE_SERVICE_MAP.values())


class CalibrationFactor(float):
    """A calibration factor from a reconciliation report that remembers the days it could not compare.

    It is a float everywhere; ``restate_historical_costs`` refuses one with ``missing_days`` (the
    bill did not cover the whole range) unless told ``force=True``.
    """

    __slots__ = ("missing_days",)
    missing_days: tuple[str, ...]

    def __new__(cls, value: float, missing_days: tuple[str, ...] = ()) -> CalibrationFactor:
        self = super().__new__(cls, value)
        self.missing_days = tuple(missing_days)
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (CalibrationFactor, (float(self), self.missing_days))

    @property
    def partial(self) -> bool:
        """True when the report it came from had days without actuals."""
        return bool(self.missing_days)


def check_calibration(factor: object, factors: dict[str, object] | None, *, force: bool) -> None:
    """Refuse (``ConfigError``) a factor from a partial reconciliation report unless ``force``."""
    if force:
        return
    for value in (factor, *(factors or {}).values()):
        missing = getattr(value, "missing_days", ())
        if missing:
            span = missing[0] if len(missing) == 1 else f"{missing[0]} .. {missing[-1]}"
            raise ConfigError(
                f"this factor comes from a partial reconciliation: {len(missing)} day(s) had no actual bill "
                f"({span}); reconcile with actuals for the whole range, or pass force=True to restate anyway"
            )


@dataclass(frozen=True, slots=True)
class ModelledSpend:
    """What the model says one feature spent on one service in one UTC day (a per-service day rollup)."""

    day_s: int
    feature: str
    service: str
    cost_nano: int


@dataclass(frozen=True, slots=True)
class Restatement:
    """One recorded restatement of ``[start_date, end_date)``.

    ``kind`` is ``restate`` (a ``factor`` or per-service ``factors`` applied) or ``reprice`` (stored
    usage priced again from a price book; ``features`` it was limited to, none: all; ``detail`` its
    per-service totals before and after, nano-dollars).
    """

    id: int
    created_ns: int
    who: str
    why: str
    start_date: str
    end_date: str
    factor: float | None
    factors: dict[str, float] = field(default_factory=dict)
    undone_ns: int | None = None
    kind: str = "restate"
    features: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as a saved report lists it."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CachedPages:
    """A cached copy of a GetCostAndUsage response: its pages and when they were fetched (epoch ns)."""

    fetched_ns: int
    pages: list[dict[str, Any]]
