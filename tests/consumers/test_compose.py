"""compose.yaml and the Dockerfile name commands, modules and options that exist in this checkout."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import yaml

from consumers.cli import build_parser, config_from_args
from consumers.demo_traffic import build_parser as demo_parser

ROOT = Path(__file__).resolve().parents[2]
#: the store every service of compose.yaml uses
STORE = "clickhouse://spendtrace:spendtrace@clickhouse:8123/spendtrace"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_kafka_service_is_single_node_kraft() -> None:
    """The broker is the official Apache Kafka image as one KRaft node that is both broker and controller."""
    kafka = _compose()["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "zookeeper" not in str(kafka).lower()
    assert len(env["CLUSTER_ID"]) == 22  # a base64 UUID, as kafka-storage format requires


def test_consumer_service_command_parses_with_the_real_cli() -> None:
    """The consumer service runs the installed ``spendtrace-consumer`` script with options its parser accepts."""
    svc = _compose()["services"]["consumer"]
    command = svc["command"]
    assert command[0] == "spendtrace-consumer"
    module, func = _scripts()["spendtrace-consumer"].split(":")
    assert callable(getattr(importlib.import_module(module), func))
    args = build_parser().parse_args(command[1:])
    assert args.bootstrap == "kafka:9092"
    assert args.workers >= 1
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert config_from_args(args).db_path == STORE  # accepted as is: server URL, worker processes
    assert not args.no_alerts  # alert state lives in ClickHouse: every worker evaluates the rules
    assert svc["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert svc["environment"]["SPENDTRACE_STORE"] == STORE  # what `docker compose exec consumer spendtrace` reads


def test_clickhouse_service_is_the_official_image_and_everything_reads_it() -> None:
    """ClickHouse from the official image, with the database and user the store URL names; the dashboard reads it."""
    from urllib.parse import urlsplit

    from tui.cli import build_parser as tui_parser

    services = _compose()["services"]
    ch = services["clickhouse"]
    assert ch["image"].startswith("clickhouse/clickhouse-server:")
    url = urlsplit(STORE)
    env = ch["environment"]
    assert (url.hostname, url.port, url.path.lstrip("/")) == ("clickhouse", 8123, env["CLICKHOUSE_DB"])
    assert (url.username, url.password) == (env["CLICKHOUSE_USER"], env["CLICKHOUSE_PASSWORD"])
    assert "healthcheck" in ch and ch["ports"] == ["127.0.0.1:8123:8123"]
    dashboard = services["dashboard"]["command"]
    assert dashboard[0] == "spendtrace-tui" and tui_parser().parse_args(dashboard[1:]).store == STORE


def test_demo_traffic_service_runs_an_importable_module() -> None:
    """The demo generator service is ``python -m consumers.demo_traffic`` with options that module accepts."""
    command = _compose()["services"]["demo-traffic"]["command"]
    assert command[:3] == ["python", "-m", "consumers.demo_traffic"]
    assert hasattr(importlib.import_module(command[2]), "main")
    assert demo_parser().parse_args(command[3:]).bootstrap == "kafka:9092"


def test_dockerfile_installs_the_project_with_the_consumer_extra() -> None:
    """The image copies every package the services import and installs the extras they need."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for package in ("spendtrace", "consumers", "tui"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'pip install ".[consumer,tui,api,clickhouse,otlp]"' in dockerfile
    # setup.py builds the OTLP receiver's C reader; the image has a compiler while it installs, and checks it built
    assert "COPY pyproject.toml setup.py" in dockerfile and "gcc" in dockerfile
    assert 'python -c "import spendtrace.server.otlp._c.wire"' in dockerfile
    assert {"consumer", "tui", "api", "clickhouse", "otlp"} <= set(extras)
    for service in ("consumer", "demo-traffic", "api", "otlp"):
        assert _compose()["services"][service]["build"] == "."


def test_api_service_runs_the_real_api_command() -> None:
    """The compose API service runs a command the real ``spendtrace`` parser accepts, on the workers' database."""
    from spendtrace.cli.main import build_parser

    svc = _compose()["services"]["api"]
    command = svc["command"]
    assert command[0] == "spendtrace"
    args = build_parser().parse_args(command[1:])
    assert args.command == "api" and args.port == 8000 and args.store == STORE
    assert svc["ports"] == ["127.0.0.1:8000:8000"]


def test_otlp_service_runs_the_real_receiver_command_on_both_transports() -> None:
    """The OTLP service's command parses with the real parser: HTTP 4318 and gRPC 4317, publishing to Kafka."""
    from spendtrace.cli.main import build_parser

    svc = _compose()["services"]["otlp"]
    command = svc["command"]
    assert command[0] == "spendtrace"
    args = build_parser().parse_args(command[1:])
    assert args.command == "otlp" and (args.port, args.grpc_port) == (4318, 4317)
    assert args.bootstrap == "kafka:9092" and args.host == "0.0.0.0"
    assert svc["ports"] == ["127.0.0.1:4317-4318:4317-4318"]
    assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
