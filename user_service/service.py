"""The domain: accounts, profiles, preferences, devices, login. Never commits.

Each mutating operation records in ``touched`` the ids of users whose representation changed;
the route commits and then bumps their cache versions (see :class:`UserCacheInvalidator`), so a
reader can never cache the pre-change row under the new version.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

import structlog
from prometheus_client import Counter
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

from libs.clients.cache import VersionedCache
from libs.clients.users import PREFERENCES_CACHE, USER_CACHE
from libs.http.auth import Principal, Role
from libs.http.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)
from user_service import repository
from user_service.config import UserSettings
from user_service.models import PushToken, User, utcnow
from user_service.schemas import (
    LoginUser,
    PreferencesOut,
    PreferencesPatch,
    PushTokenCreate,
    PushTokenOut,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from user_service.security import PasswordHasher, TokenIssuer
from user_service.throttle import LoginThrottle

log = structlog.get_logger(__name__)

LOGINS = Counter("user_logins_total", "Login attempts by outcome", ["outcome"])

EVICTED_REASON = "evicted: device limit reached"


# ---------------------------------------------------------------------------------------------
# Rules


def check_password_policy(password: str, email: str, settings: UserSettings) -> None:
    """Raise 422 ``weak_password`` naming the first rule ``password`` breaks."""
    rules = (
        (
            "min_length",
            len(password) >= settings.password_min_length,
            f"at least {settings.password_min_length} characters long",
        ),
        (
            "max_length",
            len(password) <= settings.password_max_length,
            f"at most {settings.password_max_length} characters long",
        ),
        ("letter", any(c.isalpha() for c in password), "contain at least one letter"),
        ("digit", any(c.isdigit() for c in password), "contain at least one digit"),
        ("not_email", password.strip().lower() != email.lower(), "differ from the email address"),
    )
    for rule, satisfied, wording in rules:
        if not satisfied:
            raise Unprocessable(
                f"The password must {wording}.", code="weak_password", data={"rule": rule}
            )


def ensure_may_read(actor: Principal, user_id: uuid.UUID) -> None:
    """Admins and services read anyone; a user reads only themself; a client backend nobody."""
    if actor.role in (Role.ADMIN, Role.SERVICE) or (
        actor.role is Role.USER and actor.sub == str(user_id)
    ):
        return
    raise Forbidden("You may only read your own account.")


def ensure_may_change(actor: Principal, user_id: uuid.UUID) -> None:
    """Admins change anyone; a user changes only themself; services change nobody."""
    if actor.role is Role.ADMIN or (actor.role is Role.USER and actor.sub == str(user_id)):
        return
    raise Forbidden("You may only change your own account.")


# ---------------------------------------------------------------------------------------------
# Cache invalidation


class UserCacheInvalidator:
    """Bumps the ``user`` and ``prefs`` cache versions other services read through."""

    def __init__(self, cache: VersionedCache, *, attempts: int = 3) -> None:
        self._cache = cache
        self._attempts = attempts

    async def invalidate(self, user_ids: Iterable[uuid.UUID]) -> None:
        for user_id in sorted(set(user_ids)):
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self._attempts),
                    wait=wait_incrementing(start=0.05, increment=0.05),
                    retry=retry_if_exception_type((RedisError, OSError)),
                    reraise=True,
                ):
                    with attempt:
                        await self._cache.bump(USER_CACHE, str(user_id))
                        await self._cache.bump(PREFERENCES_CACHE, str(user_id))
            except (RedisError, OSError) as exc:
                log.error("user.cache_invalidation_failed", user_id=str(user_id))
                raise ServiceUnavailable(
                    "The change was saved, but caches could not be invalidated; "
                    "repeat the request.",
                    code="cache_invalidation_failed",
                ) from exc


# ---------------------------------------------------------------------------------------------
# Users


def _push_token_out(token: PushToken) -> PushTokenOut:
    return PushTokenOut.model_validate(token, from_attributes=True)


class UserService:
    def __init__(self, session: AsyncSession, settings: UserSettings, hasher: PasswordHasher):
        self.session = session
        self.settings = settings
        self.hasher = hasher
        self.touched: set[uuid.UUID] = set()

    # -- reading ------------------------------------------------------------------------------

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> User:
        user = await repository.get_user(self.session, user_id, for_update=for_update)
        if user is None:
            raise NotFound("No such user.", code="user_not_found")
        return user

    async def lookup(self, user_ids: Sequence[uuid.UUID]) -> tuple[list[UserOut], list[uuid.UUID]]:
        """The users that exist among ``user_ids`` (one query for users, one for devices), and
        the ids that do not."""
        users = await repository.get_users(self.session, user_ids)
        found = {u.id for u in users}
        return await self.present(users), [i for i in dict.fromkeys(user_ids) if i not in found]

    async def present(self, users: Sequence[User]) -> list[UserOut]:
        tokens = await repository.live_push_tokens(self.session, [u.id for u in users])
        return [
            UserOut(
                id=user.id,
                name=user.name,
                email=user.email,
                role=Role(user.role),
                language=user.language,
                preferences=PreferencesOut(email=user.email_enabled, push=user.push_enabled),
                push_tokens=[_push_token_out(t) for t in tokens.get(user.id, [])],
                created_at=user.created_at,
                updated_at=user.updated_at,
            )
            for user in users
        ]

    async def present_one(self, user: User) -> UserOut:
        return (await self.present([user]))[0]

    async def search(
        self,
        *,
        email: str | None,
        name: str | None,
        role: Role | None,
        offset: int,
        limit: int,
    ) -> tuple[list[UserOut], int]:
        users, total = await repository.list_users(
            self.session, email=email, name=name, role=role, offset=offset, limit=limit
        )
        return await self.present(users), total

    # -- accounts -----------------------------------------------------------------------------

    def is_self_registration(self, data: UserCreate, actor: Principal | None) -> bool:
        """True when someone other than an admin registers (allowed only for role ``user`` and
        while self-registration is open); raises 403 when it is not allowed."""
        if actor is not None and actor.role is Role.ADMIN:
            return False
        if data.role is not Role.USER:
            raise Forbidden(f"Only an admin may create {data.role.value} accounts.")
        if not self.settings.allow_self_registration:
            raise Forbidden("Self-registration is disabled.", code="registration_closed")
        return True

    async def register(self, data: UserCreate, actor: Principal | None) -> User:
        self.is_self_registration(data, actor)
        check_password_policy(data.password, data.email, self.settings)
        if await repository.email_in_use(self.session, data.email):
            raise Conflict("This email is already registered.", code="email_taken")
        now = utcnow()
        user = User(
            name=data.name,
            email=data.email,
            password_hash=await self.hasher.hash(data.password),
            role=data.role.value,
            language=data.language,
            email_enabled=data.preferences.email,
            push_enabled=data.preferences.push,
            created_at=now,
            updated_at=now,
        )
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError as exc:  # registered concurrently
            raise Conflict("This email is already registered.", code="email_taken") from exc
        self.touched.add(user.id)
        if data.push_token:
            await self._attach_push_token(user, PushTokenCreate(token=data.push_token), actor)
        log.info("user.registered", user_id=str(user.id), role=user.role)
        return user

    async def create_account(self, *, name: str, email: str, password: str, role: Role) -> User:
        """An account from configuration (seed): no schema, so reserved domains are allowed."""
        now = utcnow()
        user = User(
            name=name,
            email=email.lower(),
            password_hash=await self.hasher.hash(password),
            role=role.value,
            created_at=now,
            updated_at=now,
        )
        self.session.add(user)
        await self.session.flush()
        self.touched.add(user.id)
        return user

    async def update(self, user_id: uuid.UUID, data: UserUpdate, actor: Principal) -> User:
        ensure_may_change(actor, user_id)
        user = await self.get(user_id, for_update=True)
        is_admin = actor.role is Role.ADMIN
        if data.role is not None and data.role.value != user.role:
            if not is_admin:
                raise Forbidden("Only an admin may change a role.", code="role_change_forbidden")
            if user.role == Role.ADMIN.value:
                await self._ensure_not_last_admin()
            user.role = data.role.value
        if data.email is not None and data.email != user.email:
            if await repository.email_in_use(self.session, data.email, besides=user.id):
                raise Conflict("This email is already registered.", code="email_taken")
            user.email = data.email
        if data.password is not None:
            if not is_admin:
                if data.current_password is None:
                    raise Unprocessable(
                        "Changing the password needs current_password.",
                        code="current_password_required",
                    )
                if not await self.hasher.verify(user.password_hash, data.current_password):
                    raise Forbidden(
                        "The current password is wrong.", code="invalid_current_password"
                    )
            check_password_policy(data.password, user.email, self.settings)
            user.password_hash = await self.hasher.hash(data.password)
        if data.name is not None:
            user.name = data.name
        if data.language is not None:
            user.language = data.language
        await self._save(user)
        return user

    async def delete(self, user_id: uuid.UUID, actor: Principal) -> None:
        ensure_may_change(actor, user_id)
        user = await self.get(user_id, for_update=True)
        if user.role == Role.ADMIN.value:
            await self._ensure_not_last_admin()
        await self.session.delete(user)
        await self.session.flush()
        self.touched.add(user_id)
        log.info("user.deleted", user_id=str(user_id), by=actor.sub)

    async def _ensure_not_last_admin(self) -> None:
        if await repository.count_admins(self.session) <= 1:
            raise Conflict("This is the last admin account.", code="last_admin")

    async def _save(self, user: User) -> None:
        user.updated_at = utcnow()
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError as exc:  # the new email was taken concurrently
            raise Conflict("This email is already registered.", code="email_taken") from exc
        self.touched.add(user.id)

    # -- preferences --------------------------------------------------------------------------

    async def update_preferences(
        self, user_id: uuid.UUID, data: PreferencesPatch, actor: Principal
    ) -> PreferencesOut:
        ensure_may_change(actor, user_id)
        user = await self.get(user_id, for_update=True)
        if data.email is not None:
            user.email_enabled = data.email
        if data.push is not None:
            user.push_enabled = data.push
        await self._save(user)
        return PreferencesOut(email=user.email_enabled, push=user.push_enabled)

    # -- devices ------------------------------------------------------------------------------

    async def push_tokens(self, user_id: uuid.UUID) -> list[PushTokenOut]:
        await self.get(user_id)
        tokens = await repository.live_push_tokens(self.session, [user_id])
        return [_push_token_out(t) for t in tokens.get(user_id, [])]

    async def add_push_token(
        self, user_id: uuid.UUID, data: PushTokenCreate, actor: Principal
    ) -> PushTokenOut:
        ensure_may_change(actor, user_id)
        user = await self.get(user_id, for_update=True)
        token = await self._attach_push_token(user, data, actor)
        return _push_token_out(token)

    async def _attach_push_token(
        self, user: User, data: PushTokenCreate, actor: Principal | None
    ) -> PushToken:
        """Add ``data.token`` to ``user``: idempotent for their own token; a pruned token comes
        back to life. A token another user holds live is refused (whoever learned it could
        otherwise take that user's notifications away), unless an admin moves it on purpose
        with ``take_over``; then it moves, and the log says who moved it from whom."""
        now = utcnow()
        token = await repository.push_token_by_value(self.session, data.token, for_update=True)
        if token is None:
            token = PushToken(
                user_id=user.id,
                token=data.token,
                platform=data.platform,
                device_name=data.device_name,
                created_at=now,
                last_seen_at=now,
            )
            try:
                async with self.session.begin_nested():
                    self.session.add(token)
            except IntegrityError:  # the same token was added concurrently
                token = await repository.push_token_by_value(
                    self.session, data.token, for_update=True
                )
                if token is None:
                    raise
        if token.user_id != user.id:
            if token.pruned_at is None and not (
                data.take_over and actor is not None and actor.is_admin
            ):
                raise Conflict(
                    "This device token is registered to another user. Remove it there first "
                    "(an admin may move it with take_over).",
                    code="push_token_in_use",
                )
            self.touched.add(token.user_id)
            log.warning(
                "user.push_token_moved",
                token_id=str(token.id),
                from_user=str(token.user_id),
                to_user=str(user.id),
                by=actor.sub if actor is not None else None,
            )
            token.user_id = user.id
            token.created_at = now
        token.pruned_at = None
        token.pruned_reason = None
        token.last_seen_at = now
        if data.platform is not None:
            token.platform = data.platform
        if data.device_name is not None:
            token.device_name = data.device_name
        self.session.add(token)
        await self.session.flush()
        await self._evict_extra_devices(user.id, now)
        user.updated_at = now
        self.session.add(user)
        await self.session.flush()
        self.touched.add(user.id)
        return token

    async def _evict_extra_devices(self, user_id: uuid.UUID, now: datetime) -> None:
        live = await repository.live_push_tokens_by_recency(self.session, user_id)
        for stale in live[self.settings.max_push_tokens_per_user :]:
            stale.pruned_at = now
            stale.pruned_reason = EVICTED_REASON
            self.session.add(stale)
        await self.session.flush()

    async def remove_push_token(
        self, user_id: uuid.UUID, token_id: uuid.UUID, actor: Principal
    ) -> None:
        ensure_may_change(actor, user_id)
        user = await self.get(user_id, for_update=True)
        token = await repository.get_push_token(self.session, user_id, token_id)
        if token is None:
            raise NotFound("No such push token for this user.", code="push_token_not_found")
        await self.session.delete(token)
        await self._save(user)

    async def invalidate_push_token(
        self, user_id: uuid.UUID, token_value: str, reason: str
    ) -> PushToken | None:
        """Prune a token the provider no longer knows. Idempotent: an unknown, already pruned
        or foreign token (or a deleted user) changes nothing and returns None."""
        token = await repository.push_token_by_value(self.session, token_value, for_update=True)
        if token is None or token.user_id != user_id or token.pruned_at is not None:
            return None
        token.pruned_at = utcnow()
        token.pruned_reason = reason
        self.session.add(token)
        await self.session.flush()
        self.touched.add(user_id)
        log.info("user.push_token_pruned", user_id=str(user_id), token_id=str(token.id))
        return token

    # -- login --------------------------------------------------------------------------------

    async def login(
        self,
        email: str,
        password: str,
        source: str,
        throttle: LoginThrottle,
        issuer: TokenIssuer,
    ) -> TokenOut:
        """Check the password of ``email`` for a caller at address ``source`` (see
        :mod:`user_service.throttle` for what failures cost, and whom)."""
        email = email.strip().lower()
        await throttle.admit(email, source)  # before the session holds a database connection
        user = await repository.get_user_by_email(self.session, email)
        await self.session.commit()  # its connection back to the pool while the hash runs
        if user is None:
            await self.hasher.verify_unknown_account(password)
            valid = False
        else:
            valid = await self.hasher.verify(user.password_hash, password)
        if user is None or not valid:
            lockable = user is None or user.role != Role.SERVICE.value
            failures = await throttle.record_failure(email, source, lockable=lockable)
            LOGINS.labels("invalid_credentials").inc()
            log.info(
                "auth.login_failed",
                user_id=str(user.id) if user else None,
                failures=failures,
                locked=lockable and failures >= self.settings.login_max_failures,
            )
            raise Unauthorized("Invalid email or password.", code="invalid_credentials")
        await throttle.reset(email, source)
        if self.hasher.needs_rehash(user.password_hash):
            user.password_hash = await self.hasher.hash(password)
            self.session.add(user)
            await self.session.flush()  # the hash is not part of the cached representation
        issued = await issuer.issue(user.id, Role(user.role))
        LOGINS.labels("success").inc()
        log.info("auth.login_succeeded", user_id=str(user.id), kid=issued.kid)
        return TokenOut(
            access_token=issued.access_token,
            expires_in=issued.expires_in,
            user=LoginUser(id=user.id, name=user.name, email=user.email, role=Role(user.role)),
        )
