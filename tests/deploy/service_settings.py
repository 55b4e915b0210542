"""Load a service's settings class from the environment a deployment file gives it."""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

from libs.settings import ServiceSettings

# deployment name -> the settings class its service (and its migrate/seed steps) reads
SETTINGS = {
    "gateway": "gateway.config:GatewaySettings",
    "user-service": "user_service.config:UserSettings",
    "template-service": "template_service.config:TemplateSettings",
    "email-service": "email_service.config:EmailSettings",
    "push-service": "push_service.config:PushSettings",
    "dlq-service": "dlq_service.config:DlqSettings",
}
# What the people deploying choose: strong enough for production's checks.
ADMIN_EMAIL = "ops@example.com"
SERVICE_ACCOUNT_PASSWORD = "a-service-password-of-thirty-chars"


def load_settings(
    service: str, environment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> ServiceSettings:
    """The service's settings built from ``environment`` alone (no .env file, nothing else)."""
    module, name = SETTINGS[service].split(":")
    settings_class = getattr(importlib.import_module(module), name)
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    settings: ServiceSettings = settings_class(_env_file=None)
    return settings
