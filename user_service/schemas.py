"""Request and response bodies (snake_case). Request bodies refuse unknown fields."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
)

from libs.http.auth import Role
from libs.http.envelope import Envelope
from user_service.security import KeyStatus

Platform = Literal["android", "ios", "web"]

_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def _canonical_language(value: str) -> str:
    """BCP 47 casing (``pt-br`` -> ``pt-BR``, ``zh-hant`` -> ``zh-Hant``) so lookups match."""
    if not _LANGUAGE.match(value):
        raise ValueError("must be a language tag such as 'en' or 'pt-BR'")
    first, *rest = value.split("-")
    parts = [first.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            parts.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            parts.append(part.title())
        else:
            parts.append(part.lower())
    return "-".join(parts)


def _lower_email(value: str) -> str:
    return value.lower()


def _account_role(role: Role) -> Role:
    if role is Role.CLIENT:
        raise ValueError("client backends are not accounts; create them at /api/v1/clients/")
    return role


ACCOUNT_ROLES = [Role.ADMIN.value, Role.SERVICE.value, Role.USER.value]
AccountRole = Annotated[
    Role,
    AfterValidator(_account_role),
    WithJsonSchema({"type": "string", "enum": ACCOUNT_ROLES}),
]
"""The roles a user account can have (``client`` belongs to client backends, not accounts)."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Email = Annotated[EmailStr, AfterValidator(_lower_email)]
Language = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=35),
    AfterValidator(_canonical_language),
]
# The password policy (length, letters, digits) is checked by the domain, which names the rule
# broken; this bound only keeps absurd inputs away from the hasher.
Password = Annotated[str, Field(max_length=1024)]
DeviceToken = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)
]
DeviceName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------
# Requests


class PreferencesIn(RequestBody):
    email: StrictBool = True
    push: StrictBool = True


class PreferencesPatch(RequestBody):
    email: StrictBool | None = None
    push: StrictBool | None = None


class UserCreate(RequestBody):
    name: Name
    email: Email
    password: Password
    push_token: DeviceToken | None = None
    preferences: PreferencesIn = Field(default_factory=PreferencesIn)
    language: Language = "en"
    role: AccountRole = Role.USER


class UserUpdate(RequestBody):
    """Fields left out (or null) stay as they are."""

    name: Name | None = None
    email: Email | None = None
    language: Language | None = None
    role: AccountRole | None = None
    password: Password | None = None
    current_password: Password | None = Field(
        default=None, description="Required with `password` unless the caller is an admin."
    )


class LoginRequest(RequestBody):
    email: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class ClientCreate(RequestBody):
    name: Name = Field(description="Who this client backend is, for operators.")


class ClientTokenRequest(RequestBody):
    """The OAuth 2.0 client credentials grant (RFC 6749, 4.4), as JSON."""

    grant_type: Literal["client_credentials"]
    client_id: uuid.UUID
    client_secret: Annotated[str, Field(min_length=1, max_length=256)]


class PushTokenCreate(RequestBody):
    token: DeviceToken
    platform: Platform | None = None
    device_name: DeviceName | None = None
    take_over: StrictBool = Field(
        default=False,
        description="Admins only: move the token even if another user holds it (a handed-over "
        "device). Otherwise a token another user holds is refused with 409 push_token_in_use.",
    )


class PushTokenInvalidate(RequestBody):
    token: DeviceToken
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = "unspecified"


# ---------------------------------------------------------------------------------------------
# Responses


class PreferencesOut(BaseModel):
    email: bool
    push: bool


class PushTokenOut(BaseModel):
    id: uuid.UUID
    token: str
    platform: Platform | None
    device_name: str | None
    created_at: datetime
    last_seen_at: datetime


class UserOut(BaseModel):
    id: uuid.UUID
    name: str
    email: str
    role: Role
    language: str
    preferences: PreferencesOut
    push_tokens: list[PushTokenOut]
    created_at: datetime
    updated_at: datetime


class LoginUser(BaseModel):
    id: uuid.UUID
    name: str
    email: str
    role: Role


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: int = Field(description="Seconds until the token expires.")
    user: LoginUser


class ClientTokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme, not a secret
    expires_in: int = Field(description="Seconds until the token expires.")


class ClientOut(BaseModel):
    id: uuid.UUID = Field(description="The client_id; also the `sub` of its tokens.")
    name: str
    created_by: str
    created_at: datetime
    last_token_at: datetime | None
    revoked_at: datetime | None


class ClientCreated(ClientOut):
    client_secret: str = Field(
        description="Shown this once: only a hash is kept. Lost, it cannot be recovered."
    )


class DeletedOut(BaseModel):
    id: uuid.UUID
    deleted: bool


class PushTokenInvalidated(BaseModel):
    pruned: bool = Field(description="True if this call pruned a live token.")
    token_id: uuid.UUID | None = None


class Jwk(BaseModel):
    model_config = ConfigDict(extra="allow")

    kty: str
    n: str
    e: str
    kid: str
    use: str = "sig"
    alg: str


class JwksOut(BaseModel):
    keys: list[Jwk]


class JwksEnvelope(Envelope[JwksOut]):
    """The envelope with ``keys`` also at the top level, where JWKS clients look for it."""

    keys: list[Jwk]


class SigningKeyOut(BaseModel):
    kid: str
    status: KeyStatus = Field(
        description="active: signs new tokens; retiring: only verifies until retired_at; "
        "retired: no longer published."
    )
    algorithm: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    public_jwk: dict[str, Any]


MAX_LOOKUP = 500


class UserLookup(RequestBody):
    """``POST /api/v1/users/lookup``: many users in one call (what delivery services send)."""

    ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_LOOKUP)


class UsersFound(BaseModel):
    users: list[UserOut]
    missing: list[uuid.UUID]
