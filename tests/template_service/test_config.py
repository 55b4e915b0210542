"""Settings come from the environment, with the names the contract gives them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from template_service.config import TemplateSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PORT", "TEMPLATE_SERVICE_PORT", "DATABASE_URL", "TEMPLATE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)

    settings = TemplateSettings()

    assert settings.service_name == "template_service"
    assert settings.port == 8002
    assert settings.database_url.endswith("/herald_templates")
    assert settings.default_language == "en"


def test_service_specific_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("TEMPLATE_SERVICE_PORT", "9002")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://a/shared")
    monkeypatch.setenv("TEMPLATE_DATABASE_URL", "postgresql+asyncpg://a/templates")

    settings = TemplateSettings()

    assert settings.port == 9002
    assert settings.database_url == "postgresql+asyncpg://a/templates"


def test_generic_variables_are_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEMPLATE_SERVICE_PORT", raising=False)
    monkeypatch.delenv("TEMPLATE_DATABASE_URL", raising=False)
    monkeypatch.setenv("PORT", "9100")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://a/b")

    settings = TemplateSettings()

    assert (settings.port, settings.database_url) == (9100, "postgresql+asyncpg://a/b")


def test_default_language_is_normalized_and_checked() -> None:
    assert TemplateSettings(default_language="PT-br").default_language == "pt-BR"
    with pytest.raises(ValidationError):
        TemplateSettings(default_language="english please")
