"""``trusted`` makes the instance ``model_construct`` makes, for the models the gateway builds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.idempotency import IdempotencyRecord
from gateway.schemas import BatchItem, NotificationAccepted
from libs.notification.status import Status
from libs.trusted import trusted

pytestmark = pytest.mark.unit  # needs no server


def test_the_instance_is_what_model_construct_makes() -> None:
    accepted: dict[str, Any] = {
        "notification_id": uuid.uuid4(),
        "request_id": "r-1",
        "status": Status.PENDING,
        "created_at": datetime.now(UTC),
    }
    ours = trusted(NotificationAccepted, **accepted)
    theirs = NotificationAccepted.model_construct(**accepted)
    assert ours == theirs
    assert ours.model_dump_json() == theirs.model_dump_json()
    assert ours.model_fields_set == theirs.model_fields_set
    record: dict[str, Any] = {
        "state": "accepted",
        "fingerprint": "f",
        "notification_id": None,
        "response": ours,
    }
    assert trusted(IdempotencyRecord, **record).encode() == (
        IdempotencyRecord.model_construct(**record).encode()
    )
    item: dict[str, Any] = {
        "index": 3,
        "request_id": "r-1",
        "outcome": "accepted",
        "notification_id": accepted["notification_id"],
        "status": Status.PENDING,
        "created_at": accepted["created_at"],
        "error": None,
    }
    assert trusted(BatchItem, **item).model_dump_json() == BatchItem(**item).model_dump_json()
    # frozen models stay frozen
    with pytest.raises(ValueError, match="frozen"):
        trusted(IdempotencyRecord, **record).state = "pending"  # type: ignore[misc]


def test_values_must_name_every_field() -> None:
    with pytest.raises(ValueError, match=r"missing \['response'\]"):
        trusted(IdempotencyRecord, state="pending", fingerprint="f", notification_id="n")
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        trusted(
            IdempotencyRecord,
            state="pending",
            fingerprint="f",
            notification_id="n",
            response=None,
            extra=1,
        )
