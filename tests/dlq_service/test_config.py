"""Settings: environment names and the delay queues shared with the delivery services."""

from __future__ import annotations

from typing import Any

import pytest

from dlq_service.config import DlqSettings
from email_service.config import EmailSettings
from gateway.config import GatewaySettings
from libs.notification.message import Channel
from push_service.config import PushSettings


def test_defaults() -> None:
    settings = DlqSettings()
    assert settings.service_name == "dlq_service"
    assert settings.port == 8005
    assert settings.queue_type == "classic"
    assert settings.retention_days == 30
    assert settings.republish_rate_per_second == 50


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9100")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://x@h/generic")
    assert DlqSettings().port == 9100
    assert DlqSettings().database_url.endswith("/generic")
    monkeypatch.setenv("DLQ_SERVICE_PORT", "9005")
    monkeypatch.setenv("DLQ_DATABASE_URL", "postgresql+asyncpg://x@h/dlq")
    monkeypatch.setenv("EMAIL_RETRY_DELAYS_MS", "[500, 1500]")
    monkeypatch.setenv("QUEUE_TYPE", "quorum")
    settings = DlqSettings()
    assert settings.port == 9005
    assert settings.database_url.endswith("/dlq")
    assert settings.email_retry_delays_ms == [500, 1500]
    assert settings.queue_type == "quorum"


def test_topology_matches_the_delivery_services_and_gateway() -> None:
    email, push = [1000, 5000], [3000]
    topology = DlqSettings(email_retry_delays_ms=email, push_retry_delays_ms=push).topology()
    for other in (EmailSettings, PushSettings, GatewaySettings):
        settings = other(email_retry_delays_ms=email, push_retry_delays_ms=push)
        assert settings.topology() == topology
    names = {q.name for q in topology.queues}
    # configured delays, the claim-wait queue and the parking queues, for each channel
    assert {"email.delay.1000", "email.delay.5000", "email.delay.2000", "push.delay.3000"} <= names


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="republish_rate_per_second"):
        DlqSettings(republish_rate_per_second=0)
    with pytest.raises(ValueError, match="queue_type"):
        DlqSettings(queue_type="lazy")


def test_the_console_and_auto_redrive_defaults_are_safe() -> None:
    settings = DlqSettings()
    assert settings.auto_redrive_enabled is False
    assert settings.auto_redrive_reasons == ["retries_exhausted"]
    assert settings.session_cookie_secure is False  # development serves plain HTTP
    assert settings.providers() == {
        Channel.EMAIL: ("smtp",),
        Channel.PUSH: ("fcm",),
    }
    assert DlqSettings(email_providers=["smtp", "sendgrid"]).providers()[Channel.EMAIL] == (
        "smtp",
        "sendgrid",
    )


def test_production_refuses_the_development_console_secret_and_secures_the_cookie() -> None:
    real: dict[str, Any] = {
        "service_account_password": "s3cret-service-password-long-enough",
        "metrics_token": "a-metrics-token",
        "environment": "production",
    }
    with pytest.raises(ValueError, match="CONSOLE_SECRET_KEY"):
        DlqSettings(**real)
    settings = DlqSettings(**real, console_secret_key="a-long-random-secret")
    assert settings.session_cookie_secure is True
    assert DlqSettings(console_cookie_secure=True).session_cookie_secure is True
