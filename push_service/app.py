"""push_service: the delivery pipeline with the push adapter and the FCM provider."""

from __future__ import annotations

from fastapi import FastAPI

from libs.delivery.providers import FailoverChain
from libs.delivery.runtime import AdapterDeps, ManagedAdapter, create_delivery_app, guard
from libs.notification.message import Channel
from push_service.adapter import PushAdapter
from push_service.config import PushSettings
from push_service.providers.fcm import AccessTokens, FcmProvider, load_service_account


def create_app(settings: PushSettings | None = None) -> FastAPI:
    settings = settings or PushSettings()

    async def build_adapter(deps: AdapterDeps) -> ManagedAdapter:
        info = load_service_account(settings.fcm_credentials_file, settings.fcm_credentials_json)
        if info is None:
            raise RuntimeError("FCM credentials missing: set FCM_CREDENTIALS_FILE or _JSON")
        project = settings.fcm_project_id or str(info.get("project_id", ""))
        if not project:
            raise RuntimeError("FCM project id missing: set FCM_PROJECT_ID")
        provider = FcmProvider(
            project_id=project,
            base_url=settings.fcm_base_url,
            tokens=AccessTokens(info),
            timeout=settings.fcm_timeout_seconds,
            max_connections=settings.consumer_prefetch,
        )
        guarded = guard(
            provider,
            redis=deps.redis,
            keys=deps.keys,
            settings=settings,
            rate_per_second=settings.fcm_rate_per_second,
        )
        return PushAdapter(FailoverChain([guarded]), deps.users)

    return create_delivery_app(
        settings=settings,
        channel=Channel.PUSH,
        adapter_factory=build_adapter,
        title="Herald push service",
    )
