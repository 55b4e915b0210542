"""Routes: validate, authorise, call the domain, commit, invalidate caches, map the result.

Mutating routes commit explicitly before answering (and before bumping cache versions), so the
client never sees success for a change that did not persist, and no reader can cache the old row
under the new version.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from libs.http.auth import (
    Credentials,
    CurrentPrincipal,
    Principal,
    Role,
    authenticate,
    require_roles,
)
from libs.http.envelope import Envelope, PageMeta, Pagination, ok
from libs.http.sessions import SessionDep
from user_service import repository
from user_service.clients import ClientService, client_out
from user_service.models import SigningKey, utcnow
from user_service.schemas import (
    AccountRole,
    ClientCreate,
    ClientCreated,
    ClientOut,
    ClientTokenOut,
    ClientTokenRequest,
    DeletedOut,
    JwksEnvelope,
    JwksOut,
    LoginRequest,
    PreferencesOut,
    PreferencesPatch,
    PushTokenCreate,
    PushTokenInvalidate,
    PushTokenInvalidated,
    PushTokenOut,
    SigningKeyOut,
    TokenOut,
    UserCreate,
    UserLookup,
    UserOut,
    UsersFound,
    UserUpdate,
)
from user_service.security import (
    key_status,
    retire_signing_key,
    rotate_signing_key,
)
from user_service.service import (
    UserService,
    ensure_may_read,
)
from user_service.state import State, UserServiceState

# ---------------------------------------------------------------------------------------------
# Dependencies

# "function" scope: the session closes (and commits, if nothing did) before the response is
# sent, not after it.


async def optional_principal(request: Request, credentials: Credentials) -> Principal | None:
    """The caller if a token is given (and then it must be valid), None for anonymous calls."""
    if credentials is None:
        return None
    return await authenticate(request, credentials)


def source_address(request: Request) -> str:
    """The caller's address (behind a proxy, uvicorn takes it from ``X-Forwarded-For`` for the
    addresses in ``FORWARDED_ALLOW_IPS``)."""
    return request.client.host if request.client else "unknown"


def user_service(state: State, session: SessionDep) -> UserService:
    return UserService(session, state.settings, state.hasher)


def client_service(state: State, session: SessionDep) -> ClientService:
    return ClientService(session, state.settings, state.hasher)


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
ServicePrincipal = Annotated[Principal, Depends(require_roles(Role.ADMIN, Role.SERVICE))]
Users = Annotated[UserService, Depends(user_service, scope="function")]
Clients = Annotated[ClientService, Depends(client_service, scope="function")]


async def commit(state: UserServiceState, users: UserService) -> None:
    """Commit the request's changes, then bump the cache versions of the users they touched."""
    await users.session.commit()
    await state.invalidator.invalidate(users.touched)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "Missing, expired or invalid token (`missing_token`, `token_expired`, "
        "`invalid_token`), or wrong credentials (`invalid_credentials`, `invalid_client`)",
        403: "The caller's role may not do this",
        404: "Not found",
        409: "Conflict",
        422: "Invalid input (`validation_error`, or a domain rule)",
        429: "Too many attempts",
        503: "Too many password checks at once (`busy`): retry after `Retry-After` seconds",
    }
    return {s: {"description": descriptions[s]} for s in statuses}


# ---------------------------------------------------------------------------------------------
# Auth and keys

auth_router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
jwks_router = APIRouter(tags=["auth"])


@auth_router.post(
    "/login",
    summary="Exchange email and password for an access token (RS256 JWT)",
    response_model=Envelope[TokenOut],
    responses=_errors(401, 422, 429, 503),
)
async def login(
    request: Request, state: State, body: LoginRequest, users: Users
) -> Envelope[TokenOut]:
    source = source_address(request)
    token = await users.login(body.email, body.password, source, state.throttle, state.issuer)
    await users.session.commit()  # a password rehash, if the hash parameters changed
    return ok(token)


@auth_router.post(
    "/token",
    summary="Exchange a client backend's id and secret for a short-lived client token "
    "(OAuth 2.0 client credentials grant, as JSON)",
    response_model=Envelope[ClientTokenOut],
    responses=_errors(401, 422, 429, 503),
)
async def client_token(
    request: Request, state: State, body: ClientTokenRequest, clients: Clients
) -> Envelope[ClientTokenOut]:
    token = await clients.exchange(
        body.client_id,
        body.client_secret,
        source_address(request),
        state.throttle,
        state.issuer,
    )
    await clients.session.commit()  # last_token_at
    return ok(token)


@jwks_router.get(
    "/.well-known/jwks.json",
    summary="Public keys that verify tokens (JWKS); `keys` is also at the top level",
    response_model=JwksEnvelope,
)
async def jwks(state: State) -> JwksEnvelope:
    store = state.signing_keys
    keys = await store.published_jwks()
    if not keys:  # first start: create the key now rather than publish an empty set
        await store.active_key()
        keys = await store.published_jwks()
    return JwksEnvelope(success=True, data=JwksOut(keys=keys), keys=keys)


def _key_out(key: SigningKey) -> SigningKeyOut:
    return SigningKeyOut(
        kid=key.kid,
        status=key_status(key, utcnow()),
        algorithm=str(key.public_jwk.get("alg", "RS256")),
        created_at=key.created_at,
        activated_at=key.activated_at,
        retired_at=key.retired_at,
        public_jwk=key.public_jwk,
    )


@auth_router.get(
    "/keys",
    summary="List signing keys, newest first (public parts only)",
    response_model=Envelope[list[SigningKeyOut]],
    responses=_errors(401, 403),
)
async def list_keys(_: AdminPrincipal, session: SessionDep) -> Envelope[list[SigningKeyOut]]:
    return ok([_key_out(key) for key in await repository.all_signing_keys(session)])


@auth_router.post(
    "/keys/rotate",
    status_code=201,
    summary="Create a new active signing key; the previous one verifies until its tokens expire",
    response_model=Envelope[SigningKeyOut],
    responses=_errors(401, 403),
)
async def rotate_key(
    state: State, _: AdminPrincipal, session: SessionDep
) -> Envelope[SigningKeyOut]:
    key = await rotate_signing_key(session, state.settings)
    await session.commit()
    state.signing_keys.invalidate()
    return ok(_key_out(key), message="New signing key active.")


@auth_router.post(
    "/keys/{kid}/retire",
    summary="Stop publishing a replaced key now: tokens it signed stop verifying",
    response_model=Envelope[SigningKeyOut],
    responses=_errors(401, 403, 404, 409),
)
async def retire_key(
    state: State, kid: str, _: AdminPrincipal, session: SessionDep
) -> Envelope[SigningKeyOut]:
    key = await retire_signing_key(session, kid)
    await session.commit()
    state.signing_keys.invalidate()
    return ok(_key_out(key), message="Signing key retired.")


# ---------------------------------------------------------------------------------------------
# Users

users_router = APIRouter(prefix="/api/v1/users", tags=["users"])


@users_router.post(
    "/",
    status_code=201,
    summary="Register a user (admin: any role; others: role user, if self-registration is on)",
    response_model=Envelope[UserOut],
    responses=_errors(401, 403, 409, 422, 429, 503),
)
async def create_user(
    request: Request, state: State, principal: OptionalPrincipal, body: UserCreate, users: Users
) -> Envelope[UserOut]:
    if users.is_self_registration(body, principal):
        await state.registrations.admit(source_address(request))
    user = await users.register(body, principal)
    await commit(state, users)
    return ok(await users.present_one(user), message="User created.")


@users_router.get(
    "/",
    summary="List users with filters and pagination (admin)",
    response_model=Envelope[list[UserOut]],
    responses=_errors(401, 403, 422),
)
async def list_users(
    _: AdminPrincipal,
    users: Users,
    pagination: Annotated[Pagination, Query()],
    email: Annotated[str | None, Query(max_length=320, description="Email contains")] = None,
    name: Annotated[str | None, Query(max_length=200, description="Name contains")] = None,
    role: AccountRole | None = None,
) -> Envelope[list[UserOut]]:
    found, total = await users.search(
        email=email, name=name, role=role, offset=pagination.offset, limit=pagination.limit
    )
    return ok(found, meta=PageMeta.build(total, pagination.limit, pagination.page))


@users_router.get(
    "/me",
    summary="The calling account",
    response_model=Envelope[UserOut],
    responses=_errors(401, 404),
)
async def read_me(principal: CurrentPrincipal, users: Users) -> Envelope[UserOut]:
    try:
        user_id = uuid.UUID(principal.sub)
    except ValueError:
        user_id = uuid.UUID(int=0)  # not an account (no such user)
    return ok(await users.present_one(await users.get(user_id)))


@users_router.post(
    "/lookup",
    summary="Read many users at once (admin, service): what delivery services fetch",
    response_model=Envelope[UsersFound],
    responses=_errors(401, 403, 422),
)
async def lookup_users(_: ServicePrincipal, body: UserLookup, users: Users) -> Envelope[UsersFound]:
    found, missing = await users.lookup(body.ids)
    return ok(UsersFound(users=found, missing=missing))


@users_router.get(
    "/{user_id}",
    summary="Read a user (admin, service, or the user themself)",
    response_model=Envelope[UserOut],
    responses=_errors(401, 403, 404),
)
async def read_user(
    user_id: uuid.UUID, principal: CurrentPrincipal, users: Users
) -> Envelope[UserOut]:
    ensure_may_read(principal, user_id)
    return ok(await users.present_one(await users.get(user_id)))


@users_router.patch(
    "/{user_id}",
    summary="Update a user (admin, or the user themself; only admins change roles)",
    response_model=Envelope[UserOut],
    responses=_errors(401, 403, 404, 409, 422, 503),
)
async def update_user(
    state: State,
    user_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: UserUpdate,
    users: Users,
) -> Envelope[UserOut]:
    user = await users.update(user_id, body, principal)
    await commit(state, users)
    return ok(await users.present_one(user), message="User updated.")


@users_router.delete(
    "/{user_id}",
    summary="Delete a user and their devices (admin, or the user themself)",
    response_model=Envelope[DeletedOut],
    responses=_errors(401, 403, 404, 409),
)
async def delete_user(
    state: State, user_id: uuid.UUID, principal: CurrentPrincipal, users: Users
) -> Envelope[DeletedOut]:
    await users.delete(user_id, principal)
    await commit(state, users)
    return ok(DeletedOut(id=user_id, deleted=True), message="User deleted.")


# -- preferences ------------------------------------------------------------------------------


@users_router.get(
    "/{user_id}/preferences",
    summary="Channel preferences (admin, service, or the user themself)",
    response_model=Envelope[PreferencesOut],
    responses=_errors(401, 403, 404),
)
async def read_preferences(
    user_id: uuid.UUID, principal: CurrentPrincipal, users: Users
) -> Envelope[PreferencesOut]:
    ensure_may_read(principal, user_id)
    user = await users.get(user_id)
    return ok(PreferencesOut(email=user.email_enabled, push=user.push_enabled))


@users_router.patch(
    "/{user_id}/preferences",
    summary="Opt in or out of a channel (admin, or the user themself)",
    response_model=Envelope[PreferencesOut],
    responses=_errors(401, 403, 404, 422),
)
async def update_preferences(
    state: State,
    user_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: PreferencesPatch,
    users: Users,
) -> Envelope[PreferencesOut]:
    preferences = await users.update_preferences(user_id, body, principal)
    await commit(state, users)
    return ok(preferences, message="Preferences updated.")


# -- devices ----------------------------------------------------------------------------------


@users_router.get(
    "/{user_id}/push-tokens",
    summary="Live push tokens (devices) of a user (admin, service, or the user themself)",
    response_model=Envelope[list[PushTokenOut]],
    responses=_errors(401, 403, 404),
)
async def list_push_tokens(
    user_id: uuid.UUID, principal: CurrentPrincipal, users: Users
) -> Envelope[list[PushTokenOut]]:
    ensure_may_read(principal, user_id)
    return ok(await users.push_tokens(user_id))


@users_router.post(
    "/{user_id}/push-tokens",
    status_code=201,
    summary="Register a device token (idempotent; a token of another user moves here)",
    response_model=Envelope[PushTokenOut],
    responses=_errors(401, 403, 404, 422),
)
async def add_push_token(
    state: State,
    user_id: uuid.UUID,
    principal: CurrentPrincipal,
    body: PushTokenCreate,
    users: Users,
) -> Envelope[PushTokenOut]:
    token = await users.add_push_token(user_id, body, principal)
    await commit(state, users)
    return ok(token, message="Push token registered.")


@users_router.post(
    "/{user_id}/push-tokens/invalidate",
    summary="Prune a token the push provider no longer knows (service, admin; idempotent)",
    response_model=Envelope[PushTokenInvalidated],
    responses=_errors(401, 403, 422),
)
async def invalidate_push_token(
    state: State,
    user_id: uuid.UUID,
    _: ServicePrincipal,
    body: PushTokenInvalidate,
    users: Users,
) -> Envelope[PushTokenInvalidated]:
    token = await users.invalidate_push_token(user_id, body.token, body.reason)
    await commit(state, users)
    return ok(PushTokenInvalidated(pruned=token is not None, token_id=token.id if token else None))


@users_router.delete(
    "/{user_id}/push-tokens/{token_id}",
    summary="Remove a device token (admin, or the user themself)",
    response_model=Envelope[DeletedOut],
    responses=_errors(401, 403, 404),
)
async def remove_push_token(
    state: State,
    user_id: uuid.UUID,
    token_id: uuid.UUID,
    principal: CurrentPrincipal,
    users: Users,
) -> Envelope[DeletedOut]:
    await users.remove_push_token(user_id, token_id, principal)
    await commit(state, users)
    return ok(DeletedOut(id=token_id, deleted=True), message="Push token removed.")


# ---------------------------------------------------------------------------------------------
# Client backends (admin)

clients_router = APIRouter(prefix="/api/v1/clients", tags=["clients"])


@clients_router.post(
    "/",
    status_code=201,
    summary="Create a client backend; its secret is in this answer only",
    response_model=Envelope[ClientCreated],
    responses=_errors(401, 403, 422, 503),
)
async def create_client(
    principal: AdminPrincipal, body: ClientCreate, clients: Clients
) -> Envelope[ClientCreated]:
    created = await clients.create(body.name, principal)
    await clients.session.commit()
    return ok(created, message="Client created. Store client_secret now: it is not shown again.")


@clients_router.get(
    "/",
    summary="List client backends (never their secrets)",
    response_model=Envelope[list[ClientOut]],
    responses=_errors(401, 403, 422),
)
async def list_clients(
    _: AdminPrincipal,
    clients: Clients,
    pagination: Annotated[Pagination, Query()],
    revoked: Annotated[
        bool | None, Query(description="Only revoked (true) or live (false)")
    ] = None,
) -> Envelope[list[ClientOut]]:
    found, total = await clients.search(
        revoked=revoked, offset=pagination.offset, limit=pagination.limit
    )
    return ok(found, meta=PageMeta.build(total, pagination.limit, pagination.page))


@clients_router.get(
    "/{client_id}",
    summary="Read a client backend",
    response_model=Envelope[ClientOut],
    responses=_errors(401, 403, 404),
)
async def read_client(
    client_id: uuid.UUID, _: AdminPrincipal, clients: Clients
) -> Envelope[ClientOut]:
    return ok(client_out(await clients.get(client_id)))


@clients_router.post(
    "/{client_id}/revoke",
    summary="Revoke a client backend: no new token, and its current one is refused at once",
    response_model=Envelope[ClientOut],
    responses={
        **_errors(401, 403, 404),
        503: {"description": "Revoked, but the gateway could not be told yet: repeat"},
    },
)
async def revoke_client(
    state: State, client_id: uuid.UUID, principal: AdminPrincipal, clients: Clients
) -> Envelope[ClientOut]:
    client = await clients.revoke(client_id, principal)
    await clients.session.commit()
    await state.revocations.add(client.id)
    return ok(client_out(client), message="Client revoked.")


routers = (jwks_router, auth_router, users_router, clients_router)
