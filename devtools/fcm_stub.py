"""A local server speaking FCM's HTTP v1 send API and Google's OAuth token endpoint.

- ``POST /token``: the JWT-bearer grant google-auth performs for a service account (the account
  JSON's ``token_uri`` points here); answers an access token.
- ``POST /v1/projects/{project}/messages:send``: validates the message as FCM does (one target,
  string-only ``data``), refuses unknown bearer tokens (401), answers ``{"name": ...}``. Device
  tokens starting with ``dead-`` get 404 UNREGISTERED, ``invalid-`` get 400 INVALID_ARGUMENT.
- ``/_stub/...``: inspect received messages and switch modes (``ok``, ``unavailable`` -> 503,
  ``rate_limited`` -> 429 with Retry-After, ``slow``: the message is kept and the answer comes
  only after ``answer_after`` seconds) for tests.

``python -m devtools.fcm_stub`` serves it for ``make run`` and writes a matching service account;
``--record`` appends a JSON line per accepted message (notification id, token, arrival time), so
another process (a benchmark, a test) can count what arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class FcmStubState:
    def __init__(self, record: Path | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.mode = "ok"
        self.retry_after = 1
        self.answer_after = 30.0
        self.dead_tokens: set[str] = set()
        self.issued: set[str] = set()
        self.token_requests = 0
        self.send_requests = 0
        self._counter = itertools.count(1)
        self.lock = threading.Lock()
        self._record = record.open("a", buffering=1) if record else None

    def keep(self, message: dict[str, Any]) -> None:
        line = {
            "notification_id": (message.get("data") or {}).get("notification_id"),
            "token": message.get("token"),
            "received_at": time.time(),
        }
        with self.lock:
            self.messages.append(message)
            if self._record is not None:
                self._record.write(json.dumps(line) + "\n")

    def next_id(self) -> int:
        return next(self._counter)

    def delivered_to(self, token: str) -> list[dict[str, Any]]:
        with self.lock:
            return [m for m in self.messages if m.get("token") == token]


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": {
                400: "INVALID_ARGUMENT",
                401: "UNAUTHENTICATED",
                404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED",
                503: "UNAVAILABLE",
            }.get(status, "INTERNAL"),
            "details": [{"@type": FCM_ERROR_TYPE, "errorCode": code}],
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _validate(message: Any) -> str | None:
    """FCM's rules that clients most often break; returns the complaint or None."""
    if not isinstance(message, dict):
        return "message must be an object"
    targets = [k for k in ("token", "topic", "condition") if message.get(k)]
    if len(targets) != 1:
        return "exactly one of token, topic or condition is required"
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "data must map strings to strings"
    notification = message.get("notification", {})
    if not isinstance(notification, dict):
        return "notification must be an object"
    for key in ("title", "body", "image"):
        if key in notification and not isinstance(notification[key], str):
            return f"notification.{key} must be a string"
    return None


def create_fcm_stub(state: FcmStubState | None = None) -> FastAPI:
    state = state or FcmStubState()
    app = FastAPI(title="FCM v1 stand-in", docs_url=None, redoc_url=None)
    app.state.stub = state

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        assertion = (form.get("assertion") or [""])[0]
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if "scope" not in claims or "iss" not in claims:
            return JSONResponse({"error": "invalid_scope"}, status_code=400)
        access = f"stub-{uuid.uuid4().hex}"
        with state.lock:
            state.issued.add(access)
            state.token_requests += 1
        return JSONResponse({"access_token": access, "expires_in": 3600, "token_type": "Bearer"})

    @app.post("/v1/projects/{project}/messages:send")
    async def send(project: str, request: Request) -> JSONResponse:
        with state.lock:
            state.send_requests += 1
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in state.issued:
            return _error(401, "THIRD_PARTY_AUTH_ERROR", "Request had invalid credentials.")
        if state.mode == "unavailable":
            return _error(
                503,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                {"Retry-After": str(state.retry_after)},
            )
        if state.mode == "rate_limited":
            return _error(
                429, "QUOTA_EXCEEDED", "Quota exceeded.", {"Retry-After": str(state.retry_after)}
            )
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload.")
        message = body.get("message") if isinstance(body, dict) else None
        problem = _validate(message)
        if problem:
            return _error(400, "INVALID_ARGUMENT", problem)
        assert isinstance(message, dict)
        device = str(message.get("token", ""))
        if device.startswith("dead-") or device in state.dead_tokens:
            return _error(404, "UNREGISTERED", "Requested entity was not found.")
        if device.startswith("invalid-"):
            return _error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
            )
        name = f"projects/{project}/messages/{state.next_id()}"
        if not body.get("validate_only"):
            state.keep({**message, "name": name})
        if state.mode == "slow":  # taken, but the answer comes too late
            await asyncio.sleep(state.answer_after)
        return JSONResponse({"name": name})

    @app.get("/_stub/messages")
    async def messages() -> dict[str, Any]:
        with state.lock:
            return {"messages": list(state.messages)}

    @app.delete("/_stub/messages")
    async def clear() -> dict[str, Any]:
        with state.lock:
            state.messages.clear()
        return {"cleared": True}

    @app.post("/_stub/mode")
    async def mode(request: Request) -> dict[str, Any]:
        body = await request.json()
        state.mode = str(body.get("mode", "ok"))
        state.retry_after = int(body.get("retry_after", 1))
        return {"mode": state.mode}

    return app


def service_account(token_uri: str, project_id: str = "herald-dev") -> dict[str, str]:
    """A freshly generated service-account document whose token_uri points at the stand-in."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": f"herald@{project_id}.iam.gserviceaccount.com",
        "client_id": "1",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Local FCM HTTP v1 stand-in for development.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--write-service-account", type=Path, default=None)
    parser.add_argument("--token-uri", default=None, help="token_uri to write (default: own URL)")
    parser.add_argument("--record", type=Path, default=None, help="append a JSON line per message")
    args = parser.parse_args()
    if args.write_service_account:
        args.write_service_account.parent.mkdir(parents=True, exist_ok=True)
        document = service_account(args.token_uri or f"http://{args.host}:{args.port}/token")
        args.write_service_account.write_text(json.dumps(document, indent=2))
    print(f"fcm-stub: listening on http://{args.host}:{args.port}", flush=True)
    app = create_fcm_stub(FcmStubState(record=args.record))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
