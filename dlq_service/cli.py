"""``herald-dlq`` (or ``python -m dlq_service <command>``): the dead-letter queue from a terminal.

It talks to dlq_service's REST API with an admin token, so it works from an operator's laptop
against any deployment it can reach::

    eval "$(herald-dlq login --email admin@herald.local)"     # exports HERALD_TOKEN
    herald-dlq stats
    herald-dlq list --reason retries_exhausted --since 2025-12-01T08:00
    herald-dlq show 3f2a...
    herald-dlq republish --reason retries_exhausted --channel email     # counts, asks, then goes
    herald-dlq discard 3f2a... --reason "user deleted"

Settings: ``--url`` / ``HERALD_DLQ_URL`` (dlq_service), ``--token`` / ``HERALD_TOKEN``,
``--user-service-url`` / ``HERALD_USER_SERVICE_URL`` (for ``login``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dlq_service.wording import ago, reason_text, reason_title, when

DEFAULT_URL = "http://127.0.0.1:8005"
DEFAULT_USER_SERVICE_URL = "http://127.0.0.1:8001"
PAGE_SIZE = 100
STATES = ("pending", "republished", "discarded", "archived", "all")

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)


class CliError(Exception):
    """What went wrong, for the operator; the command exits with status 1."""


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Api:
    """dlq_service's REST API: unwraps the envelope, turns errors into :class:`CliError`."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        if not token:
            raise CliError(
                'No token: run `eval "$(herald-dlq login --email you@example.com)"` or set '
                "HERALD_TOKEN to an admin access token."
            )
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"Cannot reach dlq_service at {self._http.base_url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise CliError(f"dlq_service answered {response.status_code} without JSON") from exc
        if not body.get("success"):
            raise CliError(f"{body.get('message')} ({body.get('error')}, {response.status_code})")
        return body.get("data"), body.get("meta") or {}


# -- output -------------------------------------------------------------------------------------


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _state(text: str | None) -> str:
    colours = {"pending": "red", "republished": "yellow", "delivered": "green", "failed": "red"}
    return f"[{colours.get(text or '', 'default')}]{text or '-'}[/]"


def _print_rows(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    if not rows:
        out.print("No failed messages match.")
        return
    table = _table("id", "failed", "channel", "reason", "provider", "tries", "state", "error")
    now = datetime.now().astimezone()
    for row in rows:
        table.add_row(
            row["id"],
            ago(_time(row["failed_at"]), now),
            row["channel"] or "?",
            reason_title(row["reason"]),
            row["provider"] or "-",
            str(row["attempts"]),
            _state(row["state"]),
            (row["error"] or "-")[:120],
        )
    out.print(table)
    out.print(
        f"Page {meta.get('page', 1)} of {meta.get('total_pages') or 1}: "
        f"{len(rows)} of {meta.get('total', len(rows))} shown."
    )


def _print_timeline(record: dict[str, Any]) -> None:
    table = _table("when", "event", "status", "by", "error")
    for event in record.get("timeline", []):
        table.add_row(
            when(_time(event["at"])),
            event["event"],
            _state(event.get("status")),
            " ".join(x for x in (event.get("service"), event.get("provider")) if x),
            event.get("error") or "",
        )
    out.print(table)


# -- commands -----------------------------------------------------------------------------------


def _filter(args: argparse.Namespace) -> dict[str, Any]:
    chosen = {
        "channel": args.channel,
        "reason": args.reason,
        "provider": args.provider,
        "user_id": args.user,
        "error": args.error,
        "since": args.since,
        "until": args.until,
    }
    return {k: v for k, v in chosen.items() if v}


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    params = {**_filter(args), "state": args.state, "page": args.page, "limit": args.limit}
    rows, meta = api.call("GET", "/api/v1/failed/", params=params)
    _print_rows(rows, meta)
    return 0


def cmd_show(api: Api, args: argparse.Namespace) -> int:
    row, _ = api.call("GET", f"/api/v1/failed/{args.id}")
    out.print(f"[bold]{reason_title(row['reason'])}[/] ({row['reason']}), {_state(row['state'])}")
    out.print(reason_text(row["reason"]))
    if row["error"]:
        out.print(f"[red]{row['error']}[/]")
    facts = _table("", "", title=None)
    facts.show_header = False
    for label, value in (
        ("failed", f"{when(_time(row['failed_at']))} ({ago(_time(row['failed_at']))})"),
        ("channel", row["channel"]),
        ("provider", row["provider"]),
        ("attempts", row["attempts"]),
        ("error class", row["error_class"]),
        ("failed in", row["service"]),
        ("notification", row["notification_id"]),
        ("request id", row["request_id"]),
        ("user", row["user_id"]),
        ("template", row["template_code"]),
        ("republished", row["republish_count"]),
    ):
        facts.add_row(label, "-" if value is None else str(value))
    out.print(facts)
    audit = _table("when", "action", "who", "note", title="Audit trail")
    for event in row["events"]:
        audit.add_row(
            when(_time(event["at"])), event["action"], event["actor"], event["reason"] or ""
        )
    out.print(audit)
    if args.full:
        out.print("[bold]Headers[/]")
        out.print_json(json.dumps(row["headers"]))
        out.print("[bold]Payload[/]")
        if row["payload"] is not None:
            out.print_json(json.dumps(row["payload"]))
        else:
            out.print(row["body"], markup=False)
    else:
        out.print("(--full shows the headers and the payload)")
    return 0


def _progress() -> Progress:
    return Progress(
        TextColumn("Republishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )


def _republish_ids(api: Api, ids: list[str], page: int) -> tuple[int, int, int]:
    if len(ids) == 1:
        api.call("POST", f"/api/v1/failed/{ids[0]}/republish")
        return 1, 0, 0
    republished = skipped = failed = 0
    with _progress() as progress:
        task = progress.add_task("republish", total=len(ids))
        for start in range(0, len(ids), page):
            chunk = ids[start : start + page]
            data, _ = api.call(
                "POST", "/api/v1/failed/republish", json={"ids": chunk, "limit": len(chunk)}
            )
            republished += data["republished"]
            skipped += data["skipped"]
            failed += data["failed"]
            progress.advance(task, len(chunk))
            if data["failed"]:
                failed += len(ids) - start - len(chunk)
                break
    return republished, skipped, failed


def _confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise CliError("Not confirmed: pass --yes to republish without a question.")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _republish_filter(api: Api, args: argparse.Namespace) -> tuple[int, int, int] | None:
    chosen = _filter(args)
    preview, _ = api.call("POST", "/api/v1/failed/republish/preview", json={"filter": chosen})
    matching = int(preview["matching"])
    described = ", ".join(f"{k}={v}" for k, v in chosen.items()) or "no filter"
    if matching == 0:
        out.print(f"Nothing to republish ({described}).")
        return None
    if not _confirm(f"Republish {matching} pending message(s) matching {described}?", args.yes):
        out.print("Nothing republished.")
        return None
    # Only what was counted: a message that fails again meanwhile is not swept into this run.
    as_of = datetime.fromisoformat(preview["as_of"])
    until = _time(args.until)
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)  # the API reads times without an offset as UTC
    chosen["until"] = (as_of if until is None else min(until, as_of)).isoformat()
    republished = skipped = failed = 0
    with _progress() as progress:
        task = progress.add_task("republish", total=matching)
        while republished + skipped + failed < matching:
            limit = min(args.page_size, matching - republished - skipped - failed)
            data, _ = api.call(
                "POST", "/api/v1/failed/republish", json={"filter": chosen, "limit": limit}
            )
            republished += data["republished"]
            skipped += data["skipped"]
            failed += data["failed"]
            progress.advance(task, data["republished"] + data["skipped"] + data["failed"])
            if data["failed"] or data["republished"] == 0:
                break
    return republished, skipped, failed


def cmd_republish(api: Api, args: argparse.Namespace) -> int:
    if args.ids and _filter(args):
        raise CliError("Give ids or filters, not both.")
    if args.ids:
        counts = _republish_ids(api, args.ids, args.page_size)
        total = len(args.ids)
    elif _filter(args) or args.all:
        found = _republish_filter(api, args)
        if found is None:
            return 0
        counts = found
        total = sum(counts)
    else:
        raise CliError("Say what to republish: ids, filters (--reason, --channel, ...) or --all.")
    republished, skipped, failed = counts
    out.print(
        f"Republished {republished} of {total}"
        + (f"; {skipped} skipped (no longer pending, or not republishable)" if skipped else "")
        + (f"; {failed} not republished (broker or database unavailable)" if failed else "")
        + "."
    )
    return 1 if failed else 0


def cmd_discard(api: Api, args: argparse.Namespace) -> int:
    row, _ = api.call("POST", f"/api/v1/failed/{args.id}/discard", json={"reason": args.reason})
    out.print(f"Discarded {row['id']} ({reason_title(row['reason'])}).")
    return 0


def cmd_stats(api: Api, args: argparse.Namespace) -> int:
    stats, _ = api.call("GET", "/api/v1/failed/stats")
    pending = stats["pending"]
    out.print(f"[bold]{pending['total']}[/] pending of {stats['total']} stored failed messages.")
    by_state = _table("state", "messages", title="By state")
    for state, n in stats["by_state"].items():
        by_state.add_row(_state(state), str(n))
    out.print(by_state)
    for key, title in (("by_channel", "Pending by channel"), ("by_reason", "Pending by reason")):
        table = _table(key.removeprefix("by_"), "pending", title=title)
        for name, n in sorted(pending[key].items(), key=lambda kv: -kv[1]):
            table.add_row(reason_title(name) if key == "by_reason" else name, str(n))
        out.print(table)
    return 0


def cmd_health(api: Api, args: argparse.Namespace) -> int:
    health, _ = api.call("GET", "/api/v1/delivery/health")
    breakers = _table("provider", "channel", "breaker", title="Providers")
    for b in health["breakers"]:
        state = b["state"] or "unknown"
        colour = "green" if state == "closed" else "red"
        breakers.add_row(b["provider"], b["channel"], f"[{colour}]{state}[/]")
    out.print(breakers)
    queues = _table("queue", "ready", "consumers", title="Queues")
    for q in health["queues"]:
        if q["kind"] == "retry" and not q["messages"]:
            continue
        queues.add_row(q["name"], str(q["messages"]), str(q["consumers"]))
    out.print(queues)
    arrivals = health["arrivals"]
    out.print(
        f"Failed messages received: {arrivals[-1]['count'] if arrivals else 0} this hour, "
        f"{sum(h['count'] for h in arrivals)} in 24 h."
    )
    return 0


def cmd_lookup(api: Api, args: argparse.Namespace) -> int:
    found, _ = api.call("GET", f"/api/v1/lookup/{args.query}")
    if not found["notifications"] and not found["failed_messages"]:
        out.print(f"Nothing found for {args.query}.")
        return 1
    for record in found["notifications"]:
        out.print(
            f"[bold]{record['notification_type']}[/] {record['notification_id']} "
            f"(request {record['request_id']}): {_state(record['status'])}, "
            f"{record['attempts']} attempt(s), provider {record['provider'] or '-'}"
        )
        _print_timeline(record)
    if found["failed_messages"]:
        out.print("[bold]In the dead-letter queue[/]")
        _print_rows(found["failed_messages"], {})
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    email = args.email or input("Email: ")
    password = os.environ.get("HERALD_PASSWORD") or getpass.getpass("Password: ")
    try:
        response = httpx.post(
            f"{args.user_service_url.rstrip('/')}/api/v1/auth/login",
            json={"email": email, "password": password},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise CliError(f"Cannot reach user_service at {args.user_service_url}: {exc}") from exc
    body = response.json()
    if not body.get("success"):
        raise CliError(f"Login refused: {body.get('message')}")
    # stdout carries only the export line, so `eval "$(herald-dlq login ...)"` sets it
    sys.stdout.write(f"export HERALD_TOKEN={body['data']['access_token']}\n")
    err.print(f"Logged in as {email}; the token lasts {body['data'].get('expires_in', '?')} s.")
    return 0


# -- arguments ----------------------------------------------------------------------------------


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--channel", choices=("email", "push"))
    group.add_argument("--reason", help="retries_exhausted, permanent_error, invalid_message, ...")
    group.add_argument("--provider", help="the provider that failed: smtp, sendgrid, fcm, ...")
    group.add_argument("--user", help="user id")
    group.add_argument("--error", help="text the last error contains (case-insensitive)")
    group.add_argument("--since", help="failed at or after (ISO 8601, UTC unless an offset)")
    group.add_argument("--until", help="failed at or before (ISO 8601)")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="herald-dlq",
        description="Herald's dead-letter queue: see failed messages, why they failed, and send "
        "them again.",
    )
    root.add_argument("--url", default=os.environ.get("HERALD_DLQ_URL", DEFAULT_URL))
    root.add_argument("--token", default=os.environ.get("HERALD_TOKEN"), help="admin token")
    commands = root.add_subparsers(dest="command", required=True, metavar="command")

    login = commands.add_parser("login", help="log in; prints `export HERALD_TOKEN=...`")
    login.add_argument("--email")
    login.add_argument(
        "--user-service-url",
        default=os.environ.get("HERALD_USER_SERVICE_URL", DEFAULT_USER_SERVICE_URL),
    )

    listing = commands.add_parser("list", help="failed messages, newest first")
    _add_filters(listing)
    listing.add_argument("--state", choices=STATES, default="pending")
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--limit", type=int, default=20)

    show = commands.add_parser("show", help="one failed message: why, audit trail")
    show.add_argument("id")
    show.add_argument("--full", action="store_true", help="also the headers and the payload")

    republish = commands.add_parser(
        "republish", help="send failed messages again: by id, or every pending one matching"
    )
    republish.add_argument("ids", nargs="*", help="failed message ids")
    _add_filters(republish)
    republish.add_argument("--all", action="store_true", help="every pending message")
    republish.add_argument("--yes", "-y", action="store_true", help="do not ask")
    republish.add_argument("--page-size", type=int, default=PAGE_SIZE)

    discard = commands.add_parser("discard", help="discard a failed message, with a reason")
    discard.add_argument("id")
    discard.add_argument("--reason", required=True, help="why (goes into the audit trail)")

    commands.add_parser("stats", help="counts by state, channel and reason")
    commands.add_parser("health", help="provider breakers, queue depths, new failures")
    lookup = commands.add_parser("lookup", help="a notification by id or request id")
    lookup.add_argument("query")
    return root


COMMANDS = {
    "list": cmd_list,
    "show": cmd_show,
    "republish": cmd_republish,
    "discard": cmd_discard,
    "stats": cmd_stats,
    "health": cmd_health,
    "lookup": cmd_lookup,
}


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {message}")
    sys.exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "login":
            return cmd_login(args)
        return COMMANDS[args.command](Api(args.url, args.token), args)
    except CliError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
