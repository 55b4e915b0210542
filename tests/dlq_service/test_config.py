"""Settings: environment names and the delay queues shared with the delivery services."""

from __future__ import annotations

import pytest

from dlq_service.config import DlqSettings
from email_service.config import EmailSettings
from gateway.config import GatewaySettings
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
