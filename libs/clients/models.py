"""What delivery reads from our own services: users and rendered templates, as plain models.

No HTTP here (the clients beside this module fetch and cache them), so domain code can use the
models without importing a client.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict

from libs.notification.message import Channel


class Rendered(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str
    version: int
    language: str
    type: Channel
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    title: str | None = None
    body: str | None = None
    image: str | None = None
    link: str | None = None


class Preferences(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: bool = True
    push: bool = True


class Device(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    token: str
    platform: str | None = None


class UserProfile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: UUID
    name: str
    email: str
    language: str | None = None
    preferences: Preferences = Preferences()
    push_tokens: list[Device] = []
