"""Request bodies for template_service tests: valid by default, override what a test is about."""

from __future__ import annotations

import uuid
from typing import Any


def unique_code(prefix: str = "tpl") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def email_template(code: str = "welcome", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "name": "Welcome email",
        "type": "email",
        "language": "en",
        "subject": "Welcome, {{ name }}!",
        "content": '<p>Hello {{ name }},</p><p><a href="{{ link }}">Get started</a></p>',
    }
    body.update(overrides)
    return body


def push_template(code: str = "welcome_push", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "name": "Welcome push",
        "type": "push",
        "language": "en",
        "title": "Hi {{ name }}",
        "content": "Welcome aboard, {{ name }}!",
        "image": "https://cdn.example.com/{{ avatar }}.png",
        "link": "{{ link }}",
    }
    body.update(overrides)
    return body
