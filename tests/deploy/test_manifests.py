"""Deployment files are checked with the real tools that work offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).parent.parent / "lib" / "python3.11" / "site-packages" / "compose"


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = COMPOSE / "docker-compose"
    return subprocess.run(
        [str(binary), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_is_valid_for_the_real_compose_binary():
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_runs_every_service_with_its_command_and_dependencies():
    result = compose("config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    for name, module in {
        "gateway": "gateway",
        "user-service": "user_service",
        "template-service": "template_service",
        "email-service": "email_service",
        "push-service": "push_service",
        "dlq-service": "dlq_service",
    }.items():
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
