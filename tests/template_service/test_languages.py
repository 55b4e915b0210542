"""Language tags and the fallback order."""

from __future__ import annotations

import pytest

from template_service.languages import fallback_chain, normalize_language

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("en", "en"),
        ("EN", "en"),
        ("pt-br", "pt-BR"),
        ("pt_BR", "pt-BR"),
        ("zh-hant-tw", "zh-Hant-TW"),
        ("es-419", "es-419"),
    ],
)
def test_normalize_language(raw: str, normalized: str) -> None:
    assert normalize_language(raw) == normalized


@pytest.mark.parametrize("raw", ["", "e", "english language", "pt--BR", "12", "pt-BR;drop"])
def test_not_a_language_tag(raw: str) -> None:
    with pytest.raises(ValueError, match="language tag"):
        normalize_language(raw)


@pytest.mark.parametrize(
    ("requested", "chain"),
    [
        ("pt-BR", ["pt-BR", "pt", "en"]),
        ("zh-Hant-TW", ["zh-Hant-TW", "zh-Hant", "zh", "en"]),
        ("en-GB", ["en-GB", "en"]),
        ("en", ["en"]),
        (None, ["en"]),
    ],
)
def test_fallback_chain(requested: str | None, chain: list[str]) -> None:
    assert fallback_chain(requested, "en") == chain
