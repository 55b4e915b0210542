"""The gateway's visibility rule, one pure function for every route that shows a notification."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from gateway.access import REDACTED, ListScope, list_scope, may_see, shown_to
from libs.http.auth import Principal, Role
from libs.notification.message import Channel
from libs.notification.status import Status, StatusRecord, TimelineEvent

pytestmark = pytest.mark.unit

# fixed, not random: pytest-xdist needs every worker to collect the same test ids
USER, SHOP = "0d5c7a1e-52a4-4c3e-9b11-3f6f0f3e2a01", "9a0e6f4b-1c2d-4e5f-8a9b-0c1d2e3f4a02"


def _record(owner: str | None = SHOP, error: str | None = None) -> StatusRecord:
    now = datetime.now(UTC)
    return StatusRecord(
        notification_id=uuid.uuid4(),
        request_id="r-1",
        notification_type=Channel.EMAIL,
        user_id=uuid.UUID(USER),
        template_code="welcome",
        status=Status.FAILED,
        last_error=error,
        owner=owner,
        created_at=now,
        updated_at=now,
        timeline=[TimelineEvent(at=now, event="failed", status=Status.FAILED, error=error)],
    )


def _as(role: Role, sub: str) -> Principal:
    return Principal(sub=sub, role=role, jti="j", exp=0)


@pytest.mark.parametrize(
    ("principal", "owner", "visible"),
    [
        (_as(Role.ADMIN, "ops"), SHOP, True),
        (_as(Role.SERVICE, "svc"), None, True),
        (_as(Role.CLIENT, SHOP), SHOP, True),
        (_as(Role.CLIENT, str(uuid.uuid4())), SHOP, False),
        (_as(Role.CLIENT, SHOP), None, False),  # recreated by a consumer: no known sender
        (_as(Role.CLIENT, USER), SHOP, False),  # a client id is not a user id
        (_as(Role.USER, USER), SHOP, True),
        (_as(Role.USER, str(uuid.uuid4())), SHOP, False),
    ],
)
def test_who_sees_a_notification(principal, owner, visible):
    assert may_see(principal, _record(owner=owner)) is visible


def test_listing_is_scoped_to_the_caller():
    wanted = uuid.uuid4()

    assert list_scope(_as(Role.USER, USER), wanted) == ListScope(user_id=USER, owner=None)
    assert list_scope(_as(Role.CLIENT, SHOP), wanted) == ListScope(user_id=str(wanted), owner=SHOP)
    assert list_scope(_as(Role.CLIENT, SHOP), None) == ListScope(user_id=None, owner=SHOP)
    assert list_scope(_as(Role.ADMIN, "ops"), None) == ListScope(user_id=None, owner=None)


def test_a_client_sees_provider_errors_without_addresses_or_device_tokens():
    token = "d" * 40 + ":APA91b" + "x" * 100
    error = f"550 <first.last+tag@mail.example.co.uk> refused; token {token} UNREGISTERED"
    record = _record(error=error)

    shown = shown_to(_as(Role.CLIENT, SHOP), record)

    assert shown.last_error == f"550 <{REDACTED}> refused; token {REDACTED} UNREGISTERED"
    assert shown.timeline[0].error == shown.last_error
    assert shown_to(_as(Role.ADMIN, "ops"), record).last_error == error
    assert shown_to(_as(Role.CLIENT, SHOP), _record(error="421 try later")).last_error == (
        "421 try later"
    )
