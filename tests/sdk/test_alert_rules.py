"""Alert rule definitions: storage in SQLite, validation, URL masking, budgets and rate rules."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import spendtrace
from spendtrace.server.alerts.rules import (
    list_alerts,
    mask_url,
    remove_alert,
    set_alert,
    set_budget,
    set_rate_alert,
    validate_webhook,
)

SLACK = "https://hooks.slack.com/services/T0ABCDEF/B0GHIJKL/sEcReTtOkEn123"


def test_readme_call_stores_a_threshold_rule(db_path: Path) -> None:
    """The README's ``set_alert`` call, exactly as written, stores a 24 h / $10 / 60 min rule."""
    rule = set_alert(
        feature="ai_recommendations",
        threshold=10.00,
        window_hours=24,
        webhook=SLACK,
        db_path=db_path,
    )
    assert (rule.kind, rule.scope, rule.scope_value) == ("threshold", "feature", "ai_recommendations")
    assert rule.threshold_nano == 10 * 1_000_000_000
    assert rule.window_minutes == 24 * 60
    assert rule.cooldown_minutes == 60
    assert rule.webhook == SLACK and rule.webhook_format == "slack"
    assert [r.name for r in list_alerts(db_path)] == [rule.name]


def test_readme_call_with_default_db(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``db_path`` the rule goes to the default store (``SPENDTRACE_DB``)."""
    monkeypatch.setenv("SPENDTRACE_DB", str(db_path))
    spendtrace.set_alert(feature="ai_recommendations", threshold=10.00, window_hours=24, webhook=SLACK)
    assert len(spendtrace.list_alerts()) == 1


def test_scopes_names_and_replace_by_name(db_path: Path) -> None:
    """Tenant, endpoint and total rules are stored; setting a name again replaces that rule."""
    a = set_alert(user_id="tenant-acme", threshold=5, window_hours=1, name="acme", db_path=db_path)
    set_alert(endpoint="/api/search", threshold=2, window_hours=0.5, name="search-ep", db_path=db_path)
    set_alert(total=True, threshold=100, name="all", db_path=db_path)
    b = set_alert(user_id="tenant-acme", threshold=7, window_hours=2, name="acme", db_path=db_path)
    rules = {r.name: r for r in list_alerts(db_path)}
    assert set(rules) == {"acme", "search-ep", "all"}
    assert rules["acme"].id == a.id and rules["acme"].threshold == 7 and rules["acme"].window_minutes == 120
    assert b.updated_ns > a.updated_ns
    assert (rules["search-ep"].scope, rules["search-ep"].window_minutes) == ("endpoint", 30)
    assert (rules["all"].scope, rules["all"].scope_value, rules["all"].scope_column) == ("total", "", None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"feature": "f", "threshold": 1, "webhook": "ftp://example.com/x"},
        {"feature": "f", "threshold": 1, "webhook": "javascript:alert(1)"},
        {"feature": "f", "threshold": 1, "webhook": "https:///no-host"},
        {"feature": "f", "threshold": 0},
        {"feature": "f", "threshold": -3},
        {"feature": "f", "threshold": float("nan")},
        {"threshold": 1},
        {"feature": "f", "user_id": "u", "threshold": 1},
        {"feature": "f", "total": True, "threshold": 1},
        {"feature": "f", "threshold": 1, "window_hours": 0},
        {"feature": "f", "threshold": 1, "webhook_format": "pagerduty"},
        {"feature": "f", "threshold": 1, "webhook_format": "teams"},
    ],
)
def test_bad_arguments_raise_value_error(db_path: Path, kwargs: dict[str, object]) -> None:
    """Bad scopes, thresholds, windows and webhooks are refused with ``ValueError`` and nothing is stored."""
    with pytest.raises(ValueError):
        set_alert(db_path=db_path, **kwargs)  # type: ignore[arg-type]
    assert list_alerts(db_path) == []


def test_validate_webhook_accepts_http_and_https() -> None:
    """Plain http (e.g. an internal relay, once allowed) and https URLs pass validation unchanged."""
    assert validate_webhook("http://127.0.0.1:8080/hook", allow_private=True) == "http://127.0.0.1:8080/hook"
    assert validate_webhook("http://hooks.example.com/hook") == "http://hooks.example.com/hook"
    assert validate_webhook(SLACK) == SLACK


def test_mask_url_hides_tokens_and_query_values() -> None:
    """Path tokens, query values and credentials are hidden; scheme, host and first segment stay."""
    masked = mask_url(SLACK)
    assert masked.startswith("https://hooks.slack.com/services/")
    assert "sEcReTtOkEn123" not in masked and "T0ABCDEF" not in masked
    q = mask_url("https://user:pw@example.com:8443/hook?token=abcdef123&x=1")
    assert "abcdef123" not in q and "pw" not in q and "user" not in q
    assert q.startswith("https://***@example.com:8443/hook?token=***")


def test_rule_views_never_show_the_secret(db_path: Path) -> None:
    """``to_dict`` and ``masked_webhook`` hide the token; PagerDuty routing keys are masked too."""
    rule = set_alert(feature="f", threshold=1, webhook=SLACK, db_path=db_path)
    assert "sEcReTtOkEn123" not in str(rule.to_dict()) and "sEcReTtOkEn123" not in rule.masked_webhook
    pd = set_alert(feature="g", threshold=1, webhook_format="pagerduty", routing_key="R0UTINGKEY42", db_path=db_path)
    assert pd.webhook == "https://events.pagerduty.com/v2/enqueue" and pd.routing_key == "R0UTINGKEY42"
    assert "R0UTINGKEY42" not in str(pd.to_dict())


def test_budget_and_rate_rules(db_path: Path) -> None:
    """Budgets keep their period and sorted percentages; rate rules their factor and minimum spend."""
    b = set_budget(300, "month", user_id="tenant-acme", percentages=[100, 50, 80], db_path=db_path)
    assert (b.kind, b.threshold, b.params["period"], b.params["percentages"]) == ("budget", 300, "month", [50, 80, 100])
    r = set_rate_alert(4, feature="search", min_spend=0.5, db_path=db_path)
    assert (r.kind, r.params["factor"], r.params["min_spend_nano"], r.params["lookback_days"]) == (
        "rate", 4.0, 500_000_000, 7,
    )
    with pytest.raises(ValueError):
        set_budget(10, "year", feature="x", db_path=db_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        set_rate_alert(1.0, feature="x", db_path=db_path)
    assert "month budget $300.00" in b.describe() and "4.0x" in r.describe()


def test_remove_by_name_or_id(db_path: Path) -> None:
    """Removing by name or by id deletes the rule; removing it again says it was not there.

    (That its firing state goes with it, and the rules fingerprint, are store operations: see
    tests/server/test_alert_store_contract.py.)
    """
    set_alert(feature="a", threshold=1, name="a", db_path=db_path)
    set_alert(feature="b", threshold=1, name="b", db_path=db_path)
    assert remove_alert("a", db_path=db_path) is True
    assert remove_alert("a", db_path=db_path) is False
    b_id = list_alerts(db_path)[0].id
    assert remove_alert(b_id, db_path=db_path) is True
    assert list_alerts(db_path) == []


def test_names_are_bound_as_parameters(db_path: Path) -> None:
    """A hostile feature name is stored verbatim and the table survives."""
    evil = "x'); DROP TABLE alert_rules; --"
    set_alert(feature=evil, threshold=1, name=evil, db_path=db_path)
    assert [r.scope_value for r in list_alerts(db_path)] == [evil]
    assert remove_alert(evil, db_path=db_path)
    with sqlite3.connect(db_path) as c:
        assert c.execute("SELECT count(*) FROM alert_rules").fetchone()[0] == 0


def test_cli_add_list_remove(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``spendtrace alerts add/list/remove`` manage rules; the listing never shows the webhook's secret."""
    from spendtrace.cli.main import main

    db = ["--db", str(db_path)]
    assert main([*db, "alerts", "add", "--feature", "search", "--threshold", "10", "--webhook", SLACK,
                 "--name", "s10"]) == 0
    assert main([*db, "alerts", "add", "--user", "acme", "--budget", "300", "--period", "week",
                 "--percentages", "80,100"]) == 0
    assert main([*db, "alerts", "add", "--total", "--rate", "5", "--name", "spike"]) == 0
    assert main([*db, "alerts", "add", "--feature", "x", "--threshold", "1", "--webhook", "file:///etc/passwd"]) == 2
    out = capsys.readouterr()
    assert "saved rule" in out.out and "http or https" in out.err and "sEcReTtOkEn123" not in out.out
    assert main([*db, "alerts", "list"]) == 0
    listing = capsys.readouterr().out
    assert "s10" in listing and "week budget $300.00" in listing and "spike" in listing
    assert "tenant 'acme': week budget" in listing and "user 'acme'" not in listing  # --user is a tenant
    assert "sEcReTtOkEn123" not in listing and "hooks.slack.com/services/" in listing
    assert main([*db, "alerts", "list", "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in rules] == ["threshold", "budget", "rate"]
    assert main([*db, "alerts", "remove", "s10"]) == 0 and main([*db, "alerts", "remove", "s10"]) == 1
    assert [r.name for r in list_alerts(db_path)] == [rules[1]["name"], "spike"]
    capsys.readouterr()
    assert main([*db, "alerts", "tail", "--no-follow"]) == 0
    assert capsys.readouterr().out.strip() == "no alert events"


# ---- webhook targets: no cloud metadata, no loopback / private unless allowed --------------------

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.google.internal./computeMetadata/v1/",
    "http://[fe80::1%25eth0]:80/hook",
    "http://[::ffff:169.254.169.254]/",
    "http://0xa9fea9fe/",  # 169.254.169.254 as one hex number
    "http://100.100.100.200/latest/meta-data/",
]
PRIVATE = [
    "http://127.0.0.1:8080/hook",
    "http://[::1]:8080/hook",
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://127.1/hook",
    "http://0177.0.0.1/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[2002:7f00:1::]/hook",  # 6to4 wrapping 127.0.0.1
    "http://0.0.0.0:9000/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.9/hook",
    "http://192.168.1.20/hook",
    "http://100.64.0.1/hook",
    "http://[fd12:3456::1]/hook",
    "http://localhost:8000/hook",
    "http://api.localhost/hook",
    "http://\uff11\uff12\uff17.0.0.1/hook",  # full-width digits normalise to 127.0.0.1
]


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_link_local_and_metadata_webhooks_are_refused_even_when_private_is_allowed(db_path: Path, url: str) -> None:
    """Cloud metadata and link-local targets are refused by set_alert whatever the allowance; nothing is stored."""
    for allow in (False, True):
        with pytest.raises(ValueError, match=r"webhook target refused: .*(metadata|link-local)"):
            set_alert(feature="f", threshold=1, webhook=url, allow_private=allow, db_path=db_path)
    assert list_alerts(db_path) == []


@pytest.mark.parametrize("url", PRIVATE)
def test_loopback_and_private_webhooks_need_an_explicit_allowance(db_path: Path, url: str) -> None:
    """Loopback and private hosts, in any numeric spelling, are refused unless allow_private=True."""
    with pytest.raises(ValueError, match=r"webhook target refused: .*(loopback|private|unspecified)"):
        set_alert(feature="f", threshold=1, webhook=url, db_path=db_path)
    rule = set_alert(feature="f", threshold=1, webhook=url, allow_private=True, db_path=db_path)
    assert rule.webhook == url and rule.params["allow_private_webhook"] is True


def test_budget_and_rate_rules_go_through_the_same_check(db_path: Path) -> None:
    """set_budget and set_rate_alert refuse the same targets set_alert does."""
    with pytest.raises(ValueError, match="metadata"):
        set_budget(10, "day", feature="f", webhook="http://169.254.169.254/", db_path=db_path)
    with pytest.raises(ValueError, match="loopback"):
        set_rate_alert(3, feature="f", webhook="http://[::1]/", db_path=db_path)
    assert set_rate_alert(3, feature="f", webhook="http://[::1]/", allow_private=True, db_path=db_path).webhook
    assert set_budget(10, "day", feature="f", webhook=SLACK, db_path=db_path).webhook == SLACK


def test_the_environment_allows_private_webhooks(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPENDTRACE_ALLOW_PRIVATE_WEBHOOKS=1 allows loopback (recorded on the rule), never metadata."""
    monkeypatch.setenv("SPENDTRACE_ALLOW_PRIVATE_WEBHOOKS", "1")
    assert set_alert(feature="f", threshold=1, webhook="http://127.0.0.1:9/x", db_path=db_path).params[
        "allow_private_webhook"
    ]
    with pytest.raises(ValueError, match="metadata"):
        set_alert(feature="f", threshold=1, webhook="http://169.254.169.254/", db_path=db_path)


def test_public_webhooks_are_stored_without_an_allowance(db_path: Path) -> None:
    """A public host needs no allowance and the rule records none."""
    rule = set_alert(feature="f", threshold=1, webhook="http://8.8.8.8/hook", db_path=db_path)
    assert "allow_private_webhook" not in rule.params


def test_cli_refuses_private_webhooks_unless_flagged(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``alerts add --webhook http://0x7f000001/`` exits 2 with the reason; ``--allow-private-webhook`` saves it."""
    from spendtrace.cli.main import main

    db = ["--db", str(db_path)]
    assert main([*db, "alerts", "add", "--feature", "x", "--threshold", "1", "--webhook", "http://0x7f000001/"]) == 2
    assert "127.0.0.1 is a loopback address" in capsys.readouterr().err
    assert main([*db, "alerts", "add", "--feature", "x", "--threshold", "1", "--webhook",
                 "http://169.254.169.254/", "--allow-private-webhook"]) == 2
    assert "cloud metadata" in capsys.readouterr().err
    assert main([*db, "alerts", "add", "--feature", "x", "--threshold", "1", "--webhook", "http://0x7f000001/",
                 "--allow-private-webhook"]) == 0
    assert [r.webhook for r in list_alerts(db_path)] == ["http://0x7f000001/"]


def test_tui_form_refuses_metadata_webhooks(db_path: Path) -> None:
    """The TUI's add-rule action goes through the same validation."""
    from tui.actions import add_rule

    with pytest.raises(ValueError, match="metadata"):
        add_rule(db_path, name="r", scope="feature", scope_value="f", threshold_usd=1, window_hours=1,
                 webhook="http://[::ffff:a9fe:a9fe]/")
    assert list_alerts(db_path) == []
