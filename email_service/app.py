"""email_service: the delivery pipeline with the email adapter and its providers, in order."""

from __future__ import annotations

from fastapi import FastAPI

from email_service.adapter import EmailAdapter
from email_service.config import EmailSettings
from email_service.providers import OutgoingEmail
from email_service.providers.sendgrid import SendGridProvider
from email_service.providers.smtp import SmtpConfig, SmtpProvider
from libs.delivery.providers import FailoverChain, GuardedProvider
from libs.delivery.runtime import AdapterDeps, ManagedAdapter, create_delivery_app, guard
from libs.notification.message import Channel


def build_providers(
    settings: EmailSettings, deps: AdapterDeps
) -> list[GuardedProvider[OutgoingEmail]]:
    s = settings
    providers: list[GuardedProvider[OutgoingEmail]] = []
    for name in s.email_providers:
        if name == "smtp":
            provider: SmtpProvider | SendGridProvider = SmtpProvider(
                SmtpConfig(
                    "smtp",
                    s.smtp_host,
                    s.smtp_port,
                    s.smtp_username,
                    s.smtp_password,
                    s.smtp_use_tls,
                    s.smtp_start_tls,
                    s.smtp_timeout_seconds,
                    s.smtp_pool_size,
                    s.smtp_data_timeout_seconds,
                )
            )
            rate = s.smtp_rate_per_second
        elif name == "smtp_backup":
            if not s.smtp_backup_host:
                raise RuntimeError(
                    "EMAIL_PROVIDERS lists smtp_backup but SMTP_BACKUP_HOST is unset"
                )
            provider = SmtpProvider(
                SmtpConfig(
                    "smtp_backup",
                    s.smtp_backup_host,
                    s.smtp_backup_port,
                    s.smtp_backup_username,
                    s.smtp_backup_password,
                    s.smtp_backup_use_tls,
                    s.smtp_backup_start_tls,
                    s.smtp_timeout_seconds,
                    s.smtp_pool_size,
                    s.smtp_data_timeout_seconds,
                )
            )
            rate = s.smtp_backup_rate_per_second
        else:
            if not s.sendgrid_api_key:
                raise RuntimeError("EMAIL_PROVIDERS lists sendgrid but SENDGRID_API_KEY is unset")
            provider = SendGridProvider(
                base_url=s.sendgrid_base_url,
                api_key=s.sendgrid_api_key,
                http=deps.http,
                timeout=s.sendgrid_timeout_seconds,
            )
            rate = s.sendgrid_rate_per_second
        providers.append(
            guard(provider, redis=deps.redis, keys=deps.keys, settings=s, rate_per_second=rate)
        )
    return providers


def create_app(settings: EmailSettings | None = None) -> FastAPI:
    settings = settings or EmailSettings()

    async def build_adapter(deps: AdapterDeps) -> ManagedAdapter:
        return EmailAdapter(FailoverChain(build_providers(settings, deps)), settings.email_from)

    return create_delivery_app(
        settings=settings,
        channel=Channel.EMAIL,
        adapter_factory=build_adapter,
        title="Herald email service",
    )
