"""`mlguard watch`: the daemon's command line (the work is in `mlguard.watch`)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from mlguard.cli_enforcers import (
    AwsEndpointOpt,
    AwsIpv4SetOpt,
    AwsIpv6SetOpt,
    AwsMaxEntriesOpt,
    AwsRegionOpt,
    AwsScopeOpt,
    CrowdsecCredentialsOpt,
    CrowdsecMachineOpt,
    CrowdsecUrlOpt,
    DryRunOpt,
    EnforcerChoice,
    NftablesCommandOpt,
    NftablesCreateOpt,
    NftablesOpt,
    NftablesTableOpt,
    NginxCommandOpt,
    NginxIncludeOpt,
    WebhookOpt,
    WebhookStyleOpt,
    build_enforcers,
)
from mlguard.cli_options import (
    AlertOpt,
    AllowOpt,
    BlockOpt,
    BlockPrivateOpt,
    CampaignsOpt,
    CrawlerDnsOpt,
    CrawlerNameserverOpt,
    CrawlerRangesOpt,
    FormatOpt,
    Ipv6Opt,
    MinBlockOpt,
    ModelOpt,
    SeedOpt,
    StateOpt,
    TrustedOpt,
    VerboseOpt,
    crawlers_from,
    identity_from,
    policy_from,
)
from mlguard.decisions.breaker import DEFAULT_MAX_BLOCKS_PER_MINUTE, CircuitBreaker
from mlguard.decisions.policy import (
    DEFAULT_ALERT_THRESHOLD,
    DEFAULT_BLOCK_THRESHOLD,
    DEFAULT_MIN_BLOCK_REQUESTS,
)
from mlguard.decisions.store import DecisionStore
from mlguard.detectors.ensemble import preload
from mlguard.detectors.model import load_model
from mlguard.errors import UsageError
from mlguard.explain.reasons import safe_text
from mlguard.formats import AUTO
from mlguard.observability import Metrics, configure_logging
from mlguard.spans import parse_span
from mlguard.watch import Watcher, WatchSettings


def _span(value: str, flag: str) -> timedelta:
    span = parse_span(value)
    if span is None or span <= timedelta(0):
        raise UsageError(f"{flag} '{safe_text(value, 20)}' is not a duration: use e.g. 30s, 10m, 1h or 1d")
    return span


def watch_command(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Log files to follow (they may not exist yet); rotation is followed.", show_default=False
        ),
    ],
    state_path: StateOpt,
    model: ModelOpt = None,
    log_format: FormatOpt = AUTO,
    window: Annotated[
        str, typer.Option("--window", help="How much recent traffic each client is judged on.")
    ] = "1h",
    interval: Annotated[
        float,
        typer.Option("--interval", min=0.5, help="Seconds between rescoring the clients that just acted."),
    ] = 5.0,
    full_every: Annotated[
        float,
        typer.Option("--full-every", min=1.0, help="Seconds between scoring the whole window (campaigns)."),
    ] = 300.0,
    refresh_every: Annotated[
        str | None,
        typer.Option(
            "--refresh-every",
            help="Refresh the baseline from recent unflagged traffic this often (e.g. 6h). Without "
            "--model the baseline is learned from the window and refreshed hourly.",
        ),
    ] = None,
    save_model: Annotated[
        Path | None, typer.Option("--save-model", dir_okay=False, help="Write each refreshed baseline here.")
    ] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Read files already there from their start, not their end.")
    ] = False,
    enforce: Annotated[
        bool, typer.Option("--enforce", help="Push blocks to the blocking enforcers (otherwise alert-only).")
    ] = False,
    dry_run: DryRunOpt = False,
    max_blocks_per_minute: Annotated[
        int,
        typer.Option(
            "--max-blocks-per-minute",
            min=1,
            help="Circuit breaker: more new blocks than this in a minute switches to alert-only.",
        ),
    ] = DEFAULT_MAX_BLOCKS_PER_MINUTE,
    breaker_cooldown: Annotated[
        str,
        typer.Option("--breaker-cooldown", help="The breaker closes after this long without a held block."),
    ] = "15m",
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
    alert_threshold: AlertOpt = DEFAULT_ALERT_THRESHOLD,
    block_threshold: BlockOpt = DEFAULT_BLOCK_THRESHOLD,
    min_block_requests: MinBlockOpt = DEFAULT_MIN_BLOCK_REQUESTS,
    allow: AllowOpt = None,
    block_private: BlockPrivateOpt = False,
    trusted_proxy: TrustedOpt = None,
    ipv6_prefix: Ipv6Opt = None,
    crawler_ranges: CrawlerRangesOpt = None,
    crawler_dns: CrawlerDnsOpt = True,
    crawler_nameserver: CrawlerNameserverOpt = None,
    campaigns: CampaignsOpt = True,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics here.")
    ] = None,
    metrics_host: Annotated[str, typer.Option("--metrics-host", help="Address for /metrics.")] = "127.0.0.1",
    log_style: Annotated[
        str, typer.Option("--log-style", help="Daemon logs on stderr: text or json (one object per line).")
    ] = "text",
    seed: SeedOpt = 0,
    verbose: VerboseOpt = False,
) -> None:
    """Follow logs as they grow, flag clients within seconds, keep decisions in the store and
    push them to enforcers. Alert-only unless --enforce; stops cleanly on SIGTERM or Ctrl-C."""
    if "-" in paths:
        raise UsageError("watch follows files; to score stdin once, use 'mlguard detect -'")
    if log_style not in ("text", "json"):
        raise UsageError(f"--log-style '{safe_text(log_style, 20)}': expected text or json")
    if enforce and dry_run:
        raise UsageError("choose one of --enforce and --dry-run")
    configure_logging(log_style, verbose)
    window_span = _span(window, "--window")
    refresh = _span(refresh_every, "--refresh-every") if refresh_every else None
    if refresh is None and model is None:
        refresh = timedelta(hours=1)  # a baseline learned from a window must keep learning
    settings = WatchSettings(
        paths=paths,
        log_format=log_format,
        window_secs=int(window_span.total_seconds()),
        interval_secs=interval,
        full_every_secs=full_every,
        refresh_every_secs=refresh.total_seconds() if refresh else None,
        start_at_end=not from_start,
        enforce=enforce,
        dry_run=dry_run,
        campaigns=campaigns,
        save_model=save_model,
        model_path=model,
        seed=seed,
    )
    policy = policy_from(
        alert_threshold,
        block_threshold,
        min_block_requests,
        allow or [],
        block_private,
        trusted_proxy,
        crawlers_from(crawler_ranges, crawler_dns, crawler_nameserver),
    )
    baseline = load_model(model) if model is not None else None
    preload()
    breaker = CircuitBreaker(max_blocks_per_minute, _span(breaker_cooldown, "--breaker-cooldown"))
    choice = EnforcerChoice.from_options(locals())
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    metrics = Metrics()
    with DecisionStore(state_path) as store:
        policy.allow = [*policy.allow, *store.allowed()]  # feedback that persists
        enforcers = build_enforcers(choice, store, policy)
        watcher = Watcher(
            settings,
            policy,
            store,
            baseline,
            enforcers,
            identity=identity_from(trusted_proxy, ipv6_prefix),
            breaker=breaker,
            metrics=metrics,
        )
        if metrics_port is not None:
            port = metrics.serve(metrics_host, metrics_port)
            logging.getLogger("mlguard.watch").info(
                "metrics served", extra={"event": "metrics", "url": f"http://{metrics_host}:{port}/metrics"}
            )
        try:
            while not stop.is_set():
                watcher.step()
                stop.wait(1.0)
            watcher.flush()
        finally:
            watcher.close()
            metrics.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            watcher.log_summary()
