from __future__ import annotations

import pytest

from tests.support.system import running_system

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="package")
async def system(vhost_pool, tmp_path_factory):
    """One system for the e2e modules that share it (test_degraded.py runs a system of its own)."""
    async with running_system(vhost_pool, tmp_path_factory.mktemp("system")) as running:
        await running.create_template(
            code="e2e_welcome",
            name="Welcome",
            type="email",
            language="en",
            subject="Welcome, {{ name }}!",
            content='<h1>Hello {{ name }}</h1><p><a href="{{ link }}">Start here</a></p>',
        )
        await running.create_template(
            code="e2e_push",
            name="Push hello",
            type="push",
            language="en",
            title="Hi {{ name }}",
            content="You have {{ count }} new messages",
            link="{{ link }}",
            image="https://cdn.example.com/{{ image }}.png",
        )
        yield running
