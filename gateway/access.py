"""Who may do what at the gateway, and which notifications each caller sees.

- ``admin`` and ``service`` send, read every notification and report receipts for any.
- ``client`` (a client backend) sends, and reads, lists and reports receipts only for the
  notifications it sent (the status record's ``owner`` is the sender's token ``sub``). It never
  sees users' email addresses or device tokens: provider errors shown to it are redacted.
- ``user`` reads and lists only the notifications addressed to itself.

A notification the caller may not see is answered 404, exactly like one that does not exist, so
ids do not leak. A client revoked in user_service is refused at once (401 ``token_revoked``),
though its token has not expired yet: user_service lists revoked clients in Redis for as long as
their tokens may live.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from gateway.state import gateway_state
from libs.http.auth import Credentials, Principal, Role, authenticate, check_role
from libs.http.errors import Unauthorized
from libs.notification.status import StatusRecord, TimelineEvent

SENDERS = (Role.ADMIN, Role.SERVICE, Role.CLIENT)
READERS = (Role.ADMIN, Role.SERVICE, Role.CLIENT, Role.USER)
REPORTERS = (Role.ADMIN, Role.SERVICE, Role.CLIENT)
SEES_EVERYTHING = frozenset({Role.ADMIN, Role.SERVICE})


async def admit(request: Request, credentials: Credentials, allowed: frozenset[Role]) -> Principal:
    """The caller, if its token holds, its role is ``allowed`` (403 otherwise) and, for a client,
    its credentials were not revoked. Every gateway route's authentication is this one call: a
    chain of dependencies would cost FastAPI a resolution step each, on every request."""
    principal = check_role(await authenticate(request, credentials), allowed)
    if principal.role is Role.CLIENT:
        state = gateway_state.of(request)
        if await state.redis.exists(state.keys.revoked_client(principal.sub)):
            raise Unauthorized("This client's credentials were revoked.", code="token_revoked")
    return principal


def admitted(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting the given roles (:func:`admit`)."""
    allowed = frozenset(roles)

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        return await admit(request, credentials, allowed)

    return dependency


def may_see(principal: Principal, record: StatusRecord) -> bool:
    """The visibility rule: every route that shows a notification asks this."""
    if principal.role in SEES_EVERYTHING:
        return True
    if principal.role is Role.CLIENT:
        return record.owner is not None and record.owner == principal.sub
    if principal.role is Role.USER:
        return str(record.user_id) == principal.sub
    return False


@dataclass(frozen=True)
class ListScope:
    """The filters a listing must apply for this caller, on top of the ones it asked for."""

    user_id: str | None
    owner: str | None


def list_scope(principal: Principal, user_id: uuid.UUID | None) -> ListScope:
    """What ``principal`` may list: a user only their own notifications, a client only those it
    sent (filtered further by ``user_id`` if it asks), admin and service everything."""
    if principal.role is Role.USER:
        return ListScope(user_id=principal.sub, owner=None)
    owner = principal.sub if principal.role is Role.CLIENT else None
    return ListScope(user_id=str(user_id) if user_id else None, owner=owner)


# An email address, or a long opaque token (FCM registration tokens are ~150 characters).
_PERSONAL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|[A-Za-z0-9_:-]{64,}")
REDACTED = "<redacted>"


def _redact(text: str | None) -> str | None:
    return None if text is None else _PERSONAL.sub(REDACTED, text)


def shown_to(principal: Principal, record: StatusRecord) -> StatusRecord:
    """``record`` as ``principal`` may see it: a client gets provider errors with addresses and
    device tokens taken out (a relay's 550 names the recipient)."""
    if principal.role is not Role.CLIENT:
        return record
    timeline = [
        TimelineEvent.model_validate(event.model_dump() | {"error": _redact(event.error)})
        for event in record.timeline
    ]
    return record.model_copy(
        update={"last_error": _redact(record.last_error), "timeline": timeline}
    )
