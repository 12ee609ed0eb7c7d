"""Choosing enforcers on the command line, the same way for `mlguard enforce` and `mlguard watch`.

Every enforcer's flags are declared once here; `EnforcerChoice` carries what a command was
given, and `build_enforcers` turns it into back-ends from the registry (`mlguard.enforcers`).
Secrets never go on the command line (it is visible to every user of the machine): the
CrowdSec password comes from its credentials file or `MLGUARD_CROWDSEC_PASSWORD`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mlguard.cli_options import StateOpt, crawlers_from, err, out
from mlguard.decisions.policy import Policy
from mlguard.decisions.store import DecisionStore
from mlguard.enforcers import Enforcer, get_enforcer
from mlguard.errors import EnforcerError, UsageError
from mlguard.explain.reasons import safe_text

WebhookOpt = Annotated[str | None, typer.Option("--webhook", help="POST new alerts and blocks to this URL.")]
WebhookStyleOpt = Annotated[
    str, typer.Option("--webhook-style", help="json (generic) or slack (incoming webhook).")
]
NginxIncludeOpt = Annotated[
    Path | None,
    typer.Option("--nginx-include", dir_okay=False, help="Keep this nginx include file of deny lines."),
]
NginxCommandOpt = Annotated[
    str, typer.Option("--nginx-command", help="How to call nginx for -t and -s reload.")
]
NftablesOpt = Annotated[
    bool,
    typer.Option("--nftables", help="Keep nftables sets of blocked addresses (docs/enforcer-nftables.md)."),
]
NftablesTableOpt = Annotated[str, typer.Option("--nftables-table", help="The nftables table: 'FAMILY NAME'.")]
NftablesCreateOpt = Annotated[
    bool,
    typer.Option("--nftables-create", help="Create the table, sets and a dropping input chain if missing."),
]
NftablesCommandOpt = Annotated[str, typer.Option("--nftables-command", help="How to call nft.")]
AwsIpv4SetOpt = Annotated[
    str | None,
    typer.Option(
        "--aws-waf-ipv4-set",
        help="Keep this AWS WAF IPv4 IP set (NAME/ID or its ARN) equal to the active blocks; give "
        "MLGuard a set of its own (docs/enforcer-aws-waf.md).",
    ),
]
AwsIpv6SetOpt = Annotated[
    str | None, typer.Option("--aws-waf-ipv6-set", help="The IPv6 IP set for IPv6 blocks (NAME/ID or ARN).")
]
AwsScopeOpt = Annotated[
    str | None,
    typer.Option(
        "--aws-waf-scope", help="REGIONAL (default) or CLOUDFRONT; read from the ARN when one is given."
    ),
]
AwsRegionOpt = Annotated[
    str | None, typer.Option("--aws-region", help="Region of the IP sets (default: boto3's, or the ARN's).")
]
AwsEndpointOpt = Annotated[
    str | None, typer.Option("--aws-endpoint-url", help="Another WAFv2 endpoint (a VPC endpoint).")
]
AwsMaxEntriesOpt = Annotated[
    int,
    typer.Option("--aws-waf-max-entries", help="Most entries per IP set; the most severe blocks are kept."),
]
CrowdsecUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--crowdsec-url", help="Push blocks to this CrowdSec Local API (docs/enforcer-crowdsec.md)."
    ),
]
CrowdsecCredentialsOpt = Annotated[
    Path | None,
    typer.Option(
        "--crowdsec-credentials",
        dir_okay=False,
        help="The machine's credentials file (`cscli machines add mlguard --auto -f FILE`).",
    ),
]
CrowdsecMachineOpt = Annotated[
    str | None,
    typer.Option(
        "--crowdsec-machine",
        help="Machine id, if not in the credentials file (password: MLGUARD_CROWDSEC_PASSWORD).",
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print what would be sent; send nothing.")]


@dataclass
class EnforcerChoice:
    webhook: str | None = None
    webhook_style: str = "json"
    nginx_include: Path | None = None
    nginx_command: str = "nginx"
    nftables: bool = False
    nftables_table: str = "inet mlguard"
    nftables_create: bool = False
    nftables_command: str = "nft"
    aws_waf_ipv4_set: str | None = None
    aws_waf_ipv6_set: str | None = None
    aws_waf_scope: str | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    aws_waf_max_entries: int = 10_000
    crowdsec_url: str | None = None
    crowdsec_credentials: Path | None = None
    crowdsec_machine: str | None = None

    @classmethod
    def from_options(cls, options: dict[str, object]) -> EnforcerChoice:
        """From a command's keyword arguments (those that name an enforcer option)."""
        return cls(**{k: v for k, v in options.items() if k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @property
    def any(self) -> bool:
        return bool(
            self.webhook
            or self.nginx_include
            or self.nftables
            or self.aws_waf_ipv4_set
            or self.crowdsec_url
            or self.crowdsec_credentials
            or self.crowdsec_machine
        )


def build_enforcers(choice: EnforcerChoice, store: DecisionStore, policy: Policy) -> list[Enforcer]:
    """The enforcers chosen, notifiers first; each checks its own options (UsageError)."""
    chosen: list[Enforcer] = []
    if choice.webhook is not None:
        chosen.append(get_enforcer("webhook", url=choice.webhook, store=store, style=choice.webhook_style))
    if choice.nginx_include is not None:
        chosen.append(
            get_enforcer("nginx", include=choice.nginx_include, command=choice.nginx_command, policy=policy)
        )
    if choice.nftables:
        chosen.append(
            get_enforcer(
                "nftables",
                command=choice.nftables_command,
                table=choice.nftables_table,
                create=choice.nftables_create,
                policy=policy,
            )
        )
    if choice.aws_waf_ipv4_set is not None:
        chosen.append(
            get_enforcer(
                "aws-waf",
                ipv4_set=choice.aws_waf_ipv4_set,
                ipv6_set=choice.aws_waf_ipv6_set,
                scope=choice.aws_waf_scope,
                region=choice.aws_region,
                endpoint_url=choice.aws_endpoint_url,
                max_entries=choice.aws_waf_max_entries,
                policy=policy,
            )
        )
    elif choice.aws_waf_ipv6_set is not None:
        raise UsageError("--aws-waf-ipv6-set needs --aws-waf-ipv4-set too")
    if choice.crowdsec_url or choice.crowdsec_credentials or choice.crowdsec_machine:
        chosen.append(
            get_enforcer(
                "crowdsec",
                store=store,
                url=choice.crowdsec_url,
                credentials=choice.crowdsec_credentials,
                machine_id=choice.crowdsec_machine,
                password=os.environ.get("MLGUARD_CROWDSEC_PASSWORD"),
                policy=policy,
            )
        )
    return chosen


def enforce_command(
    state_path: StateOpt,
    webhook: WebhookOpt = None,
    webhook_style: WebhookStyleOpt = "json",
    nginx_include: NginxIncludeOpt = None,
    nginx_command: NginxCommandOpt = "nginx",
    nftables: NftablesOpt = False,
    nftables_table: NftablesTableOpt = "inet mlguard",
    nftables_create: NftablesCreateOpt = False,
    nftables_command: NftablesCommandOpt = "nft",
    aws_waf_ipv4_set: AwsIpv4SetOpt = None,
    aws_waf_ipv6_set: AwsIpv6SetOpt = None,
    aws_waf_scope: AwsScopeOpt = None,
    aws_region: AwsRegionOpt = None,
    aws_endpoint_url: AwsEndpointOpt = None,
    aws_waf_max_entries: AwsMaxEntriesOpt = 10_000,
    crowdsec_url: CrowdsecUrlOpt = None,
    crowdsec_credentials: CrowdsecCredentialsOpt = None,
    crowdsec_machine: CrowdsecMachineOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Push the store's active decisions to the enforcers given, once: a webhook gets each new
    decision once; nginx, nftables, AWS WAF and CrowdSec are made to hold exactly the active
    blocks (expired and revoked ones released). For continuous enforcement run `mlguard watch`."""
    from mlguard.cli_decisions import now_utc

    choice = EnforcerChoice.from_options(locals())
    if not choice.any:
        raise UsageError(
            "name at least one target: --webhook URL, --nginx-include FILE, --nftables, "
            "--aws-waf-ipv4-set SET or --crowdsec-url URL"
        )
    failures: list[str] = []
    with DecisionStore(state_path) as store:
        store.expire(now_utc())
        active = store.list()
        # Published crawler ranges are never pushed, whatever decided the block.
        policy = Policy(allow=store.allowed(), crawlers=crawlers_from(None, dns=False))
        for enforcer in build_enforcers(choice, store, policy):
            try:
                if dry_run:
                    pending = enforcer.pending(active)
                    for d in pending:
                        out.print(
                            Text(f"would send to {enforcer.name}: {d.verdict} {safe_text(d.client, 45)}")
                        )
                    err.print(Text(f"dry run: {len(pending)} new decision(s) for {enforcer.name}"))
                    continue
                # One enforcer failing does not stop the others; its decisions wait for the next run.
                result = enforcer.sync(active)
            except EnforcerError as exc:
                failures.append(str(exc))
                err.print(Text(f"{enforcer.name}: {safe_text(exc)}"))
                continue
            finally:
                enforcer.close()
            summary = f"{result.sent} sent, {result.unchanged} already there, {result.failed} kept for later"
            err.print(Text(f"{enforcer.name}: {summary}"))
            for message in result.messages:
                err.print(Text(f"  {safe_text(message, 300)}"))
            failures += result.messages[:1] if result.failed else []
    if failures:
        raise EnforcerError(failures[0])
