"""Settings of template_service (environment variables, see ``.env.example``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator

from libs.settings import ServiceSettings
from template_service.languages import normalize_language


class TemplateSettings(ServiceSettings):
    service_name: str = "template_service"
    port: int = Field(8002, validation_alias=AliasChoices("TEMPLATE_SERVICE_PORT", "PORT"))
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/herald_templates",
        validation_alias=AliasChoices("TEMPLATE_DATABASE_URL", "DATABASE_URL"),
    )
    # The last language tried when a requested one (and its base language) has no template.
    default_language: str = "en"
    # Wall-clock budget of one render; a template that loops or recurses longer gets a 422.
    render_timeout_seconds: float = Field(2.0, gt=0)

    @field_validator("default_language")
    @classmethod
    def _language_tag(cls, value: str) -> str:
        return normalize_language(value)
