"""email_service: the delivery pipeline with the email adapter and its SMTP provider."""

from __future__ import annotations

from fastapi import FastAPI

from email_service.adapter import EmailAdapter
from email_service.config import EmailSettings
from email_service.providers.smtp import SmtpConfig, SmtpProvider
from libs.delivery_runtime import AdapterDeps, ManagedAdapter, create_delivery_app
from libs.envelope import Channel


def create_app(settings: EmailSettings | None = None) -> FastAPI:
    settings = settings or EmailSettings()

    async def build_adapter(_: AdapterDeps) -> ManagedAdapter:
        provider = SmtpProvider(
            SmtpConfig(
                name="smtp",
                host=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=settings.smtp_password,
                use_tls=settings.smtp_use_tls,
                start_tls=settings.smtp_start_tls,
                timeout=settings.smtp_timeout_seconds,
                pool_size=settings.smtp_pool_size,
            )
        )
        return EmailAdapter(provider, settings.email_from)

    return create_delivery_app(
        settings=settings,
        channel=Channel.EMAIL,
        adapter_factory=build_adapter,
        title="Herald email service",
    )
