"""The first-notification tutorial: the shell commands README.md shows and ``make run`` prints.

One source for both. ``tests/devtools/test_tutorial.py`` checks that README.md shows exactly these
commands (for the default settings), and ``tests/e2e/test_first_run.py`` runs the README's
commands, as written, against a running system, twice, under bash and POSIX sh.

The commands work pasted in order into a fresh shell (bash, zsh, dash): every value they need is
set by an earlier command, JSON is read with ``python3`` (already needed by ``make``), and each
run sends a new notification because each send takes a fresh ``request_id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# <name> marks a value filled in from the launcher's settings
_STEPS = (
    (
        "a token for the seeded admin (in production, a client backend's: see README)",
        r"""TOKEN=$(curl -sS <users>/api/v1/auth/login -H 'content-type: application/json' \
  -d '{"email":"<admin_email>","password":"<admin_password>"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])')""",
    ),
    (
        "the id of the demo user, whom make run registered",
        r"""USER_ID=$(curl -sS '<users>/api/v1/users/?email=<demo_email>' \
  -H "authorization: Bearer $TOKEN" | python3 -c 'import json,sys;
print([u["id"] for u in json.load(sys.stdin)["data"] if u["email"] == "<demo_email>"][0])')""",
    ),
    (
        "send it a welcome email, with a fresh request_id (the same one and body again would be"
        " a replay: the same answer, nothing sent)",
        r"""REQUEST_ID=tutorial-$(python3 -c 'import uuid; print(uuid.uuid4().hex)')
SENT=$(curl -sS <gateway>/api/v1/notifications/ -H "authorization: Bearer $TOKEN" \
  -H 'content-type: application/json' -d '{
    "notification_type": "email", "user_id": "'"$USER_ID"'", "template_code": "welcome",
    "variables": {"name": "Ada", "link": "https://example.com/start"},
    "request_id": "'"$REQUEST_ID"'"}')
printf '%s\n' "$SENT"
NOTIFICATION_ID=$(printf '%s' "$SENT" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["notification_id"])')""",
    ),
    (
        "a second later, its status and timeline",
        r"""sleep 1
curl -sS <gateway>/api/v1/notifications/$NOTIFICATION_ID \
  -H "authorization: Bearer $TOKEN" | python3 -m json.tool""",
    ),
)


@dataclass(frozen=True)
class Step:
    says: str
    commands: str


def first_notification_steps(
    *, gateway: str, users: str, admin_email: str, admin_password: str, demo_email: str
) -> list[Step]:
    """The tutorial's steps for services at ``gateway`` and ``users`` (base URLs)."""
    values = {
        "gateway": gateway,
        "users": users,
        "admin_email": admin_email,
        "admin_password": admin_password,
        "demo_email": demo_email,
    }

    def fill(text: str) -> str:
        return re.sub(r"<([a-z_]+)>", lambda match: values[match[1]], text)

    return [Step(says, fill(commands)) for says, commands in _STEPS]


def as_script(steps: list[Step]) -> str:
    """The commands of every step, to paste as one block.

    Without comment lines: an interactive zsh (``interactivecomments`` is off by default) runs a
    comment as a command, quotes and backquotes in it included.
    """
    return "\n\n".join(step.commands for step in steps)
