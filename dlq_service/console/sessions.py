"""Console sessions: logging in through user_service, the session cookie, and CSRF tokens.

The cookie holds a random session id signed with itsdangerous (so a forged cookie is refused
without touching Redis); Redis holds the session under a digest of that id, so reading Redis
does not reveal live cookies. The session records who logged in (verified once, at login, from
the access token user_service issued: signature, audience and the admin role) and the session's
CSRF token (the synchronizer pattern: every state-changing form posts it back). The access token
itself is not kept: the console acts in-process, as the logged-in admin.

The login form has its own CSRF token (a signed nonce in a short-lived cookie and the same nonce
in the form), so another site cannot log a browser into an account of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import orjson
import structlog
from itsdangerous import BadSignature, TimestampSigner
from redis.asyncio import Redis

from libs.http.auth import Principal, TokenVerifier
from libs.http.errors import AppError
from libs.storage.redis import Keys

log = structlog.get_logger(__name__)

SESSION_COOKIE = "herald_console"
LOGIN_COOKIE = "herald_console_login"
LOGIN_FORM_SECONDS = 3600
LOGIN_PATH = "/api/v1/auth/login"


@dataclass(frozen=True)
class Session:
    sub: str
    email: str
    csrf_token: str
    started_at: datetime

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token)


class LoginRefused(Exception):
    """Why a login did not open a session, in words for the login form; ``status`` for the page."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleSessions:
    def __init__(self, redis: Redis, keys: Keys, secret: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl_seconds
        self._sessions = TimestampSigner(secret, salt="herald.console.session")
        self._login_forms = TimestampSigner(secret, salt="herald.console.login")

    @property
    def ttl_seconds(self) -> int:
        return self._ttl

    async def open(self, principal: Principal, email: str) -> tuple[str, Session]:
        """A new session for ``principal``; returns the cookie value and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(
            sub=principal.sub,
            email=email,
            csrf_token=secrets.token_urlsafe(32),
            started_at=datetime.now(UTC),
        )
        record = orjson.dumps(
            {
                "sub": session.sub,
                "email": session.email,
                "csrf_token": session.csrf_token,
                "started_at": session.started_at.isoformat(),
            }
        )
        await self._redis.set(self._keys.console_session(_digest(session_id)), record, ex=self._ttl)
        log.info("console.session_opened", sub=principal.sub)
        return self._sessions.sign(session_id).decode(), session

    def _session_id(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            return self._sessions.unsign(cookie, max_age=self._ttl).decode()
        except BadSignature:
            return None

    async def read(self, cookie: str | None) -> Session | None:
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        raw = await self._redis.get(self._keys.console_session(_digest(session_id)))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return Session(
            sub=data["sub"],
            email=data["email"],
            csrf_token=data["csrf_token"],
            started_at=datetime.fromisoformat(data["started_at"]),
        )

    async def close(self, cookie: str | None) -> None:
        session_id = self._session_id(cookie)
        if session_id is not None:
            await self._redis.delete(self._keys.console_session(_digest(session_id)))

    def login_form(self) -> tuple[str, str]:
        """A login form's CSRF pair: (cookie value, the form's hidden field)."""
        nonce = secrets.token_urlsafe(24)
        return self._login_forms.sign(nonce).decode(), nonce

    def login_form_matches(self, cookie: str | None, field: str | None) -> bool:
        if not cookie or not field:
            return False
        try:
            nonce = self._login_forms.unsign(cookie, max_age=LOGIN_FORM_SECONDS).decode()
        except BadSignature:
            return False
        return hmac.compare_digest(nonce, field)


async def authenticate(
    http: httpx.AsyncClient,
    user_service_url: str,
    verifier: TokenVerifier,
    email: str,
    password: str,
) -> Principal:
    """Log in at user_service and check the token it issues is an admin's; else LoginRefused."""
    try:
        response = await http.post(
            f"{user_service_url.rstrip('/')}{LOGIN_PATH}",
            json={"email": email, "password": password},
        )
    except httpx.HTTPError as exc:
        log.warning("console.login_unavailable", error=repr(exc))
        raise LoginRefused("The user service cannot be reached; try again shortly.", 503) from exc
    if response.status_code in (400, 401, 422):
        raise LoginRefused("Wrong email or password.", 401)
    if response.status_code == 429:
        raise LoginRefused("Too many failed attempts; wait a few minutes and try again.", 429)
    if response.status_code != 200:
        raise LoginRefused("The user service could not log you in; try again shortly.", 503)
    try:
        token = str(response.json()["data"]["access_token"])
        principal = await verifier.verify(token)
    except (KeyError, TypeError, ValueError, AppError) as exc:
        log.warning("console.login_token_rejected", error=repr(exc))
        raise LoginRefused("The user service answered with a token we cannot accept.", 503) from exc
    if not principal.is_admin:
        raise LoginRefused(
            "This account is not an operator: the console needs the admin role.", 403
        )
    return principal
