"""Figures with their ceilings, ratios and targets; the JSON results and ``docs/benchmarks.md``.

Every figure is measured in the same run as its ceiling, so a ratio compares like with like on
a machine whose load changes from one hour to the next. A figure the system cannot produce yet
(no batch endpoint, no workers setting) is n/a with the reason, never left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.config import BenchConfig

LIMITS_HEADING = "## What limits it"
LIMITS_PLACEHOLDER = (
    "_To be filled from profiles (py-spy, perf) of a full run: where each process spends its "
    "CPU per notification, and what the next change should be._"
)
OURS = ("gateway", "user_service", "template_service", "email_service", "push_service")
CPU_ORDER = (
    *OURS,
    "dlq_service",
    "smtp sink",
    "fcm stand-in",
    "redis",
    "rabbitmq",
    "postgresql",
    "wrk",
    "bench (this process)",
)
SHARED = ("redis", "rabbitmq", "postgresql")


@dataclass
class Figure:
    key: str
    label: str
    value: float | None
    unit: str
    p99_ms: float | None = None
    cpu_ms: float | None = None
    """CPU the measured process used per notification (intake)."""
    ceiling: float | None = None
    ceiling_key: str | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    note: str | None = None


def _ratio(value: float | None, ceiling: float | None) -> float | None:
    return round(value / ceiling, 3) if value is not None and ceiling else None


def _get(data: Any, *path: str) -> Any:
    for part in path:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def figures(result: dict[str, Any]) -> list[Figure]:
    out: list[Figure] = []
    out += _intake_figures(result.get("intake"), result["settings"])
    out += _ceiling_figures(result.get("ceilings"), result["settings"])
    out += _e2e_figures(result.get("e2e"), result.get("ceilings"), result["settings"])
    out += _campaign_figures(result.get("campaign"), result.get("ceilings"), result["settings"])
    return out


def _runs(result: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every run that sent notifications end to end, by name (a campaign's as ``campaign <kind>``),
    rounds not unfolded."""
    yield from (result.get("e2e") or {}).items()
    for kind, run in (result.get("campaign") or {}).items():
        if "note" not in run:  # n/a: nothing was sent
            yield f"campaign {kind}", run


def _intake_figures(intake: dict[str, Any] | None, settings: dict[str, Any]) -> list[Figure]:
    if intake is None:
        return []
    out = []
    for workers in settings["workers"]:
        w = f"{workers} worker{'s' if workers > 1 else ''}"
        for c in settings["connections"]:
            key = f"w{workers}.c{c}"
            minimal = _get(intake, "minimal", key)
            ceiling = _get(minimal, "per_second")
            out.append(
                Figure(
                    f"intake.minimal.{key}",
                    f"Minimal endpoint (ceiling), {w}, c={c}",
                    ceiling,
                    "req/s",
                    _get(minimal, "latency_ms_p99"),
                    _get(minimal, "cpu_ms_per_notification"),
                )
            )
            gateway = _get(intake, "gateway", key)
            value = _get(gateway, "per_second")
            p99 = _get(gateway, "latency_ms_p99")
            ratio = _ratio(value, ceiling)
            if c == 10:
                target, met = "p99 < 50 ms", None if p99 is None else p99 < 50
            else:
                target, met = "≥ 0.8 of the ceiling", None if ratio is None else ratio >= 0.8
            out.append(
                Figure(
                    f"intake.gateway.{key}",
                    f"Gateway, single requests, {w}, c={c}",
                    value,
                    "req/s",
                    p99,
                    _get(gateway, "cpu_ms_per_notification"),
                    ceiling,
                    f"intake.minimal.{key}",
                    ratio,
                    target,
                    met,
                    None if gateway else "n/a: " + intake["notes"].get("workers", "not measured"),
                )
            )
        size = intake.get("batch_size") or settings["batch_size"]
        for c in settings["batch_connections"]:
            batch = _get(intake, "batch", f"w{workers}.c{c}")
            value = _get(batch, "per_second")
            missing = "n/a: " + intake["notes"].get("batch", "not measured")
            out.append(
                Figure(
                    f"intake.batch.w{workers}.c{c}",
                    f"Gateway, batch of {size:,} per request, {w}, c={c}",
                    value,
                    "notifications/s",
                    _get(batch, "latency_ms_p99"),
                    _get(batch, "cpu_ms_per_notification"),
                    target="≥ 10,000/s",
                    met=None if value is None else value >= 10_000,
                    note=_machine_note(batch) if batch else missing,
                )
            )
    return out


def _machine_note(run: dict[str, Any]) -> str | None:
    """How busy the whole machine was and where its CPU went, per notification (runs measured
    before the bench read the machine's CPU have no note)."""
    busy, full = _get(run, "machine_busy"), _get(run, "at_full_use_per_second")
    if busy is None or full is None:
        return None
    parts = ", ".join(
        f"{name} {_get(run, f'{key}cpu_ms_per_notification')}"
        for name, key in (
            ("gateway", ""),
            ("RabbitMQ", "rabbitmq_"),
            ("Redis", "redis_"),
            ("PostgreSQL", "postgresql_"),
        )
    )
    return (
        f"machine {busy:.0%} busy, {_get(run, 'machine_cpu_ms_per_notification')} ms CPU per "
        f"notification ({parts}); at full use: {full:,.0f}/s"
    )


def _ceiling_figures(ceilings: dict[str, Any] | None, settings: dict[str, Any]) -> list[Figure]:
    if ceilings is None:
        return []
    prebuilt = _get(ceilings, "smtp_prebuilt", "per_second")
    build_each = _get(ceilings, "smtp_build_each", "per_second")
    smtp = f"aiosmtplib into the sink, {settings['smtp_connections']} connections"
    fcm = _get(ceilings, "fcm", "per_second")
    fastest = (ceilings.get("fcm") or {}).get("client", "aiohttp")
    return [
        Figure(
            "ceiling.smtp.prebuilt", f"SMTP ceiling: {smtp}, messages prebuilt", prebuilt, "mails/s"
        ),
        Figure(
            "ceiling.smtp.build_each",
            f"SMTP: {smtp}, each built with the email package",
            build_each,
            "mails/s",
            ceiling=prebuilt,
            ceiling_key="ceiling.smtp.prebuilt",
            ratio=_ratio(build_each, prebuilt),
        ),
        Figure(
            "ceiling.fcm",
            f"FCM ceiling: {fastest} to the stand-in (the faster client), HTTP/1.1, "
            f"{settings['fcm_concurrency']} in flight",
            fcm,
            "sends/s",
        ),
        *(
            Figure(
                f"ceiling.fcm.{client}",
                f"FCM: {client} to the stand-in, same concurrency",
                _get(ceilings, f"fcm_{client}", "per_second"),
                "sends/s",
                ceiling=fcm,
                ceiling_key="ceiling.fcm",
                ratio=_ratio(_get(ceilings, f"fcm_{client}", "per_second"), fcm),
            )
            for client in ("aiohttp", "httpx")
        ),
    ]


def _e2e_figures(
    e2e: dict[str, Any] | None, ceilings: dict[str, Any] | None, settings: dict[str, Any]
) -> list[Figure]:
    if e2e is None:
        return []
    smtp = _get(ceilings, "smtp_prebuilt", "per_second")
    fcm = _get(ceilings, "fcm", "per_second")
    c = settings["e2e_connections"]
    out = []

    def email(key: str, label: str, value: float | None, p99: float | None) -> Figure:
        ratio = _ratio(value, smtp)
        return Figure(
            key,
            label,
            value,
            "delivered/s",
            p99,
            None,
            smtp,
            "ceiling.smtp.prebuilt",
            ratio,
            "≥ 0.2 of the SMTP ceiling (350/s on a quiet machine)",
            None if ratio is None else ratio >= 0.2,
        )

    if "email_small" in e2e:
        small = e2e["email_small"]
        out.append(
            email(
                "e2e.email.small",
                f"Email end to end, {small['count']:,}, c={c} (median of rounds)",
                small["delivered_per_second"],
                small["request_to_delivery_ms_p99"],
            )
        )
    run = e2e["email"]
    out.append(
        email(
            "e2e.email",
            f"Email end to end, {run['requested']:,}, c={c}",
            run["delivered_per_second"],
            run["request_to_delivery_ms"]["p99"],
        )
    )
    if "email_paced" in e2e:
        paced = e2e["email_paced"]
        p99 = paced["request_to_delivery_ms"]["p99"]
        out.append(
            Figure(
                "e2e.email.paced",
                f"Email paced at {settings['paced_rate']:g} requests/s (sent at "
                f"{paced['accepted_per_second']:,.0f}/s), {paced['requested']:,}: "
                "request to delivery",
                paced["delivered_per_second"],
                "delivered/s",
                p99,
                target="p99 < 1,000 ms",
                met=p99 < 1000,
            )
        )
    push = e2e["push"]
    ratio = _ratio(push["delivered_per_second"], fcm)
    out.append(
        Figure(
            "e2e.push",
            f"Push end to end, {push['requested']:,}, c={c}",
            push["delivered_per_second"],
            "delivered/s",
            push["request_to_delivery_ms"]["p99"],
            None,
            fcm,
            "ceiling.fcm",
            ratio,
            "≥ 0.8 of the FCM ceiling",
            None if ratio is None else ratio >= 0.8,
        )
    )
    cpu = run["cpu_ms_per_notification_ours"]
    out.append(
        Figure(
            "cpu.email.ours",
            "CPU per delivered email, our processes",
            cpu,
            "ms",
            target="< 5 ms",
            met=cpu < 5,
            note="gateway, user_service, template_service, email_service, push_service, "
            "dlq_service",
        )
    )
    out.append(
        Figure(
            "cpu.push.ours",
            "CPU per delivered push, our processes",
            push["cpu_ms_per_notification_ours"],
            "ms",
        )
    )
    return out


def _campaign_figures(
    campaign: dict[str, Any] | None, ceilings: dict[str, Any] | None, settings: dict[str, Any]
) -> list[Figure]:
    if campaign is None:
        return []
    httpx_fcm = _get(ceilings, "fcm_httpx", "per_second")
    out = []
    for kind, ceiling_key, path in (
        ("email", "ceiling.smtp.prebuilt", ("smtp_prebuilt", "per_second")),
        ("push", "ceiling.fcm", ("fcm", "per_second")),
    ):
        run = campaign.get(kind)
        if run is None:
            continue
        label = (
            f"{kind.capitalize()} campaign, {settings['campaign_count']:,} in batches of "
            f"{settings['batch_size']:,} ({settings['campaign_connections']} in flight), "
            "consumers running"
        )
        if "note" in run:
            out.append(Figure(f"campaign.{kind}", label, None, "delivered/s", note=run["note"]))
            continue
        value, ceiling = run["delivered_per_second"], _get(ceilings, *path)
        ratio, minutes = _ratio(value, ceiling), run["minutes_per_campaign"]
        note = f"{run['campaign_size']:,} in {minutes} min"
        if kind == "email":
            target, met = "100,000 in < 6 min", minutes is not None and minutes < 6
        else:
            target, met = "≥ 0.8 of the FCM ceiling", None if ratio is None else ratio >= 0.8
            if httpx_fcm:
                note += f"; {_ratio(value, httpx_fcm)} of httpx's FCM figure"
        out.append(
            Figure(
                f"campaign.{kind}",
                label,
                value,
                "delivered/s",
                run["request_to_delivery_ms"]["p99"],
                None,
                ceiling,
                ceiling_key if ceiling else None,
                ratio,
                target,
                met,
                note,
            )
        )
        urgent = run.get("urgent")
        if urgent:
            late = urgent["request_to_delivery_ms"]
            out.append(
                Figure(
                    f"campaign.{kind}.urgent",
                    f"{kind.capitalize()}, priority {urgent['priority']}, sent into that "
                    f"campaign's backlog ({urgent['count']} single requests): request to "
                    "delivery, median",
                    late["p50"],
                    "ms",
                    late["p99"],
                    target="p99 < 1,000 ms",
                    met=urgent["delivered"] == urgent["count"] and late["p99"] < 1000,
                    note=f"{urgent['delivered']}/{urgent['count']} delivered",
                )
            )
    return out


def failures(result: dict[str, Any]) -> list[str]:
    """What makes the run untrustworthy: lost or duplicated notifications, refused requests."""
    found = []
    for name, run in _runs(result):
        for one in run.get("rounds", [run]):
            if not one.get("ok", True):
                found.append(
                    f"{name}: {one['accepted']}/{one['requested']} accepted, "
                    f"{one['lost']} lost, {one['duplicated']} duplicated"
                )
    return found


def warnings(result: dict[str, Any]) -> list[str]:
    """Requests the system refused (not lost: the client was told), worth a look."""
    found = []
    for name, run in _runs(result):
        for one in run.get("rounds", [run]):
            if one.get("refused"):
                refusal = one["requests"].get("first_refusal", "")
                found.append(f"{name}: {one['refused']} requests refused; the first: {refusal}")
    intake = result.get("intake") or {}
    for key, processes in (intake.get("gateway_processes") or {}).items():
        workers = int(key[1:])
        if workers > 1 and processes <= workers:
            found.append(
                f"the gateway asked for {workers} workers ran {processes} process(es): "
                f"is {intake.get('workers_setting')} honoured?"
            )
    for target in ("minimal", "gateway", "batch"):
        for key, figure in ((result.get("intake") or {}).get(target) or {}).items():
            for one in figure.get("rounds", []):
                if one["failed"]:
                    refusal = one.get("first_refusal", "")
                    found.append(
                        f"intake {target} {key}: {one['failed']} requests failed "
                        f"({one['statuses']}, {one['socket_errors']}); the first: {refusal}"
                    )
    return found


def complete(result: dict[str, Any]) -> dict[str, Any]:
    """The result with its figures, failures and warnings."""
    return result | {
        "figures": [asdict(f) for f in figures(result)],
        "failures": failures(result),
        "warnings": warnings(result),
    }


def write(result: dict[str, Any], config: BenchConfig) -> None:
    config.results_dir.mkdir(parents=True, exist_ok=True)
    (config.results_dir / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    with (config.results_dir / "history.jsonl").open("a") as history:
        history.write(json.dumps(result) + "\n")
    config.doc.parent.mkdir(parents=True, exist_ok=True)
    config.doc.write_text(markdown(result, _limits_section(config.doc)))


def _limits_section(doc: Path) -> str:
    """The hand-written "What limits it" section of the current page, kept across runs."""
    if doc.exists():
        text = doc.read_text()
        if LIMITS_HEADING in text:
            return text[text.index(LIMITS_HEADING) :].rstrip() + "\n"
    return f"{LIMITS_HEADING}\n\n{LIMITS_PLACEHOLDER}\n"


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    return f"{text} {unit}".strip()


def _table(headers: list[str], rows: list[list[str]], *, text: tuple[int, ...] = (0,)) -> str:
    """A Markdown table; columns other than ``text`` are numbers (right-aligned)."""
    rule = ["---" if i in text else "---:" for i in range(len(headers))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [headers, rule, *rows])


def figures_table(result: dict[str, Any]) -> str:
    rows = []
    for f in result["figures"]:
        rows.append(
            [
                f["label"],
                _number(f["value"], f["unit"]) if f["value"] is not None else f["note"] or "n/a",
                _number(f["p99_ms"], "ms") if f["p99_ms"] else "",
                _number(f["cpu_ms"]) if f["cpu_ms"] is not None else "",
                _number(f["ceiling"]) if f["ceiling"] else "",
                str(f["ratio"]) if f["ratio"] is not None else "",
                f["target"] or "",
                {True: "yes", False: "**no**", None: ""}[f["met"]],
            ]
        )
    headers = ["figure", "value", "p99 latency", "CPU ms each", "ceiling", "ratio", "target", "met"]
    notes = [
        f"- {f['label']}: {f['note']}"
        for f in result["figures"]
        if f["value"] is not None and f["note"]
    ]
    table = _table(headers, rows, text=(0, 6, 7))
    return "\n\n".join([table, "\n".join(notes)]) if notes else table


def _label(name: str) -> str:
    return f"{name} (shared)" if name in SHARED else name


def _cpu_table(result: dict[str, Any]) -> str:
    e2e = result.get("e2e") or {}
    idle = _get(result, "idle", "cpu_ms_per_second") or {}
    runs = [(name, e2e[name]) for name in ("email", "push") if name in e2e]
    runs += [(n, r) for n, r in _runs(result) if n.startswith("campaign ")]
    if not runs:
        return "_No end-to-end run._"
    headers = ["process", *(f"ms per {n} ({r['requested']:,})" for n, r in runs)]
    rows = [
        [_label(name)]
        + [_number(_get(r, "cpu_ms_per_notification", name)) for _, r in runs]
        + [_number(idle.get(name))]
        for name in CPU_ORDER
    ]
    rows.append(
        ["**our processes**"]
        + [f"**{_number(r['cpu_ms_per_notification_ours'])}**" for _, r in runs]
        + [""]
    )
    return _table([*headers, "idle, ms per second"], rows)


def _rss_table(result: dict[str, Any]) -> str:
    idle = _get(result, "idle", "rss_mb") or {}
    e2e = result.get("e2e") or {}
    rows = [
        [
            _label(name),
            _number(idle.get(name)),
            _number(_get(e2e, "email", "rss_mb_peak", name)),
            _number(_get(e2e, "push", "rss_mb_peak", name)),
        ]
        for name in CPU_ORDER
        if name not in ("wrk", "postgresql")
    ]
    return _table(["process", "idle MB", "peak MB, email run", "peak MB, push run"], rows)


def _counts_table(result: dict[str, Any]) -> str:
    rows = []
    for name, run in _runs(result):
        for n, one in enumerate(run.get("rounds", [run])):
            r2d = one["request_to_delivery_ms"]
            rows.append(
                [
                    f"{name} round {n + 1}" if "rounds" in run else name,
                    *(f"{one[k]:,}" for k in ("requested", "refused", "accepted", "delivered")),
                    str(one["lost"]),
                    str(one["duplicated"]),
                    _number(one["delivered_per_second"]),
                    " / ".join(_number(r2d[p]) for p in ("p50", "p95", "p99")),
                ]
            )
    headers = ["run", "requested", "refused", "accepted", "delivered", "lost", "duplicated"]
    headers += ["delivered/s", "request→delivery p50 / p95 / p99 ms"]
    return _table(headers, rows, text=(0, 8))


def _processes_line(result: dict[str, Any]) -> str:
    intake = result.get("intake") or {}
    counts = intake.get("gateway_processes") or {}
    if not counts:
        return ""
    setting = ", ".join(intake.get("workers_setting") or []) or "none"
    ran = "; ".join(f"{key[1:]} worker(s): {n} process(es)" for key, n in counts.items())
    return f"\nGateway workers setting: {setting}. Processes the gateway ran: {ran}.\n"


def markdown(result: dict[str, Any], limits: str) -> str:
    m, git = result["machine"], result["git"]
    dirty = " (with uncommitted changes)" if git["dirty"] else ""
    load = ", ".join(f"{x:.1f}" for x in m["load_average_start"])
    load_end = ", ".join(f"{x:.1f}" for x in m.get("load_average_end", []))
    failed = result["failures"]
    verdict = (
        "**FAILED**: " + "; ".join(failed)
        if failed
        else "every notification accepted end to end was delivered once: 0 lost, 0 duplicated"
    )
    settings = result["settings"]
    rounds = f"{settings['rounds']} round{'s' if settings['rounds'] > 1 else ''} of "
    rounds += f"{settings['duration']:g} s"
    if result["warnings"]:
        verdict += "\n- warnings: " + "; ".join(w.replace("|", "/") for w in result["warnings"])
    return f"""# Benchmarks

Written by `make bench` (`benchmarks/`); only the last section is edited by hand. The JSON of
this run is `benchmarks/results/latest.json`; every run is also appended to history.jsonl beside
it (not committed).

- date: {result["date"]}; commit `{git["commit"][:12]}` on `{git["branch"]}`{dirty}
- command: `{result["command"]}` ({result["seconds"]:,.0f} s)
- machine: {m["nproc"]} cores ({m["cpu_model"]}), {m["ram_gb"]} GB RAM, Linux {m["kernel"]},
  Python {m["python"]}; load average {load} at the start, {load_end} at the end
- everything on this one machine: the services, RabbitMQ, Redis, PostgreSQL, the SMTP sink, the
  FCM stand-in and wrk. {m["shared_servers"]}.
- checks: {verdict}

## Figures

Fixed-duration figures: the median of {rounds}, each round measuring a figure and its ceiling
one after the other. "c": requests in flight. Latency: wrk's, request to answer; end to end,
request sent to mail or push received. "CPU ms each": what the measured process (the gateway or
the minimal endpoint) used per notification accepted.

{figures_table(result)}
{_processes_line(result)}
## End-to-end counts

{_counts_table(result)}

## CPU per notification, by process

utime + stime from `/proc/<pid>/stat` (a service's worker processes included) over the run, from
the first request to the last arrival, divided by the notifications delivered. The last column is
what each used per second while idle, before any load (shared servers: other users' work).

{_cpu_table(result)}

## Resident memory

{_rss_table(result)}

## How it is measured

- **Intake**: wrk (2 threads, `benchmarks/notify.lua`: a unique request id per request, an admin
  token) posts to the gateway with the email and push consumers stopped, and to the minimal
  endpoint (`benchmarks/minimal_app.py`: one Redis SET NX and one confirmed publish; uvicorn,
  uvloop, httptools) with as many workers; queues purged after each measurement. The gateway's
  per-caller rate limit is raised out of the way (its check still runs).
- **Bulk intake**: the same, with batches of 1,000 posted to the batch endpoint by a few
  connections at once (the figure is a capacity: at 4 in flight the machine still has idle CPU,
  so 8 are measured too). Beside each, how busy the whole machine was (`/proc/stat`), its CPU per
  notification with the largest parts, and the rate at that cost were the machine fully busy.
- **Ceilings**: aiosmtplib over pooled connections into the same SMTP sink process, messages
  prebuilt or built each with `email.message.EmailMessage`; aiohttp (push_service's client) and
  httpx to the same FCM stand-in with as many requests in flight as push_service's prefetch; the
  faster of the two is the FCM ceiling.
- **End to end**: wrk sends exactly N unique notifications and records each accepted one's
  notification id and send time; the sink and the FCM stand-in (processes of their own) record
  each arrival; the run fails when any accepted notification is missing or arrives twice.
- **Campaign**: the bench posts batches to the batch endpoint with the consumers running, each
  notification with its own link (so each is rendered), and waits for every accepted one at the
  sink or the stand-in, checked the same way; the figure is delivered per second from the first
  batch sent to the last arrival, and the minutes that rate gives 100,000 notifications.

{limits}"""
