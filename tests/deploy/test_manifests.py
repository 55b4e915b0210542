"""Deployment files are checked with the real tools that work offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.service_settings import (
    ADMIN_EMAIL,
    SERVICE_ACCOUNT_PASSWORD,
    SETTINGS,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).parent.parent / "lib" / "python3.11" / "site-packages" / "compose"
# The secrets docker-compose.yml requires (deploy/compose.env.example), test values.
SECRETS = {
    name: f"test-{name.lower().replace('_', '-')}"
    for name in (
        "RABBITMQ_PASSWORD",
        "REDIS_PASSWORD",
        "POSTGRES_PASSWORD",
        "SERVICE_ACCOUNT_PASSWORD",
        "ADMIN_EMAIL",
        "ADMIN_PASSWORD",
        "METRICS_TOKEN",
        "CONSOLE_SECRET_KEY",
        "GRAFANA_ADMIN_PASSWORD",
    )
}
APP_SERVICES = {
    "gateway": "gateway",
    "user-service": "user_service",
    "template-service": "template_service",
    "email-service": "email_service",
    "push-service": "push_service",
    "dlq-service": "dlq_service",
}
CONSUMERS = {"email-service", "push-service"}
UVICORN_DRAIN_SECONDS = 30  # libs/http/serve.py


def compose(*args: str, secrets: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = COMPOSE / "docker-compose"
    environment = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [str(binary), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment | (SECRETS if secrets is None else secrets),
        cwd=ROOT / "deploy",  # no .env of a developer's is read
    )


def rendered() -> dict[str, Any]:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]  # type: ignore[no-any-return]


def seconds(duration: str) -> float:
    """Compose renders durations like "1m5s" or "45s"."""
    parts = re.findall(r"(\d+)([hms])", duration)
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[unit] for n, unit in parts)


def test_compose_file_is_valid_for_the_real_compose_binary():
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_real_secrets():
    result = compose("config", "-q", secrets={})
    assert result.returncode != 0
    assert "required variable" in result.stderr
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    assert all(f"{name}=" in example for name in SECRETS)


def test_no_default_credentials_are_published_on_host_ports():
    services = rendered()
    for store in ("rabbitmq", "redis", "postgres"):
        assert not services[store].get("ports"), store
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {
        "gateway",
        "user-service",
        "dlq-service",
        "grafana",
        "prometheus",
        "mailpit",
    }
    for name in ("prometheus", "mailpit"):  # no login of their own: this host only
        assert all(port["host_ip"] == "127.0.0.1" for port in services[name]["ports"])
    text = yaml.safe_dump(services)
    assert "guest" not in text
    for value in SECRETS.values():  # every secret is the one given, none a default
        assert value in text
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]


def test_services_are_checked_on_ready_and_given_time_to_drain():
    services = rendered()
    drain = float(services["email-service"]["environment"]["SHUTDOWN_GRACE_SECONDS"])
    for name in APP_SERVICES:
        service = services[name]
        assert "/ready" in " ".join(service["healthcheck"]["test"]), name
        needed = UVICORN_DRAIN_SECONDS + (drain if name in CONSUMERS else 0)
        assert seconds(service["stop_grace_period"]) > needed, name


def test_prometheus_grafana_and_a_mail_catcher_run_beside_the_services():
    services = rendered()
    mounts = {v["target"]: v["source"] for v in services["prometheus"]["volumes"] if "source" in v}
    assert mounts["/etc/prometheus/prometheus.yml"].endswith("deploy/prometheus/prometheus.yml")
    assert mounts["/etc/prometheus/rules/alerts.yml"].endswith("deploy/prometheus/alerts.yml")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]
    # the services require METRICS_TOKEN in production and /metrics answers only that token
    assert [s["target"] for s in services["prometheus"]["secrets"]] == [
        "/run/secrets/metrics_token"
    ]
    for job in config["scrape_configs"]:
        assert job["authorization"] == {"credentials_file": "/run/secrets/metrics_token"}, job
    for name in APP_SERVICES:
        assert services[name]["environment"]["METRICS_TOKEN"] == SECRETS["METRICS_TOKEN"]
    grafana = {v["target"]: v["source"] for v in services["grafana"]["volumes"] if "source" in v}
    assert grafana["/etc/grafana/provisioning"].endswith("deploy/grafana/provisioning")
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/herald.yml").read_text()
    )["providers"][0]
    dashboards = Path(grafana[provider["options"]["path"]])
    assert (dashboards / "herald.json").exists()
    assert services["mailpit"]["ports"][0]["target"] == 8025  # the web view
    assert services["email-service"]["environment"]["SMTP_HOST"] == "mailpit"


def test_compose_runs_every_service_with_its_command_and_dependencies():
    services = rendered()
    for name, module in APP_SERVICES.items():
        assert services[name]["command"] == ["python", "-m", module]
        assert "migrate" in services[name]["depends_on"]
        assert services[name]["environment"]["RABBITMQ_URL"].startswith("amqp://")
    assert services["email-service"]["deploy"]["replicas"] == 2
    assert "migrate" in services["migrate"]["command"][-1]


def test_a_broken_compose_file_is_refused(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        "services:\n  web:\n    image: x\n    ports: [{bad: 1}]\n    depends_on: [nope]\n"
    )
    result = subprocess.run(
        [str(COMPOSE / "docker-compose"), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


def test_every_service_accepts_the_compose_environment_in_production(monkeypatch):
    # The services refuse development secrets, a missing METRICS_TOKEN or the default admin in
    # production; the file must give them what they need (given real secrets), or nothing starts.
    chosen = SECRETS | {
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "SERVICE_ACCOUNT_PASSWORD": SERVICE_ACCOUNT_PASSWORD,
    }
    result = compose("config", secrets=chosen)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in SETTINGS:
        environment = services[name]["environment"]
        assert environment["ENVIRONMENT"] == "production"
        settings = load_settings(name, environment, monkeypatch)
        assert settings.metrics_token == SECRETS["METRICS_TOKEN"], name
