"""Routes of the gateway. Each validates, calls the domain, maps the result to the envelope."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from redis.exceptions import RedisError

from gateway.access import (
    READERS,
    REPORTERS,
    SENDERS,
    admit,
    admitted,
    list_scope,
    may_see,
    shown_to,
)
from gateway.intake import Accepted
from gateway.schemas import (
    BatchAccepted,
    BatchItem,
    ItemError,
    NotificationAccepted,
    NotificationBatch,
    NotificationRequest,
    StatusReport,
)
from gateway.state import GatewayState, State, gateway_state
from libs.http.auth import Credentials, Principal, bearer
from libs.http.envelope import Envelope, PageMeta, Pagination, envelope_response, ok
from libs.http.errors import (
    AppError,
    Conflict,
    NotFound,
    RateLimited,
    Unprocessable,
    validation_details,
)
from libs.http.hot import HotRoute, read_json_body, validated
from libs.notification.message import Channel
from libs.notification.status import (
    Status,
    StatusRecord,
    receipt_allowed_from,
    receipt_event,
)
from libs.trusted import trusted

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/api/v1", tags=["notifications"])

Sender = Annotated[Principal, Depends(admitted(*SENDERS))]
_SENDERS = frozenset(SENDERS)
Reader = Annotated[Principal, Depends(admitted(*READERS))]
Reporter = Annotated[Principal, Depends(admitted(*REPORTERS))]


async def _take(state: GatewayState, principal: Principal, notifications: int = 1) -> None:
    """One token bucket per caller, shared by all gateway replicas; a token per notification."""
    key = state.keys.caller_rate_limit(principal.sub)
    verdict = await state.rate_limits.try_take(key, notifications)
    if not verdict.allowed:
        seconds = max(1, -(-verdict.retry_after_ms // 1000))
        raise RateLimited("Too many requests; slow down.", headers={"Retry-After": str(seconds)})


async def rate_limited(request: Request, credentials: Credentials) -> Principal:
    """A sender (:func:`admit`) with a token taken from its bucket."""
    principal = await admit(request, credentials, _SENDERS)
    await _take(gateway_state.of(request), principal)
    return principal


LimitedSender = Annotated[Principal, Depends(rate_limited)]


@router.post(
    "/notifications/",
    status_code=202,
    response_model=Envelope[NotificationAccepted],
    summary="Send a notification (accepted once the broker confirmed it)",
    responses={
        409: {"description": "request_id reused with another body, or still in progress (retry)"},
        422: {"description": "Invalid body, unknown user or template"},
        429: {"description": "Rate limited"},
        503: {"description": "Not accepted (broker or Redis unavailable): retry, same request_id"},
    },
)
async def send_notification(
    body: NotificationRequest, state: State, principal: LimitedSender
) -> Response:
    """Declared for the OpenAPI document; :func:`send_notification_hot` answers (the same)."""
    return await _accept_one(state, principal, body)


async def send_notification_hot(request: Request) -> Response:
    """``POST /api/v1/notifications/`` as a hot route (libs/http/hot.py): the busiest route, in
    the steps and with the errors of :func:`send_notification` declared above."""
    raw = await read_json_body(request)
    principal = await rate_limited(request, await bearer(request))
    body = validated(NotificationRequest, raw)
    return await _accept_one(gateway_state.of(request), principal, body)


HOT_ROUTES = [HotRoute("/api/v1/notifications/", send_notification_hot, methods=["POST"])]


async def _accept_one(
    state: GatewayState, principal: Principal, body: NotificationRequest
) -> Response:
    accepted = await state.intake.submit(principal, body)  # its errors are the answers
    message = "Already accepted (idempotent replay)." if accepted.replayed else "Accepted."
    if not accepted.remembered:
        message = (
            "Accepted. The request_id could not be recorded; a retry with it is still "
            "delivered once."
        )
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
    return envelope_response(ok(accepted.response, message), status_code=202, headers=headers)


@router.post(
    "/notifications/batch",
    status_code=202,
    response_model=Envelope[BatchAccepted],
    summary="Send up to 1,000 notifications; each is answered as it would be alone",
    responses={
        207: {
            "model": Envelope[BatchAccepted],
            "description": "Some items were refused (see each item's error); the rest queued",
        },
        413: {"description": "Body over BATCH_MAX_BODY_BYTES"},
        422: {"description": "Not a batch: no list, empty, or over 1,000 items"},
        429: {"description": "Rate limited: a token per notification, for the whole batch"},
    },
)
async def send_batch(body: NotificationBatch, state: State, principal: Sender) -> Response:
    """202 when every item was accepted (or replayed); 207 when some were refused. An item is
    never reported accepted unless the broker confirmed it; refused items were not queued and may
    be retried with the same request_id (idempotency holds per item, as for single requests)."""
    if len(body.notifications) > state.settings.rate_limit_burst:
        raise Unprocessable(
            f"A batch may hold at most RATE_LIMIT_BURST ({state.settings.rate_limit_burst}) "
            "notifications: the rate limit counts each one.",
            code="batch_too_large",
        )
    await _take(state, principal, len(body.notifications))
    items: list[BatchItem | None] = [None] * len(body.notifications)
    valid: list[tuple[int, NotificationRequest]] = []
    for index, raw in enumerate(body.notifications):
        try:
            valid.append((index, NotificationRequest.model_validate(raw)))
        except ValidationError as exc:
            request_id = raw.get("request_id")
            items[index] = BatchItem(
                index=index,
                request_id=request_id if isinstance(request_id, str) else None,
                outcome="refused",
                error=ItemError(
                    status=422,
                    code="validation_error",
                    message="The notification is invalid.",
                    details=validation_details(exc),
                ),
            )
    answers = await state.intake.submit_many(principal, [request for _, request in valid])
    for (index, request), answer in zip(valid, answers, strict=True):
        items[index] = _batch_item(index, request, answer)
    done = [item for item in items if item is not None]
    counts = Counter(item.outcome for item in done)
    result = BatchAccepted(
        accepted=counts["accepted"],
        replayed=counts["replayed"],
        refused=counts["refused"],
        items=done,
    )
    message = f"{result.accepted} accepted, {result.replayed} replayed, {result.refused} refused."
    return envelope_response(ok(result, message), status_code=207 if result.refused else 202)


def _batch_item(index: int, request: NotificationRequest, answer: Accepted | AppError) -> BatchItem:
    if isinstance(answer, AppError):
        error = ItemError(
            status=answer.status_code, code=answer.code, message=answer.message, details=answer.data
        )
        return BatchItem(index=index, request_id=request.request_id, outcome="refused", error=error)
    # (trusted: every value comes from validated models; this runs per notification)
    return trusted(
        BatchItem,
        index=index,
        request_id=request.request_id,
        outcome="replayed" if answer.replayed else "accepted",
        notification_id=answer.response.notification_id,
        status=answer.response.status,
        created_at=answer.response.created_at,
        error=None,
    )


async def _find(state: GatewayState, principal: Principal, ident: str) -> StatusRecord:
    """By notification id or the caller's request_id: Redis (the hot status) first, then the
    durable log in PostgreSQL (after the retention, or if Redis lost its data or is away)."""
    nid: str | None = None
    with contextlib.suppress(ValueError):
        nid = str(uuid.UUID(ident))
    record = await _hot(state, principal, nid, ident)
    if record is None:
        if nid is None:
            nid = await state.history.find_request(principal.sub, ident)
        if nid is not None:
            record = await state.history.get(nid)
    if record is None or not may_see(principal, record):
        raise NotFound(f"No notification {ident!r}.", code="notification_not_found")
    return record


async def _hot(
    state: GatewayState, principal: Principal, nid: str | None, ident: str
) -> StatusRecord | None:
    try:
        if nid is None:
            nid = await state.intake.notification_id_for(principal, ident)
        return None if nid is None else await state.status.get(nid)
    except RedisError as exc:
        log.warning("status.read_from_history", error=repr(exc))
        return None


@router.get(
    "/notifications/{notification_id}",
    response_model=Envelope[StatusRecord],
    summary="Status, attempts, provider, last error and timeline (by notification or request id)",
)
async def get_notification(
    notification_id: str, state: State, principal: Reader
) -> Envelope[StatusRecord]:
    return ok(shown_to(principal, await _find(state, principal, notification_id)))


@router.get(
    "/notifications/",
    response_model=Envelope[list[StatusRecord]],
    summary="List notifications, newest first, filtered by user, type and status",
)
async def list_notifications(
    state: State,
    principal: Reader,
    page: Annotated[Pagination, Depends()],
    user_id: Annotated[uuid.UUID | None, Query()] = None,
    notification_type: Annotated[Channel | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
) -> Envelope[list[StatusRecord]]:
    scope = list_scope(principal, user_id)
    items, total = await state.history.search(
        user_id=scope.user_id,
        owner=scope.owner,
        channel=notification_type,
        status=status,
        offset=page.offset,
        limit=page.limit,
    )
    shown = [shown_to(principal, item) for item in await _fresher(state, items)]
    return ok(shown, meta=PageMeta.build(total, page.limit, page.page))


async def _fresher(state: GatewayState, items: list[StatusRecord]) -> list[StatusRecord]:
    """The page from the durable log, with each status as Redis has it now (the log may trail
    by the recorder's batch interval); one round trip for the page, nothing if Redis is away."""
    try:
        hot = await state.status.get_many([str(item.notification_id) for item in items])
    except RedisError as exc:
        log.warning("status.list_from_history_only", error=repr(exc))
        return items
    return [hot.get(str(item.notification_id), item) for item in items]


@router.post(
    "/{notification_type}/status/",
    response_model=Envelope[StatusRecord],
    summary="Report a status: delivery services and provider callbacks (receipts, bounces)",
)
async def report_status(
    notification_type: Channel, body: StatusReport, state: State, principal: Reporter
) -> Envelope[StatusRecord]:
    store = state.status
    nid = str(body.notification_id)
    record = await store.get(nid)
    if record is None or not may_see(principal, record):
        raise NotFound(f"No notification {nid}.", code="notification_not_found")
    if record.notification_type is not notification_type:
        raise Unprocessable(
            f"Notification {nid} is a {record.notification_type} notification.",
            code="type_mismatch",
        )
    result = await store.transition(
        nid,
        body.status,
        event=receipt_event(record.status, body.status),
        service=f"report:{principal.sub}",
        allowed_from=receipt_allowed_from(body.status),
        provider=body.provider,
        error=body.error,
        details={"reported_at": body.timestamp.isoformat()},
    )
    if not result.applied:
        raise Conflict(
            f"Cannot move from {result.previous} to {body.status}.",
            code="invalid_transition",
            data={"current_status": result.previous},
        )
    updated = await store.get(nid) or record  # (None only if it expired this very moment)
    return ok(shown_to(principal, updated), "Status recorded.")
