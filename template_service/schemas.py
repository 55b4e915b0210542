"""Request and response bodies of the template API (the ``data`` of the envelope)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from libs.notification.message import TEMPLATE_CODE_PATTERN, Channel
from template_service.languages import normalize_language
from template_service.models import Template, TemplateVersion
from template_service.rendering import Content

CODE_PATTERN = TEMPLATE_CODE_PATTERN
MAX_VERSION = 2_147_483_647  # PostgreSQL integer

Code = Annotated[str, Field(pattern=CODE_PATTERN, max_length=100, examples=["welcome"])]
LanguageTag = Annotated[
    str, Field(max_length=35, examples=["en", "pt-BR"]), AfterValidator(normalize_language)
]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Subject = Annotated[str, Field(max_length=1000)]
Body = Annotated[str, Field(min_length=1, max_length=100_000)]
Url = Annotated[str, Field(max_length=2048)]
Description = Annotated[str, Field(max_length=1000)]
ChangeNote = Annotated[str, Field(max_length=500)]
Variables = Annotated[
    dict[str, Any],
    Field(description="Values for the template's variables, e.g. name, link."),
]


def build_content(
    type: Channel,
    *,
    content: str | None,
    subject: str | None = None,
    text: str | None = None,
    title: str | None = None,
    image: str | None = None,
    link: str | None = None,
) -> Content:
    """The template fields of a channel, checked; raises ``ValueError`` saying what is wrong.

    Email: subject (required), content (HTML), text (optional). Push: title (``subject`` is
    accepted as its alias), content (the body), image and link. Fields of the other channel are
    refused rather than silently dropped.
    """
    if not content:
        raise ValueError("content must not be empty")
    if type is Channel.EMAIL:
        wrong = [n for n, v in (("title", title), ("image", image), ("link", link)) if v]
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: only push templates have these fields")
        if not subject or not subject.strip():
            raise ValueError("subject: email templates need a subject")
        return Content(type=type, content=content, subject=subject, text=text or None)
    if text:
        raise ValueError("text: only email templates have a plain-text part")
    if subject and title and subject != title:
        raise ValueError("title: give title or its alias subject, not two different values")
    return Content(
        type=type,
        content=content,
        title=(title or subject) or None,
        image=image or None,
        link=link or None,
    )


class _ContentFields(BaseModel):
    subject: Subject | None = None
    content: Body
    text: Body | None = None
    title: Subject | None = None
    image: Url | None = None
    link: Url | None = None

    def to_content(self, type: Channel) -> Content:
        return build_content(
            type,
            content=self.content,
            subject=self.subject,
            text=self.text,
            title=self.title,
            image=self.image,
            link=self.link,
        )


class TemplateCreate(_ContentFields):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "code": "welcome",
                "name": "Welcome email",
                "type": "email",
                "language": "en",
                "subject": "Welcome, {{ name }}!",
                "content": '<p>Hi {{ name }}, <a href="{{ link }}">get started</a>.</p>',
            }
        },
    )

    code: Code
    name: Name
    type: Channel
    language: LanguageTag | None = Field(
        default=None, description="Defaults to the service's default language (en)."
    )
    description: Description | None = None

    @model_validator(mode="after")
    def _channel_fields(self) -> TemplateCreate:
        self.to_content(self.type)  # raises ValueError: a 422 naming the problem
        return self


class TemplateUpdate(BaseModel):
    """Creates a new version; fields left out are copied from the active version."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    subject: Subject | None = None
    content: Body | None = None
    text: Body | None = Field(default=None, description="null: derive the text from the HTML")
    title: Subject | None = None
    image: Url | None = None
    link: Url | None = None
    description: Description | None = None
    activate: bool = Field(default=True, description="Make the new version the active one.")
    change_note: ChangeNote | None = None


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variables: Variables = Field(default_factory=dict)
    language: LanguageTag | None = None
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)


class PreviewRequest(_ContentFields):
    model_config = ConfigDict(extra="forbid")

    type: Channel
    variables: Variables = Field(default_factory=dict)
    language: LanguageTag | None = None

    @model_validator(mode="after")
    def _channel_fields(self) -> PreviewRequest:
        self.to_content(self.type)  # raises ValueError: a 422 naming the problem
        return self


class TemplateRead(BaseModel):
    """One version of a template (the active one unless a version was asked for)."""

    id: uuid.UUID
    code: str
    language: str
    requested_language: str | None = Field(
        default=None, description="The language asked for, when it differs from `language`."
    )
    fallback: bool = Field(default=False, description="True when another language was used.")
    type: Channel
    name: str
    description: str | None
    version: int
    active_version: int
    is_active: bool
    subject: str | None
    content: str
    text: str | None
    title: str | None
    image: str | None
    link: str | None
    change_note: str | None
    created_by: str | None
    version_created_at: datetime
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(
        cls, template: Template, version: TemplateVersion, requested: str | None = None
    ) -> TemplateRead:
        fallback = requested is not None and requested != template.language
        return cls(
            id=template.id,
            code=template.code,
            language=template.language,
            requested_language=requested if fallback else None,
            fallback=fallback,
            type=Channel(template.type),
            name=version.name,
            description=template.description,
            version=version.version,
            active_version=template.active_version,
            is_active=version.version == template.active_version,
            subject=version.subject,
            content=version.content,
            text=version.text,
            title=version.title,
            image=version.image,
            link=version.link,
            change_note=version.change_note,
            created_by=version.created_by,
            version_created_at=version.created_at,
            created_at=template.created_at,
            updated_at=template.updated_at,
        )


class RenderResult(BaseModel):
    """What ``libs.clients.templates.Rendered`` parses; the other channel's fields are null."""

    code: str
    version: int
    language: str
    type: Channel
    subject: str | None
    html: str | None
    text: str | None
    title: str | None
    body: str | None
    image: str | None
    link: str | None


MAX_RENDER_BATCH = 500


class RenderBatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE_PATTERN, max_length=100)
    variables: Variables = Field(default_factory=dict)
    language: LanguageTag | None = None
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)


class RenderBatchRequest(BaseModel):
    """``POST /api/v1/renders``: many renders in one call (what delivery services send)."""

    model_config = ConfigDict(extra="forbid")

    items: list[RenderBatchItem] = Field(min_length=1, max_length=MAX_RENDER_BATCH)


class RenderBatchOutcome(BaseModel):
    """One item's answer, in the request's order: a result, or the error code it alone hit
    (``template_not_found``, ``missing_variable``, ``render_failed``, ...)."""

    ok: bool
    result: RenderResult | None = None
    error: str | None = None
    message: str | None = None
