"""Tables of user_service (SQLModel). The schema itself is created by the Alembic migrations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

TIMESTAMP = DateTime(timezone=True)


def utcnow() -> datetime:
    return datetime.now(UTC)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320, unique=True)  # stored lower-case
    password_hash: str = Field(sa_type=Text)
    role: str = Field(max_length=16)
    language: str = Field(default="en", max_length=35)
    email_enabled: bool = True
    push_enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=TIMESTAMP)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=TIMESTAMP)


class PushToken(SQLModel, table=True):
    """A device of a user. ``pruned_at`` set means the provider said the token is dead."""

    __tablename__ = "push_tokens"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    token: str = Field(max_length=1024, unique=True)  # one owner per device token
    platform: str | None = Field(default=None, max_length=16)
    device_name: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=TIMESTAMP)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=TIMESTAMP)
    pruned_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    pruned_reason: str | None = Field(default=None, max_length=200)


class SigningKey(SQLModel, table=True):
    """An RS256 key pair, published in the JWKS until ``retired_at`` has passed.

    The active (signing) key is the most recently activated key without ``retired_at``. A rotation
    sets the previous key's ``retired_at`` to when the last token it signed expires, so it keeps
    verifying until then; retiring a key by hand sets ``retired_at`` to now.
    """

    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True, max_length=64)
    # None once the key stops signing: a replaced key only verifies, so it needs no secret.
    private_key_pem: str | None = Field(default=None, sa_type=Text)
    public_jwk: dict[str, Any] = Field(sa_type=JSON().with_variant(JSONB(), "postgresql"))
    created_at: datetime = Field(default_factory=utcnow, sa_type=TIMESTAMP)
    activated_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    retired_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)


class Client(SQLModel, table=True):
    """A client backend: it exchanges its id and secret for short-lived ``client`` tokens.

    Only an argon2id hash of the secret is kept (the secret is shown once, at creation). A revoked
    client gets no new token; revocation is never undone (create a new client instead).
    """

    __tablename__ = "clients"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=200)
    secret_hash: str = Field(sa_type=Text)
    created_by: str = Field(max_length=64)  # the admin's token subject
    created_at: datetime = Field(default_factory=utcnow, sa_type=TIMESTAMP)
    last_token_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
    revoked_at: datetime | None = Field(default=None, sa_type=TIMESTAMP)
