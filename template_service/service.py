"""The template domain: create, version, activate, resolve languages, render.

Never commits: the caller commits and then invalidates caches (see ``endpoints.py``), so a change is
never announced before it is visible.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy.exc import IntegrityError

from libs.http.errors import AppError, Unprocessable
from libs.notification.message import Channel, utcnow
from template_service.active import ActiveTemplate, ActiveTemplates
from template_service.errors import (
    MissingVariable,
    NoChanges,
    TemplateExists,
    TemplateNotFound,
    TemplateRenderFailed,
    TypeMismatch,
    VersionNotFound,
)
from template_service.languages import fallback_chain, normalize_language
from template_service.models import Template, TemplateVersion
from template_service.rendering import Content, RenderedContent, SandboxRenderer
from template_service.repository import TemplateRepository
from template_service.schemas import (
    RenderResult,
    TemplateCreate,
    TemplateUpdate,
    build_content,
)

RENDERS = Counter(
    "template_renders_total", "Template renders by channel and result", ["type", "result"]
)
RENDER_SECONDS = Histogram(
    "template_render_seconds",
    "Time to render one template (all fields)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0),
)

_CONTENT_FIELDS = ("subject", "content", "text", "title", "image", "link")


@dataclass(frozen=True)
class Resolved:
    """A template, one of its versions, and the language the caller asked for."""

    template: Template
    version: TemplateVersion
    requested_language: str | None = None


def version_content(template: Template, version: TemplateVersion) -> Content:
    return Content(
        type=Channel(template.type),
        content=version.content,
        subject=version.subject,
        text=version.text,
        title=version.title,
        image=version.image,
        link=version.link,
    )


@dataclass(frozen=True)
class RenderItem:
    code: str
    variables: Mapping[str, Any]
    language: str | None = None
    version: int | None = None


RenderOutcome = RenderResult | AppError
"""One item of a batch: its result, or the error it alone ran into."""


class TemplateService:
    def __init__(
        self,
        repository: TemplateRepository,
        renderer: SandboxRenderer,
        default_language: str,
        active: ActiveTemplates | None = None,
    ) -> None:
        self.repository = repository
        self.renderer = renderer
        self.default_language = normalize_language(default_language)
        self.active = active or ActiveTemplates(None)

    # -- reading

    async def resolve(self, code: str, language: str | None) -> Resolved:
        """The template of ``code`` in ``language`` or its fallback, with its active version."""
        candidates = await self.repository.live_with_active_version(code)
        if not candidates:
            raise TemplateNotFound(f"No template with code '{code}'.")
        by_language = {template.language: (template, version) for template, version in candidates}
        for tag in fallback_chain(language, self.default_language):
            if tag in by_language:
                template, version = by_language[tag]
                break
        else:
            template, version = candidates[0]  # the language the code was first created in
        return Resolved(template, version, language or self.default_language)

    async def get_version(self, code: str, language: str | None, number: int) -> Resolved:
        resolved = await self.resolve(code, language)
        if number == resolved.version.version:
            return resolved
        version = await self.repository.get_version(resolved.template.id, number)
        if version is None:
            raise VersionNotFound(
                f"Template '{code}' ({resolved.template.language}) has no version {number}."
            )
        return Resolved(resolved.template, version, resolved.requested_language)

    async def list_versions(
        self, code: str, language: str | None, *, offset: int, limit: int
    ) -> tuple[Resolved, Sequence[TemplateVersion], int]:
        resolved = await self.resolve(code, language)
        versions, total = await self.repository.list_versions(
            resolved.template.id, offset=offset, limit=limit
        )
        return resolved, versions, total

    # -- changing

    async def _live_for_update(self, code: str, language: str | None) -> Template:
        tag = language or self.default_language
        template = await self.repository.get_live(code, tag, for_update=True)
        if template is None:
            raise TemplateNotFound(f"No template with code '{code}' in language '{tag}'.")
        return template

    async def create(self, data: TemplateCreate, actor: str) -> Resolved:
        content = data.to_content(data.type)
        self.renderer.check_syntax(content)
        language = data.language or self.default_language
        await self.repository.lock_code(data.code)
        existing = await self.repository.live_with_active_version(data.code)
        if any(template.language == language for template, _ in existing):
            raise TemplateExists(
                f"Template '{data.code}' already exists in language '{language}'; "
                "update it with PUT to create a new version."
            )
        if existing and existing[0][0].type != data.type.value:
            raise TypeMismatch(
                f"Template '{data.code}' is a {existing[0][0].type} template in its other "
                f"languages; it cannot be {data.type.value} in '{language}'."
            )
        template = Template(
            code=data.code,
            language=language,
            type=data.type.value,
            name=data.name,
            description=data.description,
            active_version=1,
        )
        version = _new_version(template, 1, data.name, content, actor)
        try:
            await self.repository.add(template, version)
        except IntegrityError as exc:  # the lock makes this unlikely; the unique index decides
            raise TemplateExists(f"Template '{data.code}' ({language}) already exists.") from exc
        return Resolved(template, version)

    async def update(
        self, code: str, language: str | None, data: TemplateUpdate, actor: str
    ) -> Resolved:
        """Add a version made of the active one with the fields ``data`` sets."""
        sent = data.model_fields_set - {"activate", "change_note"}
        if not sent:
            raise NoChanges("Nothing to change: send content, subject, name or another field.")
        template = await self._live_for_update(code, language)
        current = await self.repository.get_version(template.id, template.active_version)
        assert current is not None  # active_version always names an existing version
        fields: dict[str, Any] = {name: getattr(current, name) for name in _CONTENT_FIELDS}
        fields.update({name: getattr(data, name) for name in _CONTENT_FIELDS if name in sent})
        if template.type == Channel.PUSH.value and "subject" in sent and "title" not in sent:
            fields["title"], fields["subject"] = data.subject, None  # subject: the title's alias
        try:
            content = build_content(Channel(template.type), **fields)
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None
        self.renderer.check_syntax(content)
        number = await self.repository.last_version_number(template.id) + 1
        version = _new_version(
            template, number, data.name or current.name, content, actor, data.change_note
        )
        if data.activate:
            template.active_version = number
            template.name = version.name
        if "description" in sent:
            template.description = data.description
        template.updated_at = utcnow()
        await self.repository.add(template, version)
        return Resolved(template, version)

    async def activate(self, code: str, language: str | None, number: int) -> tuple[Resolved, bool]:
        """Make version ``number`` the active one (a rollback when it is older). True if changed."""
        template = await self._live_for_update(code, language)
        version = await self.repository.get_version(template.id, number)
        if version is None:
            raise VersionNotFound(
                f"Template '{code}' ({template.language}) has no version {number}."
            )
        changed = template.active_version != number
        if changed:
            template.active_version = number
            template.name = version.name
            template.updated_at = utcnow()
            await self.repository.add(template)
        return Resolved(template, version), changed

    async def delete(self, code: str, language: str | None) -> Template:
        """Soft delete: the rows stay for the record, reads and renders no longer see them."""
        template = await self._live_for_update(code, language)
        template.deleted_at = template.updated_at = utcnow()
        await self.repository.add(template)
        return template

    # -- rendering

    async def render(
        self,
        code: str,
        language: str | None,
        variables: Mapping[str, Any],
        version: int | None = None,
    ) -> RenderResult:
        [outcome] = await self.render_many([RenderItem(code, variables, language, version)])
        if isinstance(outcome, AppError):
            raise outcome
        return outcome

    async def render_many(self, items: Sequence[RenderItem]) -> list[RenderOutcome]:
        """Render a batch: the active versions from memory where unchanged (one Redis read for
        the batch), every render in one worker-thread hop, each item's error kept to itself."""
        cache_versions = await self.active.versions(sorted({i.code for i in items}))
        templates: list[ActiveTemplate | AppError] = []
        for item in items:
            try:
                templates.append(await self._template_for(item, cache_versions.get(item.code)))
            except AppError as exc:
                templates.append(exc)
        jobs = [
            (t, item.variables)
            for t, item in zip(templates, items, strict=True)
            if not isinstance(t, AppError)
        ]
        rendered = iter(await asyncio.to_thread(self._render_all, jobs))
        return [t if isinstance(t, AppError) else next(rendered) for t in templates]

    async def _template_for(self, item: RenderItem, cache_version: int | None) -> ActiveTemplate:
        if item.version is None:
            cached = self.active.get(item.code, item.language, cache_version)
            if cached is not None:
                return cached
            resolved = await self.resolve(item.code, item.language)
        else:
            resolved = await self.get_version(item.code, item.language, item.version)
        template = resolved.template
        active = ActiveTemplate(
            code=template.code,
            version=resolved.version.version,
            language=template.language,
            content=version_content(template, resolved.version),
        )
        if item.version is None:
            self.active.put(item.code, item.language, cache_version, active)
        return active

    def _render_all(
        self, jobs: list[tuple[ActiveTemplate, Mapping[str, Any]]]
    ) -> list[RenderOutcome]:
        """Blocking (a worker thread): each render with its own budget, errors kept per item."""
        out: list[RenderOutcome] = []
        for template, variables in jobs:
            started = time.perf_counter()
            try:
                rendered = self.renderer.render_sync(template.content, variables)
            except AppError as exc:  # missing variable, render failure: this item's own fault
                RENDERS.labels(template.content.type.value, exc.code).inc()
                out.append(exc)
                continue
            RENDER_SECONDS.observe(time.perf_counter() - started)
            RENDERS.labels(template.content.type.value, "ok").inc()
            out.append(
                _result(
                    template.code, template.version, template.language, template.content, rendered
                )
            )
        return out

    async def preview(
        self, content: Content, variables: Mapping[str, Any], language: str | None
    ) -> RenderResult:
        """Render unsaved template fields (syntax errors are 400 as on save)."""
        self.renderer.check_syntax(content)
        return await self._render(
            content,
            variables,
            code="preview",
            version=0,
            language=language or self.default_language,
        )

    async def _render(
        self,
        content: Content,
        variables: Mapping[str, Any],
        *,
        code: str,
        version: int,
        language: str,
    ) -> RenderResult:
        started = time.perf_counter()
        try:
            rendered = await self.renderer.render(content, variables)
        except (MissingVariable, TemplateRenderFailed) as exc:
            RENDERS.labels(content.type.value, exc.code).inc()
            raise
        RENDER_SECONDS.observe(time.perf_counter() - started)
        RENDERS.labels(content.type.value, "ok").inc()
        return _result(code, version, language, content, rendered)


def _new_version(
    template: Template,
    number: int,
    name: str,
    content: Content,
    actor: str,
    change_note: str | None = None,
) -> TemplateVersion:
    return TemplateVersion(
        template_id=template.id,
        version=number,
        name=name,
        subject=content.subject,
        content=content.content,
        text=content.text,
        title=content.title,
        image=content.image,
        link=content.link,
        change_note=change_note,
        created_by=actor,
    )


def _result(
    code: str, version: int, language: str, content: Content, rendered: RenderedContent
) -> RenderResult:
    return RenderResult(
        code=code,
        version=version,
        language=language,
        type=content.type,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        title=rendered.title,
        body=rendered.body,
        image=rendered.image,
        link=rendered.link,
    )
