"""One place per fact: every setting any service reads is documented in .env.example, once, and
.env.example documents nothing that no service reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from devtools.run import LauncherSettings
from dlq_service.config import DlqSettings
from email_service.config import EmailSettings
from gateway.config import GatewaySettings
from push_service.config import PushSettings
from template_service.config import TemplateSettings
from user_service.config import UserSettings

pytestmark = pytest.mark.unit

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
SETTINGS: list[type[BaseSettings]] = [
    GatewaySettings,
    UserSettings,
    TemplateSettings,
    EmailSettings,
    PushSettings,
    DlqSettings,
    LauncherSettings,
]
# Each service's name is fixed per service; a shared .env must not rename them all.
PER_SERVICE = {"SERVICE_NAME"}


def _documented() -> list[str]:
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M)


def _names(settings: type[BaseSettings]) -> dict[str, list[str]]:
    """Field name -> the environment variables that set it (aliases first)."""
    names: dict[str, list[str]] = {}
    for field_name, field in settings.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None) or []
        names[field_name] = [c.upper() for c in choices if isinstance(c, str)] or [
            field_name.upper()
        ]
    return names


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.__name__)
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    documented = set(_documented())
    missing = [
        envs[0]
        for envs in _names(settings).values()
        if envs[0] not in PER_SERVICE and not documented.intersection(envs)
    ]
    assert missing == [], f"add to .env.example: {missing}"


def test_every_documented_variable_is_read_by_a_service_and_listed_once() -> None:
    read = {env for s in SETTINGS for envs in _names(s).values() for env in envs}
    documented = _documented()
    assert sorted(set(documented) - read) == []
    assert sorted({d for d in documented if documented.count(d) > 1}) == []
