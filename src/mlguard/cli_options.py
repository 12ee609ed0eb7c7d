"""Options and helpers shared by the `mlguard` commands: each option's flag and help are
written once here, and the commands list the ones they take."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from mlguard.decisions.policy import Policy, parse_networks

if TYPE_CHECKING:
    from mlguard.decisions.crawlers import CrawlerVerifier
from mlguard.formats import AUTO, FORMATS
from mlguard.identity import ClientIdentity

# Piped output is read by people too (less, a ticket): give tables room instead of 80 columns.
out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

PathsArg = Annotated[
    list[str],
    typer.Argument(help="Log files, globs or directories; '-' reads stdin.", show_default=False),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--log-format",
        "-f",
        help=f"Log format: {AUTO}, one of {', '.join(FORMATS)}, or the server's own format string as "
        "'nginx:<log_format>' or 'apache:<LogFormat>', or read from a config file as "
        "'nginx-config:PATH[#NAME]' or 'apache-config:PATH[#NICKNAME]', or JSON Lines with a field "
        "mapping as 'jsonl:client=KEY,time=KEY,request=KEY,status=KEY,...'.",
    ),
]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Fail on the first line that does not parse.")]
WindowOpt = Annotated[
    int,
    typer.Option("--window-secs", min=10, help="Length of the time windows for burst features."),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="Score against this baseline (from 'mlguard train')."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed of the detectors.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show details of errors.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")]
CampaignsOpt = Annotated[
    bool,
    typer.Option(
        "--campaigns/--no-campaigns",
        help="Find campaigns: groups of clients that each do little and act as one (docs/campaigns.md).",
    ),
]
AlertOpt = Annotated[float, typer.Option("--alert-threshold", help="Score from which a client is reported.")]
BlockOpt = Annotated[
    float,
    typer.Option(
        "--block-threshold",
        help="Score from which a client with --min-block-requests requests may be blocked "
        "(a little less with more requests: docs/decisions.md).",
    ),
]
MinBlockOpt = Annotated[
    int, typer.Option("--min-block-requests", min=1, help="Never block a client with fewer requests.")
]
AllowOpt = Annotated[
    list[str] | None, typer.Option("--allow", help="Never block this IP or CIDR (repeatable).")
]
BlockPrivateOpt = Annotated[
    bool, typer.Option("--block-private", help="Allow blocking private and loopback addresses.")
]
TrustedOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--trusted-proxy",
        help="A proxy or load balancer (IP or CIDR, repeatable) whose X-Forwarded-For is believed: "
        "the client is the right-most untrusted address of the header. Never blocked.",
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only lines from this time: ISO 8601 (2026-11-20 or 2026-11-20T08:00:00+01:00; UTC "
        "if no offset) or a span back from now (90m, 24h, 7d, 2w).",
    ),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Only lines before this time (same forms as --since).")
]
Ipv6Opt = Annotated[
    int | None,
    typer.Option(
        "--ipv6-prefix", min=1, max=128, help="Treat each IPv6 prefix of this length (e.g. 64) as one client."
    ),
]
StateOpt = Annotated[
    Path,
    typer.Option("--state", envvar="MLGUARD_STATE", help="The decision store (SQLite file).", dir_okay=False),
]


CrawlerRangesOpt = Annotated[
    Path | None,
    typer.Option(
        "--crawler-ranges",
        dir_okay=False,
        help="Published crawler IP ranges to use instead of the bundled ones (made with "
        "`python -m mlguard.decisions.crawlers --update`; docs/crawlers.md).",
    ),
]
CrawlerDnsOpt = Annotated[
    bool,
    typer.Option(
        "--crawler-dns/--no-crawler-dns",
        help="Before a block, verify a client whose user agent claims a well-known crawler by "
        "forward-confirmed reverse DNS; verified crawlers are never blocked.",
    ),
]
CrawlerNameserverOpt = Annotated[
    str | None,
    typer.Option(
        "--crawler-nameserver", help="DNS server for crawler checks, ADDRESS[:PORT] (default: the system's)."
    ),
]


def crawlers_from(ranges: Path | None, dns: bool, nameserver: str | None = None) -> CrawlerVerifier:
    from mlguard.decisions.crawlers import CrawlerRanges, CrawlerVerifier, make_resolver, parse_nameserver

    resolver = None
    if nameserver:
        host, port = parse_nameserver(nameserver)
        resolver = make_resolver([host], port)
    return CrawlerVerifier(CrawlerRanges.load(ranges), resolver=resolver, dns=dns)


def policy_from(
    alert: float,
    block: float,
    min_requests: int,
    allow: list[str],
    block_private: bool,
    trusted: list[str] | None = None,
    crawlers: CrawlerVerifier | None = None,
) -> Policy:
    return Policy(
        alert,
        block,
        min_requests,
        parse_networks(allow),
        block_private,
        parse_networks(trusted or []),
        crawlers,
    )


def identity_from(trusted: list[str] | None, ipv6_prefix: int | None) -> ClientIdentity:
    return ClientIdentity(parse_networks(trusted or []), ipv6_prefix)
