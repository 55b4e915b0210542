"""The console's pages: server-rendered HTML (Jinja2, autoescaped) and one small JSON feed.

Every page needs a console session (else: the login page); every POST that changes something
checks the session's CSRF token first. Actions call the same :class:`DlqService` methods as the
REST API, with the logged-in admin as the audit actor, and answer with a redirect (post, redirect,
get), so reloading a page never repeats an action.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.datastructures import URL

from dlq_service.console import views
from dlq_service.console.sessions import (
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    LoginRefused,
    Session,
    authenticate,
)
from dlq_service.models import FailedState
from dlq_service.notifications import look_up
from dlq_service.repository import FailedFilter
from dlq_service.schemas import FailedListQuery, FailureFilter
from dlq_service.state import DlqState, State
from dlq_service.wording import REASONS
from libs.http.envelope import Envelope, PageMeta, ok
from libs.http.errors import AppError, Unauthorized, error_response

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
views.install_filters(templates.env)

PAGE_SIZE = 25

# Pages are ours alone: no inline script, no framing, nothing cached, no referrer sent out.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(include_in_schema=False)


class LoginRequired(Exception):
    """No valid console session: pages redirect to the login form."""


class CsrfRefused(Exception):
    """A state-changing form without this session's CSRF token."""


async def console_session(request: Request, state: State) -> Session:
    session = await state.sessions.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired
    return session


Operator = Annotated[Session, Depends(console_session)]


async def checked_form(request: Request, operator: Operator) -> Mapping[str, Any]:
    """The posted form, once its CSRF token matched the session's (else 403)."""
    form = await request.form()
    token = form.get("csrf_token")
    if not operator.csrf_matches(token if isinstance(token, str) else None):
        log.warning("console.csrf_refused", path=request.url.path, sub=operator.sub)
        raise CsrfRefused
    return form


CheckedForm = Annotated[Mapping[str, Any], Depends(checked_form)]


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
    operator: Session | None = None,
) -> HTMLResponse:
    context = {"operator": operator, "now": datetime.now(UTC), **context}
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def redirect(path: str, **notice: Any) -> RedirectResponse:
    url = URL(path)
    if notice:
        url = url.include_query_params(**{k: v for k, v in notice.items() if v is not None})
    return RedirectResponse(str(url), status_code=303)


def _safe_next(target: str | None) -> str:
    # Only paths on this site: never redirect a fresh login to another origin ("//host" and
    # "/\\host" are other origins to a browser).
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


# -- login ------------------------------------------------------------------------------------


def _login_page(
    request: Request, state: DlqState, *, error: str | None = None, status: int = 200
) -> HTMLResponse:
    cookie, field = state.sessions.login_form()
    response = render(
        request,
        "login.html",
        {
            "error": error,
            "login_token": field,
            "next": _safe_next(request.query_params.get("next")),
        },
        status_code=status,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=LOGIN_FORM_SECONDS,
        httponly=True,
        samesite="strict",
        secure=state.settings.session_cookie_secure,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, state: State) -> Response:
    if await state.sessions.read(request.cookies.get(SESSION_COOKIE)) is not None:
        return redirect("/")
    return _login_page(request, state)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    state: State,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    login_token: Annotated[str, Form(max_length=200)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2000)] = "/",
) -> Response:
    if not state.sessions.login_form_matches(request.cookies.get(LOGIN_COOKIE), login_token):
        return _login_page(
            request, state, error="The form expired; please log in again.", status=403
        )
    try:
        principal = await authenticate(
            state.http, state.settings.user_service_url, state.verifier, email, password
        )
    except LoginRefused as refused:
        log.info("console.login_refused", status=refused.status)
        return _login_page(request, state, error=refused.message, status=refused.status)
    cookie, _ = await state.sessions.open(principal, email)
    response = redirect(_safe_next(next_path))
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=state.sessions.ttl_seconds,
        httponly=True,
        samesite="strict",
        secure=state.settings.session_cookie_secure,
    )
    response.delete_cookie(LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request, state: State, _: CheckedForm) -> Response:
    await state.sessions.close(request.cookies.get(SESSION_COOKIE))
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


# -- failed messages --------------------------------------------------------------------------


def _list_query(params: Mapping[str, str]) -> tuple[FailedListQuery, str | None]:
    """The list's filters from the query string; empty fields mean "any"."""
    given = {k: v for k, v in params.items() if v != "" and k in FailedListQuery.model_fields}
    given.setdefault("limit", str(PAGE_SIZE))
    try:
        return FailedListQuery.model_validate(given), None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'filter'}: {e['msg']}" for e in exc.errors()
        )
        return FailedListQuery(limit=PAGE_SIZE), f"Filter ignored ({problems})."


@router.get("/", response_class=HTMLResponse)
async def failed_messages(request: Request, state: State, operator: Operator) -> HTMLResponse:
    query, filter_error = _list_query(request.query_params)
    rows, total = await state.dlq.search(
        query.failed_filter(), offset=query.offset, limit=query.limit
    )
    watched = await state.dlq.get_many(views.ids_in(request.query_params.get("watch", "")))
    statuses = await views.statuses_of(state.history, [*rows, *watched])
    stats = await state.dlq.stats()
    health = await views.delivery_health(state)
    return render(
        request,
        "index.html",
        {
            "query": query,
            "filters": views.filter_values(query),
            "filter_error": filter_error,
            "rows": rows,
            "watched": sorted(watched, key=lambda r: r.failed_at, reverse=True),
            "statuses": statuses,
            "page": PageMeta.build(total, query.limit, query.page),
            "stats": stats,
            "health": health,
            "jobs": state.jobs.recent()[:3],
            "notice": views.notice(request.query_params),
            "page_url": views.page_url(request),
            "list_url": views.list_url(request),
            "reasons": REASONS,
        },
        operator=operator,
    )


@router.get("/failed/{failed_id}", response_class=HTMLResponse)
async def failed_message(
    failed_id: uuid.UUID, request: Request, state: State, operator: Operator
) -> HTMLResponse:
    return await _detail(request, state, operator, failed_id)


async def _detail(
    request: Request,
    state: DlqState,
    operator: Session,
    failed_id: uuid.UUID,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    row, events = await state.dlq.get(failed_id)
    notification = (
        await state.history.get(str(row.notification_id)) if row.notification_id else None
    )
    return render(
        request,
        "detail.html",
        {
            "row": row,
            "events": events,
            "notification": notification,
            "payload": views.pretty_body(row),
            "explanation": views.explain(row),
            "notice": views.notice(request.query_params),
            "error": error,
        },
        status_code=status_code,
        operator=operator,
    )


@router.post("/failed/{failed_id}/republish")
async def republish_one(
    failed_id: uuid.UUID, state: State, operator: Operator, _: CheckedForm
) -> Response:
    await state.dlq.republish(failed_id, operator.sub)
    return redirect(f"/failed/{failed_id}", notice="republished")


@router.post("/failed/{failed_id}/discard", response_class=HTMLResponse)
async def discard_one(
    failed_id: uuid.UUID, request: Request, state: State, operator: Operator, form: CheckedForm
) -> Response:
    reason = str(form.get("reason") or "").strip()
    if not reason:
        return await _detail(
            request,
            state,
            operator,
            failed_id,
            error="Say why you discard it: the reason goes into the audit trail.",
            status_code=422,
        )
    await state.dlq.discard(failed_id, reason[:1000], operator.sub)
    return redirect(f"/failed/{failed_id}", notice="discarded")


@router.post("/republish/selected")
async def republish_selected(
    request: Request, state: State, operator: Operator, form: CheckedForm
) -> Response:
    back = _safe_next(str(form.get("back") or "/"))
    ids = views.ids_in(",".join(str(v) for v in (await request.form()).getlist("ids")))
    if not ids:
        return redirect(back, notice="nothing_selected")
    result = await state.dlq.republish_many(
        f=FailedFilter(), ids=ids, limit=len(ids), actor=operator.sub
    )
    # back to the list, watching what was republished until it is delivered
    return redirect(
        back,
        notice="republished_many",
        n=result.republished,
        skipped=result.skipped or None,
        watch=",".join(str(i) for i in result.republished_ids) or None,
    )


def _matching_filter(params: Mapping[str, str]) -> tuple[FailureFilter, FailedFilter]:
    query, _ = _list_query(params)
    fields = {k: getattr(query, k) for k in FailureFilter.model_fields}
    chosen = FailureFilter.model_validate(fields)
    return chosen, chosen.to_filter(FailedState.PENDING, None)


@router.get("/republish/matching", response_class=HTMLResponse)
async def confirm_republish_matching(
    request: Request, state: State, operator: Operator
) -> HTMLResponse:
    chosen, f = _matching_filter(request.query_params)
    preview = await state.dlq.republish_preview(f, None)
    return render(
        request,
        "confirm.html",
        {
            "preview": preview,
            "filters": {k: v for k, v in chosen.model_dump(mode="json").items() if v is not None},
            "back": "/?" + str(request.query_params),
        },
        operator=operator,
    )


@router.post("/republish/matching")
async def republish_matching(
    request: Request, state: State, operator: Operator, form: CheckedForm
) -> Response:
    params = {k: str(v) for k, v in form.items() if k not in ("csrf_token", "as_of", "expected")}
    _, f = _matching_filter(params)
    try:
        as_of = datetime.fromisoformat(str(form.get("as_of")))
        expected = int(str(form.get("expected")))
    except (TypeError, ValueError):
        return redirect("/", notice="expired")
    if expected <= 0:
        return redirect("/", notice="nothing_selected")
    job = state.jobs.start(f, as_of, expected, operator.sub)
    return redirect("/?" + views.encode_filters(params), notice="job_started", n=job.total)


# -- notifications ------------------------------------------------------------------------------


@router.get("/notifications", response_class=HTMLResponse)
async def notification_lookup(
    request: Request,
    state: State,
    operator: Operator,
    q: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    found = await look_up(state.history, state.dlq, q) if q.strip() else None
    return render(request, "lookup.html", {"q": q, "found": found}, operator=operator)


# -- the live feed the list polls -------------------------------------------------------------


@router.get("/console/live", response_model=Envelope[dict[str, Any]])
async def live(
    request: Request, state: State, ids: Annotated[str, Query(max_length=4000)] = ""
) -> Response:
    """Each listed message's state and its notification's status, pending totals, jobs."""
    if await state.sessions.read(request.cookies.get(SESSION_COOKIE)) is None:
        raise Unauthorized("Log in to the console first.", code="login_required")
    data = await views.live_data(state, views.ids_in(ids))
    body = ok(data).model_dump(mode="json")
    return Response(orjson.dumps(body), media_type="application/json", headers=SECURITY_HEADERS)


# -- wiring -----------------------------------------------------------------------------------


def install_console(app: FastAPI) -> None:
    """Static files and the console's own error pages (the API keeps its JSON envelope)."""
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    async def to_login(request: Request, _: Exception) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return redirect("/login", next=target if request.method == "GET" else None)

    async def csrf_refused(request: Request, _: Exception) -> Response:
        return render(
            request,
            "error.html",
            {
                "title": "Action refused",
                "message": "This form did not come from your console session (its CSRF token is "
                "missing or wrong). Go back, reload the page and try again.",
            },
            status_code=403,
        )

    app.add_exception_handler(LoginRequired, to_login)
    app.add_exception_handler(CsrfRefused, csrf_refused)

    # Errors on console pages render as pages; the REST API keeps its JSON envelope.
    async def app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        if request.url.path.startswith(("/api/", "/console/")):
            return error_response(exc.status_code, exc.code, exc.message, exc.data, exc.headers)
        return render(
            request,
            "error.html",
            {"title": "That did not work", "message": exc.message},
            status_code=exc.status_code,
        )

    app.add_exception_handler(AppError, app_error)
