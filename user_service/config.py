"""Settings of user_service (environment variables, see ``.env.example``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator

from libs.settings import ServiceSettings

DEFAULT_ADMIN_EMAIL = "admin@herald.local"


class UserSettings(ServiceSettings):
    """What user_service reads on top of :class:`ServiceSettings`."""

    service_name: str = "user_service"
    port: int = Field(8001, validation_alias=AliasChoices("USER_SERVICE_PORT", "PORT"))
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/herald_users",
        validation_alias=AliasChoices("USER_DATABASE_URL", "DATABASE_URL"),
    )
    db_pool_size: int = Field(10, ge=1)

    # Tokens
    access_token_ttl_seconds: int = Field(900, ge=30, le=86_400)
    # Lifetime of a client backend's token; a revoked client's token is refused by the gateway at
    # once (a Redis denylist), and elsewhere it lives at most this long.
    client_token_ttl_seconds: int = Field(300, ge=30, le=3600)
    # How long a replica keeps the active signing key and the published public keys in memory;
    # replicas agree through the database, so a rotation is picked up within this time.
    signing_key_cache_seconds: float = Field(5.0, ge=0)
    signing_key_bits: int = Field(2048, ge=2048)
    # Extra time a replaced key stays published beyond the token lifetime (clock skew, leeway).
    key_retirement_grace_seconds: int = Field(60, ge=0)

    # Accounts created by ``python -m user_service seed``
    admin_email: str = DEFAULT_ADMIN_EMAIL
    admin_password: str = Field("admin12345!", repr=False)
    # Callers other than admins (anonymous or with a non-admin token) may register themselves
    # (role ``user`` only) when this is on; then each source address may register
    # ``self_registrations_per_hour`` accounts, in bursts of at most ``self_registration_burst``.
    allow_self_registration: bool = False
    self_registrations_per_hour: float = Field(20, gt=0)
    self_registration_burst: int = Field(5, ge=1)

    # Login throttling: ``login_max_failures`` failures for one email within
    # ``login_failure_window_seconds`` lock that email for ``login_lockout_seconds``. From
    # ``login_slowdown_after`` failures on, each attempt waits a delay that doubles per failure.
    login_max_failures: int = Field(5, ge=1)
    login_failure_window_seconds: int = Field(900, ge=1)
    login_lockout_seconds: int = Field(900, ge=1)
    login_slowdown_after: int = Field(2, ge=1)
    login_slowdown_base_seconds: float = Field(0.25, ge=0)
    login_slowdown_max_seconds: float = Field(2.0, ge=0)

    # Password policy
    password_min_length: int = Field(10, ge=8)
    password_max_length: int = Field(128, ge=16, le=1024)

    # argon2id cost (RFC 9106 "low memory" profile by default)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65_536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)
    # Callers that may wait for a hash beyond those being hashed (one per CPU); more: 503 busy
    password_check_queue: int = Field(32, ge=0)

    # Devices: the least recently seen live token is pruned beyond this many per user.
    max_push_tokens_per_user: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _refuse_default_admin_in_production(self) -> UserSettings:
        if self.environment == "production" and self.admin_email == DEFAULT_ADMIN_EMAIL:
            raise ValueError("ADMIN_EMAIL must be set to a real address in production")
        return self

    def secret_fields(self) -> tuple[str, ...]:
        return (*super().secret_fields(), "admin_password")
