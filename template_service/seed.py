"""Demo templates for ``make run`` (``python -m template_service seed``): idempotent, through the
service layer, after migrations."""

from __future__ import annotations

import structlog
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from libs.clients.cache import VersionedCache
from libs.clients.templates import TEMPLATE_CACHE
from libs.notification.message import Channel
from template_service.errors import TemplateExists
from template_service.rendering import SandboxRenderer
from template_service.repository import TemplateRepository
from template_service.schemas import TemplateCreate
from template_service.service import TemplateService

log = structlog.get_logger(__name__)

SEED_ACTOR = "seed"

DEMO_TEMPLATES: tuple[TemplateCreate, ...] = (
    TemplateCreate(
        code="welcome",
        name="Welcome email",
        type=Channel.EMAIL,
        language="en",
        subject="Welcome, {{ name }}!",
        content=(
            "<h1>Welcome, {{ name }}!</h1>\n"
            "<p>We are glad you joined Herald.</p>\n"
            '<p><a href="{{ link }}">Get started</a></p>'
        ),
        description="Sent after sign-up.",
    ),
    TemplateCreate(
        code="welcome",
        name="E-mail de boas-vindas",
        type=Channel.EMAIL,
        language="pt",
        subject="Bem-vindo, {{ name }}!",
        content=(
            "<h1>Olá, {{ name }}!</h1>\n"
            "<p>Que bom que você chegou ao Herald.</p>\n"
            '<p><a href="{{ link }}">Começar</a></p>'
        ),
        description="Enviado após o cadastro.",
    ),
    TemplateCreate(
        code="welcome_push",
        name="Welcome push",
        type=Channel.PUSH,
        language="en",
        title="Hi {{ name }}",
        content="Welcome aboard, {{ name }}! Tap to get started.",
        link="{{ link }}",
    ),
    TemplateCreate(
        code="password_reset",
        name="Password reset",
        type=Channel.EMAIL,
        language="en",
        subject="Reset your password",
        content=(
            "<p>Hi {{ name }},</p>\n"
            "<p>Someone asked to reset the password of your account. If it was you, "
            '<a href="{{ link }}">choose a new password</a>; the link expires in '
            "{{ expires_in_minutes | default(30) }} minutes.</p>\n"
            "<p>If it was not you, ignore this message.</p>"
        ),
    ),
)


async def seed_demo_templates(
    sessions: async_sessionmaker[AsyncSession],
    cache: VersionedCache | None,
    renderer: SandboxRenderer,
    default_language: str,
) -> list[str]:
    """Create the demo templates that do not exist yet; returns ``code:language`` of those made."""
    created: list[str] = []
    for data in DEMO_TEMPLATES:
        async with sessions() as session:
            service = TemplateService(TemplateRepository(session), renderer, default_language)
            try:
                resolved = await service.create(data, SEED_ACTOR)
            except TemplateExists:
                await session.rollback()
                continue
            await session.commit()
        created.append(f"{data.code}:{resolved.template.language}")
        if cache is not None:
            try:
                await cache.bump(TEMPLATE_CACHE, data.code)
            except RedisError as exc:
                log.warning("template.seed_cache_bump_failed", code=data.code, error=repr(exc))
    log.info("template.seeded", created=created, total=len(DEMO_TEMPLATES))
    return created
