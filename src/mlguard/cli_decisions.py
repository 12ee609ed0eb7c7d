"""`mlguard decisions ...`: read and change the decision store (see decisions/store.py)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mlguard.cli_options import StateOpt, err, out
from mlguard.decisions.store import ACTIVE, ALLOW, BLOCK_TTL, EXPIRED, REVOKED, Decision, DecisionStore
from mlguard.errors import UsageError
from mlguard.explain.reasons import escape_json_text, safe_text
from mlguard.spans import parse_span

decisions_app = typer.Typer(
    help="List and manage decisions in the store: allow (feedback that persists), unblock, block, expire.",
    no_args_is_help=True,
)
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: kept with the decision.")]


def parse_ttl(value: str) -> timedelta:
    """A TTL such as 30m, 4h, 7d."""
    span = parse_span(value)
    if span is None or span <= timedelta(0):
        raise UsageError(f"--ttl '{safe_text(value, 20)}' is not a duration: use e.g. 30m, 4h or 7d")
    return span


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _table(rows: list[Decision], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("id", "client", "verdict", "score", "state", "origin", "created", "expires", "why"):
        table.add_column(column, justify="right" if column in ("id", "score") else "left")
    for d in rows:
        why = d.note or "; ".join(d.reasons[:2])
        table.add_row(
            str(d.id),
            Text(safe_text(d.client, 45)),
            d.verdict,
            "-" if d.score is None else f"{d.score:.3f}",
            d.state,
            d.origin,
            d.created,
            d.expires or "never",
            Text(safe_text(why, 200)),
        )
    out.print(table)


@decisions_app.command("list")
def list_command(
    state_path: StateOpt,
    verdict: Annotated[str | None, typer.Option("--verdict", help="alert, block or allow.")] = None,
    state: Annotated[str, typer.Option("--state-filter", help="active, expired, revoked or all.")] = ACTIVE,
    json_out: Annotated[bool, typer.Option("--json", help="JSON Lines, one object per decision.")] = False,
) -> None:
    """Decisions in the store (active ones by default)."""
    if verdict is not None and verdict not in ("alert", "block", ALLOW):
        raise UsageError(f"--verdict '{safe_text(verdict, 20)}': expected one of alert, block, allow")
    if state not in (ACTIVE, EXPIRED, REVOKED, "all"):
        raise UsageError(
            f"--state-filter '{safe_text(state, 20)}': expected one of active, expired, revoked, all"
        )
    with DecisionStore(state_path) as store:
        store.expire(now_utc())
        rows = store.list(state=None if state == "all" else state, verdict=verdict)
    if json_out:
        sys.stdout.write("".join(escape_json_text(json.dumps(d.as_json())) + "\n" for d in rows))
    else:
        _table(rows, f"{len(rows)} decision(s), {state}")


@decisions_app.command("show")
def show_command(
    state_path: StateOpt, client: Annotated[str, typer.Argument(help="Address or range.")]
) -> None:
    """Every decision ever taken about one client, oldest first."""
    with DecisionStore(state_path) as store:
        store.expire(now_utc())
        rows = store.history(client.strip())
    if not rows:
        raise UsageError(f"no decision about '{safe_text(client, 60)}' in {state_path}")
    _table(rows, f"history of {safe_text(client, 60)}")


@decisions_app.command("allow")
def allow_command(
    state_path: StateOpt,
    client: Annotated[str, typer.Argument(help="Address or CIDR range.")],
    reason: ReasonOpt,
    ttl: Annotated[str | None, typer.Option("--ttl", help="Allow for this long (default: for good).")] = None,
) -> None:
    """Mark a client or range as fine: never blocked again, its active alerts and blocks revoked."""
    with DecisionStore(state_path) as store:
        revoked = store.allow(client, now_utc(), reason, parse_ttl(ttl) if ttl else None)
    err.print(Text(f"allowed {safe_text(client, 60)}; {revoked} active decision(s) revoked"))


@decisions_app.command("unblock")
def unblock_command(
    state_path: StateOpt, client: Annotated[str, typer.Argument(help="Address or range.")], reason: ReasonOpt
) -> None:
    """Revoke a client's active blocks (it may be blocked again if it misbehaves again)."""
    with DecisionStore(state_path) as store:
        revoked = store.unblock(client.strip(), reason)
    if revoked == 0:
        raise UsageError(f"'{safe_text(client, 60)}' has no active block in {state_path}")
    err.print(Text(f"unblocked {safe_text(client, 60)} ({revoked} decision(s) revoked)"))


@decisions_app.command("block")
def block_command(
    state_path: StateOpt,
    client: Annotated[str, typer.Argument(help="Address or CIDR range.")],
    reason: ReasonOpt,
    ttl: Annotated[str, typer.Option("--ttl", help="How long, e.g. 30m, 4h, 7d.")] = "4h",
) -> None:
    """Block a client by hand (refused for allowed, private or loopback addresses)."""
    with DecisionStore(state_path) as store:
        decision_id = store.block(client, now_utc(), reason, parse_ttl(ttl) if ttl else BLOCK_TTL)
    err.print(Text(f"blocked {safe_text(client, 60)} for {ttl} (decision {decision_id})"))


@decisions_app.command("expire")
def expire_command(state_path: StateOpt) -> None:
    """Mark every decision whose TTL has passed as expired."""
    with DecisionStore(state_path) as store:
        count = store.expire(now_utc())
    err.print(Text(f"{count} decision(s) expired"))
