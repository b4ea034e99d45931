"""Attribution rules: which OTel attributes name a span's feature, tenant and endpoint (TOML, stdlib tomllib).

A rule file (all keys optional; the defaults below apply to what it leaves out)::

    feature = ["spendtrace.feature", "app.feature"]    # span attributes, first present wins
    tenant = ["enduser.id", "user.id", "app.tenant"]
    endpoint = ["http.route"]

    [[rule]]                                 # first matching rule wins, after the lists above
    match = { "rpc.service" = "DynamoDB", "aws.dynamodb.table_names" = "*" }   # "*": present
    feature = "catalog"                      # a literal ...
    tenant_from = "app.customer"             # ... or another attribute's value

A span's own attributes win, then the first matching rule, then the nearest ancestor's value in the
same export, then the resource's attributes (the same lists), and for the feature ``service.name``,
then ``__unattributed__``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spendtrace.errors import ConfigError

__all__ = ["DEFAULT_RULES", "Rule", "Rules", "load_rules"]

_DIMS = ("feature", "tenant", "endpoint")


@dataclass(frozen=True)
class Rule:
    """When every ``match`` attribute has its value (``*``: is present), set these dimensions."""

    match: tuple[tuple[str, str], ...]
    set: tuple[tuple[str, str], ...] = ()  # (dimension, literal)
    set_from: tuple[tuple[str, str], ...] = ()  # (dimension, attribute name)

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        """Whether ``attrs`` satisfy every condition."""
        for key, want in self.match:
            have = attrs.get(key)
            if have is None or (want != "*" and str(have) != want):
                return False
        return True


@dataclass(frozen=True)
class Rules:
    """The attribute lists per dimension and the ordered rules."""

    feature: tuple[str, ...] = ("spendtrace.feature",)
    tenant: tuple[str, ...] = ("spendtrace.tenant", "enduser.id", "user.id")
    endpoint: tuple[str, ...] = ("spendtrace.endpoint", "http.route")
    rules: tuple[Rule, ...] = field(default=())

    def pick(self, dim: str, attrs: Mapping[str, Any]) -> str | None:
        """The first non-empty value of ``dim``'s attributes in ``attrs``."""
        for key in getattr(self, dim):
            v = attrs.get(key)
            if v is not None and v != "":
                return str(v)
        return None

    def apply(self, attrs: Mapping[str, Any]) -> dict[str, str]:
        """What the first matching rule sets for ``attrs`` (empty when none matches)."""
        for rule in self.rules:
            if rule.matches(attrs):
                out = dict(rule.set)
                for dim, key in rule.set_from:
                    v = attrs.get(key)
                    if v is not None and v != "":
                        out[dim] = str(v)
                return out
        return {}


DEFAULT_RULES = Rules()


def _names(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: {key} must be an attribute name or a list of them")
    return tuple(value)


def _rule(doc: Any, where: str) -> Rule:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: each [[rule]] must be a table")
    unknown = set(doc) - {"match", *_DIMS, *(f"{d}_from" for d in _DIMS)}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    match = doc.get("match")
    if not isinstance(match, dict) or not match:
        raise ConfigError(f"{where}: match must be a non-empty table of attribute = value")
    conds = tuple((str(k), v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v))
                  for k, v in match.items())  # fmt: skip
    sets: list[tuple[str, str]] = []
    froms: list[tuple[str, str]] = []
    for dim in _DIMS:
        for key, bucket in ((dim, sets), (f"{dim}_from", froms)):
            v = doc.get(key)
            if v is None:
                continue
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{where}: {key} must be a non-empty string")
            bucket.append((dim, v))
    if not sets and not froms:
        raise ConfigError(f"{where}: the rule sets nothing (feature, tenant, endpoint or *_from)")
    return Rule(conds, tuple(sets), tuple(froms))


def load_rules(path: str | os.PathLike[str] | None) -> Rules:
    """Read a rule file; ``None`` gives the defaults. Raises ``ConfigError`` naming the file and the problem."""
    if path is None:
        return DEFAULT_RULES
    where = os.fspath(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read rule file {where}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(doc) - {*_DIMS, "rule"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{where}: rule must be an array of tables ([[rule]])")
    kw: dict[str, Any] = {}
    for dim in _DIMS:
        names = _names(doc, dim, where)
        if names is not None:
            kw[dim] = names
    kw["rules"] = tuple(_rule(r, f"{where} rule {i + 1}") for i, r in enumerate(raw_rules))
    return Rules(**kw)
