"""README.md, ``make run``'s banner and .run/instructions.txt show the same first-run commands."""

from __future__ import annotations

import pytest

from devtools.run import LauncherSettings, instructions
from devtools.stack import Stack, base_env
from devtools.tutorial import as_script, first_notification_steps
from tests.support.readme import bash_blocks

pytestmark = pytest.mark.unit

DEFAULTS = {name: field.default for name, field in LauncherSettings.model_fields.items()}


def default_steps():
    return first_notification_steps(
        gateway="http://127.0.0.1:8000",
        users="http://127.0.0.1:8001",
        admin_email=DEFAULTS["admin_email"],
        admin_password=DEFAULTS["admin_password"],
        demo_email=DEFAULTS["demo_user_email"],
    )


def test_readme_shows_exactly_the_commands_make_run_prints():
    assert bash_blocks("Your first notification") == [step.commands for step in default_steps()]


def test_the_banner_holds_every_step_with_the_running_systems_addresses():
    settings = LauncherSettings.model_construct(**DEFAULTS)
    stack = Stack(base_env(), ports={"gateway": 18000, "user_service": 18001})
    user = {"email": DEFAULTS["demo_user_email"], "id": "5f0c2a43-0000-4000-8000-000000000000"}
    text = instructions(stack, settings, [], user)
    steps = first_notification_steps(
        gateway="http://127.0.0.1:18000",
        users="http://127.0.0.1:18001",
        admin_email=DEFAULTS["admin_email"],
        admin_password=DEFAULTS["admin_password"],
        demo_email=DEFAULTS["demo_user_email"],
    )
    assert as_script(steps) in text
    assert ":8000" not in text.replace(":18000", "")
    assert ".run/instructions.txt" in text
    assert f"Operator console (failed messages, replays): {stack.url('dlq_service')}/" in text


def test_every_value_a_command_uses_is_set_by_an_earlier_command():
    script = as_script(default_steps())
    for variable in ("TOKEN", "USER_ID", "REQUEST_ID", "SENT", "NOTIFICATION_ID"):
        assignment = script.index(f"{variable}=")
        assert script.index(f"${variable}") > assignment, variable
    assert "first-notification-1" not in script  # no fixed request_id: a second run sends again


def test_the_block_to_paste_has_nothing_an_interactive_zsh_would_misread():
    # zsh runs comment lines when interactivecomments is off (its default), backquotes included
    script = as_script(default_steps())
    assert not any(line.lstrip().startswith("#") for line in script.splitlines())
    assert "`" not in script
