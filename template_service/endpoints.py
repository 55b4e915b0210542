"""HTTP routes under ``/api/v1/templates``: validate, call the domain, map the result.

Reads take an optional ``language`` and fall back (``pt-BR`` -> ``pt`` -> default -> any); changes
(PUT, activate, DELETE) act on exactly the given language, or on the default language when none is
given. After a change the route commits and only then bumps the ``template`` cache version, so that
a reader cannot cache old content under the new version.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Path, Query
from redis.exceptions import RedisError

from libs.clients.templates import TEMPLATE_CACHE
from libs.http.auth import Principal, Role, require_roles
from libs.http.envelope import Envelope, PageMeta, Pagination, ok
from libs.http.errors import AppError
from libs.http.sessions import SessionDep
from libs.notification.message import Channel
from template_service.repository import TemplateRepository
from template_service.schemas import (
    CODE_PATTERN,
    MAX_VERSION,
    LanguageTag,
    PreviewRequest,
    RenderBatchOutcome,
    RenderBatchRequest,
    RenderRequest,
    RenderResult,
    TemplateCreate,
    TemplateRead,
    TemplateUpdate,
)
from template_service.service import RenderItem, Resolved, TemplateService
from template_service.state import State, TemplateServiceState

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1/templates", tags=["templates"])

Admin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
Reader = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SERVICE))]
CodePath = Annotated[str, Path(pattern=CODE_PATTERN, max_length=100, examples=["welcome"])]
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION)]
LanguageQuery = Annotated[
    LanguageTag | None,
    Query(description="Reads fall back pt-BR -> pt -> default; changes use exactly this one."),
]
PageQuery = Annotated[Pagination, Query()]


async def get_service(state: State, session: SessionDep) -> TemplateService:
    """``async``: a plain function dependency would be run in a worker thread for each request."""
    return TemplateService(
        TemplateRepository(session),
        state.renderer,
        state.settings.default_language,
        state.active,
    )


Templates = Annotated[TemplateService, Depends(get_service)]

STALE_CACHE_WARNING = (
    "Saved, but cached renders could not be invalidated; they may show the previous content "
    "until they expire."
)


async def commit_and_invalidate(
    state: TemplateServiceState, session: SessionDep, code: str
) -> str | None:
    """Commit, then bump the cache version of ``code``; a warning message if the bump failed."""
    await session.commit()
    try:
        await state.cache.bump(TEMPLATE_CACHE, code)
    except RedisError as exc:
        log.error("template.cache_bump_failed", code=code, error=repr(exc))
        return STALE_CACHE_WARNING
    return None


def _read(resolved: Resolved) -> TemplateRead:
    return TemplateRead.of(resolved.template, resolved.version, resolved.requested_language)


@router.post(
    "/",
    status_code=201,
    response_model=Envelope[TemplateRead],
    summary="Create a template (version 1) in one language",
)
@router.post("", status_code=201, response_model=Envelope[TemplateRead], include_in_schema=False)
async def create_template(
    principal: Admin,
    body: TemplateCreate,
    templates: Templates,
    state: State,
    session: SessionDep,
) -> Envelope[TemplateRead]:
    resolved = await templates.create(body, principal.sub)
    warning = await commit_and_invalidate(state, session, body.code)
    log.info("template.created", code=body.code, language=resolved.template.language)
    return ok(_read(resolved), message=warning or "Template created.")


@router.get(
    "/",
    response_model=Envelope[list[TemplateRead]],
    summary="List templates (active versions) with filters and pagination",
)
@router.get("", response_model=Envelope[list[TemplateRead]], include_in_schema=False)
async def list_templates(
    _: Reader,
    templates: Templates,
    page: PageQuery,
    type: Annotated[Channel | None, Query()] = None,
    language: Annotated[LanguageTag | None, Query(description="Exact language")] = None,
    code: Annotated[str | None, Query(max_length=100, description="Part of the code")] = None,
) -> Envelope[list[TemplateRead]]:
    rows, total = await templates.repository.list_active(
        type=type, language=language, code_contains=code, offset=page.offset, limit=page.limit
    )
    items = [TemplateRead.of(template, version) for template, version in rows]
    return ok(items, meta=PageMeta.build(total, page.limit, page.page))


@router.post(
    "/preview",
    response_model=Envelope[RenderResult],
    summary="Render template fields without saving them",
)
async def preview_template(
    _: Admin, body: PreviewRequest, templates: Templates
) -> Envelope[RenderResult]:
    result = await templates.preview(body.to_content(body.type), body.variables, body.language)
    return ok(result)


@router.get(
    "/{code}",
    response_model=Envelope[TemplateRead],
    summary="The active version, in the requested language or its fallback",
)
async def get_template(
    _: Reader, code: CodePath, templates: Templates, language: LanguageQuery = None
) -> Envelope[TemplateRead]:
    return ok(_read(await templates.resolve(code, language)))


@router.put(
    "/{code}",
    response_model=Envelope[TemplateRead],
    summary="Create a new version (active by default); older versions are kept",
)
async def update_template(
    principal: Admin,
    code: CodePath,
    body: TemplateUpdate,
    templates: Templates,
    state: State,
    session: SessionDep,
    language: LanguageQuery = None,
) -> Envelope[TemplateRead]:
    resolved = await templates.update(code, language, body, principal.sub)
    warning = await commit_and_invalidate(state, session, code)
    log.info(
        "template.version_created",
        code=code,
        language=resolved.template.language,
        version=resolved.version.version,
        active=resolved.version.version == resolved.template.active_version,
    )
    return ok(_read(resolved), message=warning or f"Version {resolved.version.version} created.")


@router.delete("/{code}", response_model=Envelope[None], summary="Delete one language (soft)")
async def delete_template(
    principal: Admin,
    code: CodePath,
    templates: Templates,
    state: State,
    session: SessionDep,
    language: LanguageQuery = None,
) -> Envelope[None]:
    template = await templates.delete(code, language)
    warning = await commit_and_invalidate(state, session, code)
    log.info("template.deleted", code=code, language=template.language, by=principal.sub)
    return ok(None, message=warning or f"Template '{code}' ({template.language}) deleted.")


@router.get(
    "/{code}/versions",
    response_model=Envelope[list[TemplateRead]],
    summary="Versions of a template, newest first",
)
async def list_versions(
    _: Reader,
    code: CodePath,
    templates: Templates,
    page: PageQuery,
    language: LanguageQuery = None,
) -> Envelope[list[TemplateRead]]:
    resolved, versions, total = await templates.list_versions(
        code, language, offset=page.offset, limit=page.limit
    )
    items = [
        TemplateRead.of(resolved.template, version, resolved.requested_language)
        for version in versions
    ]
    return ok(items, meta=PageMeta.build(total, page.limit, page.page))


@router.get(
    "/{code}/versions/{version}", response_model=Envelope[TemplateRead], summary="One version"
)
async def get_version(
    _: Reader,
    code: CodePath,
    version: VersionPath,
    templates: Templates,
    language: LanguageQuery = None,
) -> Envelope[TemplateRead]:
    return ok(_read(await templates.get_version(code, language, version)))


@router.post(
    "/{code}/versions/{version}/activate",
    response_model=Envelope[TemplateRead],
    summary="Make a version the active one (rollback or roll forward)",
)
async def activate_version(
    principal: Admin,
    code: CodePath,
    version: VersionPath,
    templates: Templates,
    state: State,
    session: SessionDep,
    language: LanguageQuery = None,
) -> Envelope[TemplateRead]:
    resolved, changed = await templates.activate(code, language, version)
    if not changed:
        return ok(_read(resolved), message=f"Version {version} is already active.")
    warning = await commit_and_invalidate(state, session, code)
    log.info(
        "template.activated",
        code=code,
        language=resolved.template.language,
        version=version,
        by=principal.sub,
    )
    return ok(_read(resolved), message=warning or f"Version {version} is now active.")


@router.post(
    "/{code}/render",
    response_model=Envelope[RenderResult],
    summary="Render the active (or a given) version with variables",
)
async def render_template(
    _: Reader, code: CodePath, body: RenderRequest, templates: Templates
) -> Envelope[RenderResult]:
    result = await templates.render(code, body.language, body.variables, body.version)
    return ok(result)


renders_router = APIRouter(prefix="/api/v1/renders", tags=["templates"])


@renders_router.post(
    "",
    response_model=Envelope[list[RenderBatchOutcome]],
    summary="Render many templates in one call; each item answers on its own",
)
async def render_batch(
    _: Reader, body: RenderBatchRequest, templates: Templates
) -> Envelope[list[RenderBatchOutcome]]:
    outcomes = await templates.render_many(
        [RenderItem(i.code, i.variables, i.language, i.version) for i in body.items]
    )
    return ok(
        [
            RenderBatchOutcome(ok=False, error=o.code, message=o.message)
            if isinstance(o, AppError)
            else RenderBatchOutcome(ok=True, result=o)
            for o in outcomes
        ]
    )
