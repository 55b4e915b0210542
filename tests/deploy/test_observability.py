"""Prometheus configuration, alert rules and the Grafana dashboard, checked offline.

promtool (Debian's ``prometheus`` package; ``make tools`` installs it) checks the scrape
configuration and the rules and runs the rules' unit tests. Grafana cannot render here, so the
dashboard is checked as a model: its layout, and every panel's query parsed by promtool and
matched against the metric names the code registers. A panel or rule that queries a metric no
service exports fails.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "herald.json"
SERVICES = (
    "gateway",
    "user_service",
    "template_service",
    "email_service",
    "push_service",
    "dlq_service",
)
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline", "gauge", "bargauge", "table"}
# Series Prometheus makes itself, beside what the services export.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# Grafana's interval variables, as promtool must see them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
# What the issue asks the dashboard to show, by the metric that shows it.
DASHBOARD_MUST_SHOW = {
    "http_requests_total",  # HTTP rate and errors by route
    "http_request_duration_seconds_bucket",  # HTTP latency by route
    "notification_delivery_latency_seconds_bucket",  # accepted to delivered, per channel
    "provider_sends_total",  # sends per provider by outcome
    "message_retries_total",
    "message_waits_total",
    "messages_dead_lettered_total",
    "circuit_breaker_state",
    "queue_messages",  # depths
    "queue_oldest_message_age_seconds",
    "dlq_pending_failed_messages",  # the DLQ size
    "cache_lookups_total",
    "send_claim_takeovers_total",
}
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: `make tools` installs Debian's prometheus package")
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def exported_metric_names() -> set[str]:
    """Every sample name the services can export (their modules register their metrics)."""
    from prometheus_client import REGISTRY

    for service in SERVICES:
        importlib.import_module(f"{service}.app")

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
    }
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords or labels)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match.group() in _PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def check_promql(expressions: dict[str, str], tmp_path: Path) -> None:
    """Let promtool parse each expression (as a recording rule named after where it comes from)."""
    rules = [
        {"record": f"check:{i}", "expr": expr, "labels": {"where": where[:60]}}
        for i, (where, expr) in enumerate(expressions.items())
    ]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def alert_rules() -> list[dict[str, object]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> dict[str, str]:
    model = json.loads(DASHBOARD.read_text())
    queries = {}
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} {target['refId']}"] = expr
    return queries


# --- Prometheus ------------------------------------------------------------------------------


def test_the_scrape_configuration_is_valid_and_scrapes_every_service():
    result = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {
        "gateway",
        "user-service",
        "template-service",
        "email-service",
        "push-service",
        "dlq-service",
    }


def test_promtool_accepts_the_alert_rules():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_their_unit_tests():
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_issue_alerts_exist_and_each_has_a_unit_test():
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert {
        "HeraldDeadLetterQueueGrowing",
        "HeraldCircuitBreakerOpen",
        "HeraldQueueLagging",
        "HeraldDeliveryErrorRatioHigh",
        "HeraldConsumerHeartbeatMissing",
    } <= names
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert tested == names


def test_alert_rules_query_only_metrics_the_services_export():
    exported = exported_metric_names() | PROMETHEUS_SERIES
    for rule in alert_rules():
        unknown = metric_names(str(rule["expr"])) - exported
        assert not unknown, f"{rule['alert']} queries {sorted(unknown)}"


# --- Grafana ---------------------------------------------------------------------------------


def test_the_dashboard_is_a_valid_dashboard_model():
    model = json.loads(DASHBOARD.read_text())
    assert model["uid"]
    assert model["title"]
    assert model["schemaVersion"] >= 36
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    cells: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y"))
        assert min(grid["w"], grid["h"]) > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"])


def test_every_dashboard_query_parses(tmp_path):
    check_promql(dashboard_queries(), tmp_path)


def test_every_dashboard_panel_queries_metrics_the_services_export():
    exported = exported_metric_names() | PROMETHEUS_SERIES
    for where, expr in dashboard_queries().items():
        unknown = metric_names(expr) - exported
        assert not unknown, f"panel {where} queries {sorted(unknown)}, which no service exports"


def test_the_dashboard_shows_rates_latencies_depths_breakers_and_the_dlq():
    shown = set().union(*(metric_names(expr) for expr in dashboard_queries().values()))
    assert not DASHBOARD_MUST_SHOW - shown


def test_the_checks_catch_a_panel_on_a_metric_nobody_exports():
    latency = 'rate(http_request_duration_seconds_bucket{job="x"}[1m])'
    assert metric_names(f"histogram_quantile(0.95, sum by (le, route) ({latency}))") == {
        "http_request_duration_seconds_bucket"
    }
    assert metric_names("time() - consumer_last_heartbeat_timestamp_seconds > 30") == {
        "consumer_last_heartbeat_timestamp_seconds"
    }
    assert "emails_sent_total" not in exported_metric_names()
