"""Routes of the gateway. Each validates, calls the domain, maps the result to the envelope."""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from gateway.intake import NotificationIntake
from gateway.schemas import (
    NotificationAccepted,
    NotificationRequest,
    NotificationStatus,
    StatusReport,
)
from libs.http.auth import Principal, Role, require_roles
from libs.http.envelope import Envelope, PageMeta, Pagination, ok
from libs.http.errors import Conflict, NotFound, RateLimited, ServiceUnavailable, Unprocessable
from libs.notification.message import Channel
from libs.notification.status import ALLOWED_FROM, Status
from libs.storage.ratelimit import TokenBuckets
from libs.storage.redis import Keys
from libs.storage.status_store import StatusStore

router = APIRouter(prefix="/api/v1", tags=["notifications"])

Sender = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SERVICE))]
Reader = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SERVICE, Role.USER))]
Reporter = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SERVICE))]


async def rate_limited(request: Request, principal: Sender) -> Principal:
    """One token bucket per caller, shared by all gateway replicas."""
    limits: TokenBuckets = request.app.state.rate_limits
    verdict = await limits.try_take(request.app.state.keys.rate_limit(f"gateway:{principal.sub}"))
    if not verdict.allowed:
        seconds = max(1, -(-verdict.retry_after_ms // 1000))
        raise RateLimited("Too many requests; slow down.", headers={"Retry-After": str(seconds)})
    return principal


LimitedSender = Annotated[Principal, Depends(rate_limited)]


@router.post(
    "/notifications/",
    status_code=202,
    response_model=Envelope[NotificationAccepted],
    summary="Send a notification (accepted once the broker confirmed it)",
    responses={
        409: {"description": "request_id reused with another body"},
        422: {"description": "Invalid body, unknown user or template"},
        429: {"description": "Rate limited"},
        503: {"description": "Broker unavailable: nothing was queued"},
    },
)
async def send_notification(
    body: NotificationRequest, request: Request, principal: LimitedSender
) -> JSONResponse:
    intake: NotificationIntake = request.app.state.intake
    try:
        accepted = await intake.submit(principal, body)
    except RedisError as exc:
        raise ServiceUnavailable(
            "The idempotency store is unavailable; nothing was queued.",
            code="redis_unavailable",
            headers={"Retry-After": "1"},
        ) from exc
    message = "Already accepted (idempotent replay)." if accepted.replayed else "Accepted."
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
    return JSONResponse(ok(accepted.data, message), status_code=202, headers=headers)


async def _find(request: Request, principal: Principal, ident: str) -> dict[str, Any]:
    status: StatusStore = request.app.state.status
    keys: Keys = request.app.state.keys
    record: dict[str, Any] | None = None
    with contextlib.suppress(ValueError):
        record = await status.get(str(uuid.UUID(ident)))
    if record is None:
        raw = await request.app.state.redis.get(keys.idempotency(principal.sub, ident))
        if raw is not None:
            response = orjson.loads(raw).get("response")
            if response:
                record = await status.get(response["notification_id"])
    if record is None or (principal.role is Role.USER and record["user_id"] != principal.sub):
        raise NotFound(f"No notification {ident!r}.", code="notification_not_found")
    return record


@router.get(
    "/notifications/{notification_id}",
    response_model=Envelope[NotificationStatus],
    summary="Status, attempts, provider, last error and timeline (by notification or request id)",
)
async def get_notification(
    notification_id: str, request: Request, principal: Reader
) -> dict[str, Any]:
    return ok(await _find(request, principal, notification_id))


@router.get(
    "/notifications/",
    response_model=Envelope[list[NotificationStatus]],
    summary="List notifications, newest first, filtered by user, type and status",
)
async def list_notifications(
    request: Request,
    principal: Reader,
    page: Annotated[Pagination, Depends()],
    user_id: Annotated[uuid.UUID | None, Query()] = None,
    notification_type: Annotated[Channel | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
) -> dict[str, Any]:
    store: StatusStore = request.app.state.status
    if principal.role is Role.USER:
        user_id = uuid.UUID(principal.sub)  # users see only their own notifications
    items, total = await store.search(
        user_id=str(user_id) if user_id else None,
        channel=notification_type,
        status=status,
        offset=page.offset,
        limit=page.limit,
    )
    return ok(items, meta=PageMeta.build(total, page.limit, page.page))


@router.post(
    "/{notification_type}/status/",
    response_model=Envelope[NotificationStatus],
    summary="Report a status: delivery services and provider callbacks (receipts, bounces)",
)
async def report_status(
    notification_type: Channel, body: StatusReport, request: Request, principal: Reporter
) -> dict[str, Any]:
    store: StatusStore = request.app.state.status
    nid = str(body.notification_id)
    record = await store.get(nid)
    if record is None:
        raise NotFound(f"No notification {nid}.", code="notification_not_found")
    if record["notification_type"] != notification_type.value:
        raise Unprocessable(
            f"Notification {nid} is a {record['notification_type']} notification.",
            code="type_mismatch",
        )
    allowed = set(ALLOWED_FROM[body.status])
    event = "receipt"
    if body.status is Status.FAILED:
        allowed.add(Status.DELIVERED)  # a bounce after the provider accepted the message
        event = "bounce" if record["status"] == Status.DELIVERED.value else "receipt"
    result = await store.transition(
        nid,
        body.status,
        event=event,
        service=f"report:{principal.sub}",
        allowed_from=allowed,
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
    return ok(await store.get(nid), "Status recorded.")
