"""The `mlguard` command line: a thin layer over `mlguard.pipeline`.

Only this module maps errors to exit codes: 0 success, 2 bad usage or unreadable input (one
line on stderr, no traceback unless --verbose), 1 an internal error.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from mlguard import __version__
from mlguard.cli_decisions import decisions_app
from mlguard.cli_enforcers import enforce_command
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
    PathsArg,
    ProgressOpt,
    SeedOpt,
    SinceOpt,
    StrictOpt,
    TrustedOpt,
    UntilOpt,
    VerboseOpt,
    WindowOpt,
    crawlers_from,
    err,
    identity_from,
    out,
    policy_from,
)
from mlguard.cli_serve import serve_command
from mlguard.cli_spark import Engine, EngineOpt, SparkMasterOpt, features_command, read_spark
from mlguard.cli_watch import watch_command
from mlguard.decisions.policy import (
    ALERT,
    BLOCK,
    DEFAULT_ALERT_THRESHOLD,
    DEFAULT_BLOCK_THRESHOLD,
    DEFAULT_MIN_BLOCK_REQUESTS,
    PASS,
    Policy,
)
from mlguard.decisions.store import DecisionStore
from mlguard.detectors.ensemble import preload
from mlguard.detectors.model import build_baseline, load_model, save_model
from mlguard.errors import MLGuardError, UsageError
from mlguard.evaluation import Evaluation, evaluate, load_labels
from mlguard.explain.reasons import campaign_behaviour, describe, escape_json_text, ndjson_of, safe_text
from mlguard.features.aggregate import WINDOW_SECS
from mlguard.features.catalogue import FEATURE_NAMES, FEATURES
from mlguard.findings import json_lines, output_frame
from mlguard.formats import AUTO, get_format
from mlguard.identity import ClientIdentity, parse_address
from mlguard.pipeline import Detection, ReadResult, read_logs, reasons_of, score_table
from mlguard.spans import parse_span

app = typer.Typer(
    name="mlguard",
    help="Find malicious web clients in HTTP access logs with unsupervised machine learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_command_started: float | None = None


@app.callback()
def _started() -> None:
    # Runs before every command: the summary's time is the whole command's, output included.
    global _command_started
    _command_started = time.perf_counter()


app.add_typer(decisions_app, name="decisions")
app.command("enforce")(enforce_command)
app.command("watch")(watch_command)
app.command("serve")(serve_command)
app.command("features")(features_command)


def _total_size(paths: list[str]) -> int | None:
    total = 0
    for spec in paths:
        if spec == "-" or not os.path.isfile(spec):
            return None
        total += os.path.getsize(spec)
    return total


@contextmanager
def _progress(paths: list[str], enabled: bool) -> Iterator[Any]:
    total = _total_size(paths)
    show = enabled and err.is_terminal and (total is None or total > 20 * 1024 * 1024)
    if not show:
        yield None
        return
    columns = [TextColumn("reading"), BarColumn(), DownloadColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("read", total=total)
        yield lambda n: bar.advance(task, n)


def _read(
    paths: list[str],
    log_format: str,
    strict: bool,
    window_secs: int,
    progress: bool,
    keep_client: str | None = None,
    identity: ClientIdentity | None = None,
    window: dict[str, datetime | None] | None = None,
    engine: Engine = Engine.polars,
    spark_master: str | None = None,
) -> ReadResult:
    if log_format != AUTO:
        get_format(log_format)  # a bad name or format string fails here, before any reading
    if engine is Engine.spark:
        return read_spark(
            paths,
            log_format=log_format,
            strict=strict,
            window_secs=window_secs,
            identity=identity,
            spark_master=spark_master,
            keep_client=keep_client,
            **(window or {}),
        )
    with _progress(paths, progress) as advance:
        return read_logs(
            paths,
            log_format=log_format,
            strict=strict,
            window_secs=window_secs,
            keep_client=keep_client,
            progress=advance,
            identity=identity,
            **(window or {}),
        )


def _when(value: str | None, flag: str) -> datetime | None:
    """A --since/--until value as an aware UTC datetime."""
    if value is None:
        return None
    text = value.strip()
    span = parse_span(text)
    if span is not None:
        return datetime.now(UTC) - span
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{flag} '{safe_text(value, 40)}' is not a time: use ISO 8601 (2026-11-20T08:00:00Z) "
            "or a span back from now (24h)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _window(since: str | None, until: str | None) -> dict[str, datetime | None]:
    start, end = _when(since, "--since"), _when(until, "--until")
    if start is not None and end is not None and start >= end:
        raise UsageError("--since must be earlier than --until")
    return {"since": start, "until": end}


def _detect(
    paths: list[str],
    policy: Policy,
    model: Path | None,
    *,
    log_format: str,
    strict: bool,
    window_secs: int,
    progress: bool,
    seed: int,
    keep_client: str | None = None,
    identity: ClientIdentity | None = None,
    window: dict[str, datetime | None] | None = None,
    campaigns: bool = True,
    engine: Engine = Engine.polars,
    spark_master: str | None = None,
) -> tuple[ReadResult, Detection]:
    """Read, score and decide: what `detect`, `explain` and `eval` share."""
    baseline = load_model(model) if model is not None else None  # a bad model fails before reading
    preload()
    result = _read(
        paths,
        log_format,
        strict,
        window_secs,
        progress,
        keep_client=keep_client,
        identity=identity,
        window=window,
        engine=engine,
        spark_master=spark_master,
    )
    return result, score_table(result, policy, baseline, random_state=seed, campaigns=campaigns)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


MEMBERS_SHOWN = 5  # in the campaigns table; --json lists them all


def _summary(result: ReadResult, detection: Detection | None) -> None:
    s = result.stats
    formats = ", ".join(sorted(set(s.formats.values()))) or "none"
    parts = [f"{s.lines:,} lines read", f"{s.records:,} parsed", f"{s.unparsed:,} unparsed"]
    if detection is not None:
        verdicts = detection.findings["verdict"].value_counts()
        counts = dict(zip(verdicts["verdict"].to_list(), verdicts["count"].to_list(), strict=True))
        parts += [
            f"{detection.findings.height:,} clients",
            f"{counts.get(ALERT, 0):,} alert",
            f"{counts.get(BLOCK, 0):,} block",
        ]
    # The whole command (reading, scoring, deciding, writing the output), not the reading
    # alone: what a person waiting for the result, or a benchmark timing the process, sees.
    seconds = time.perf_counter() - _command_started if _command_started is not None else s.seconds
    seconds = max(seconds, s.seconds)
    rate = s.lines / seconds if seconds > 0 else 0.0
    parts.append(f"{seconds:.2f} s ({rate:,.0f} lines/s; reading {s.seconds:.2f} s)")
    err.print(Text(f"format: {formats}; " + "; ".join(parts)))
    if s.outside_window:
        err.print(Text(f"  {s.outside_window:,} parsed lines outside --since/--until left out"))
    if s.via_proxy or s.forged_forwarded:
        err.print(
            Text(
                f"  client identity: {s.via_proxy:,} lines took their client from X-Forwarded-For behind a "
                f"trusted proxy; {s.forged_forwarded:,} lines carried X-Forwarded-For from an untrusted "
                "peer (ignored: the peer is the client)"
            )
        )
    for reason, count in s.unparsed_by_reason.most_common():
        err.print(Text(f"  unparsed: {count:,} x {reason}"))
    for ex in s.examples:
        err.print(Text(f"  {safe_text(ex.source)}:{ex.line_no}: {ex.reason}: {ex.text}"))
    for problem in s.problems:
        err.print(Text(f"  warning: {safe_text(problem.source)}: {safe_text(problem.message)}"))


def _table(findings: pl.DataFrame, top: int) -> None:
    flagged = findings.filter(pl.col("verdict").is_in([ALERT, BLOCK]))
    shown = flagged.head(top) if flagged.height else findings.head(min(top, 5))
    title = (
        f"{flagged.height} flagged client(s)" if flagged.height else "No client flagged; the highest scores:"
    )
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("client", no_wrap=True, max_width=40)
    table.add_column("score", justify="right")
    table.add_column("verdict")
    table.add_column("requests", justify="right")
    table.add_column("reasons", min_width=50)
    styles = {BLOCK: "bold red", ALERT: "yellow"}
    for row in shown.iter_rows(named=True):
        # Text(), not markup: attacker-controlled strings are never interpreted.
        table.add_row(
            Text(safe_text(row["client"], 45)),
            Text(f"{row['score']:.3f}"),
            Text(row["verdict"], style=styles.get(row["verdict"], "")),
            Text(f"{int(row['requests']):,}"),
            Text("\n".join(row["reasons"]) or "-"),
        )
    out.print(table)
    if flagged.height > top:
        out.print(Text(f"... and {flagged.height - top} more flagged (use --top or --json)"))


@app.command()
def detect(
    paths: PathsArg,
    json_out: Annotated[bool, typer.Option("--json", help="JSON Lines, one object per client.")] = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV, one row per client.")] = False,
    log_format: FormatOpt = AUTO,
    strict: StrictOpt = False,
    model: ModelOpt = None,
    window_secs: WindowOpt = WINDOW_SECS,
    alert_threshold: AlertOpt = DEFAULT_ALERT_THRESHOLD,
    block_threshold: BlockOpt = DEFAULT_BLOCK_THRESHOLD,
    min_block_requests: MinBlockOpt = DEFAULT_MIN_BLOCK_REQUESTS,
    allow: AllowOpt = None,
    block_private: BlockPrivateOpt = False,
    trusted_proxy: TrustedOpt = None,
    ipv6_prefix: Ipv6Opt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows in the table.")] = 30,
    state_path: Annotated[
        Path | None,
        typer.Option(
            "--state",
            envvar="MLGUARD_STATE",
            dir_okay=False,
            help="Decision store (SQLite): its allow entries are honoured and the verdicts recorded.",
        ),
    ] = None,
    crawler_ranges: CrawlerRangesOpt = None,
    crawler_dns: CrawlerDnsOpt = True,
    crawler_nameserver: CrawlerNameserverOpt = None,
    campaigns: CampaignsOpt = True,
    engine: EngineOpt = Engine.polars,
    spark_master: SparkMasterOpt = None,
    seed: SeedOpt = 0,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Score every client of the logs and print who looks malicious, and why."""
    if json_out and csv_out:
        raise UsageError("choose one of --json and --csv")
    policy = policy_from(
        alert_threshold,
        block_threshold,
        min_block_requests,
        allow or [],
        block_private,
        trusted_proxy,
        crawlers_from(crawler_ranges, crawler_dns, crawler_nameserver),
    )
    store = DecisionStore(state_path) if state_path is not None else None
    if store is not None:
        policy.allow = [*policy.allow, *store.allowed()]  # feedback that persists
    result, detection = _detect(
        paths,
        policy,
        model,
        log_format=log_format,
        strict=strict,
        window_secs=window_secs,
        progress=progress,
        campaigns=campaigns,
        seed=seed,
        identity=identity_from(trusted_proxy, ipv6_prefix),
        window=_window(since, until),
        engine=engine,
        spark_master=spark_master,
    )
    if json_out:
        sys.stdout.write(json_lines(detection.findings))
    elif csv_out:
        frame = output_frame(detection.findings).with_columns(pl.col("reasons").list.join("; "))
        sys.stdout.write(frame.unnest("features", separator=".").write_csv())
    else:
        _table(detection.findings, top)
    _summary(result, detection)
    if store is not None:
        with store:
            counts = store.record(detection.findings, datetime.now(UTC).replace(microsecond=0))
        err.print(
            Text(
                f"  decisions in {safe_text(state_path)}: {counts['new']} new, "
                f"{counts['refreshed']} refreshed, {counts['allowed']} flagged but allowed"
            )
        )


@app.command()
def train(
    paths: PathsArg,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Where to write the model file.")],
    log_format: FormatOpt = AUTO,
    strict: StrictOpt = False,
    window_secs: WindowOpt = WINDOW_SECS,
    trusted_proxy: TrustedOpt = None,
    ipv6_prefix: Ipv6Opt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    seed: SeedOpt = 0,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Fit a baseline on history and save it, to score later logs with 'detect --model'."""
    preload()
    result = _read(
        paths,
        log_format,
        strict,
        window_secs,
        progress,
        identity=identity_from(trusted_proxy, ipv6_prefix),
        window=_window(since, until),
    )
    if result.table is None or result.table.frame.height < 2:
        raise UsageError("a baseline needs at least two clients in the training logs")
    table = result.table
    frame = table.frame
    meta = {
        "training_first": _iso(frame["first_seen"].min()),
        "training_last": _iso(frame["last_seen"].max()),
        "training_clients": frame.height,
        "training_lines": result.stats.lines,
        "window_secs": window_secs,
        "alert_threshold": DEFAULT_ALERT_THRESHOLD,
        "block_threshold": DEFAULT_BLOCK_THRESHOLD,
    }
    baseline = build_baseline(frame.select(FEATURE_NAMES).to_numpy(), table.rarity, table.priors, meta, seed)
    save_model(baseline, out_path)
    err.print(
        Text(
            f"model written to {out_path}: {frame.height:,} clients, {result.stats.lines:,} lines, "
            f"{meta['training_first']} .. {meta['training_last']}"
        )
    )
    _summary(result, None)


@app.command()
def explain(
    paths: PathsArg,
    ip: Annotated[str, typer.Option("--ip", help="The client to explain.")],
    log_format: FormatOpt = AUTO,
    model: ModelOpt = None,
    window_secs: WindowOpt = WINDOW_SECS,
    samples: Annotated[int, typer.Option("--samples", min=0, help="Parsed requests to show.")] = 15,
    allow: Annotated[list[str] | None, typer.Option("--allow", help="Allowlisted IP or CIDR.")] = None,
    trusted_proxy: TrustedOpt = None,
    ipv6_prefix: Ipv6Opt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    seed: SeedOpt = 0,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Show how one client was scored: its requests, features against the population, verdict."""
    identity = identity_from(trusted_proxy, ipv6_prefix)
    address = parse_address(ip)
    # the canonical form the records use (2001:DB8::1 -> 2001:db8::1, or its /64 when grouped)
    client = identity.canonical(address) if address is not None else ip.strip().lower()
    policy = policy_from(
        DEFAULT_ALERT_THRESHOLD,
        DEFAULT_BLOCK_THRESHOLD,
        DEFAULT_MIN_BLOCK_REQUESTS,
        allow or [],
        False,
        trusted_proxy,
    )
    result, detection = _detect(
        paths,
        policy,
        model,
        log_format=log_format,
        strict=False,
        window_secs=window_secs,
        progress=progress,
        seed=seed,
        keep_client=client,
        identity=identity,
        window=_window(since, until),
    )
    match = detection.findings.filter(pl.col("client") == client)
    if match.height == 0:
        raise UsageError(f"client '{safe_text(ip, 60)}' does not appear in the parsed input")
    row = match.row(0, named=True)
    i = int(row["_row"])
    scores = detection.scores
    out.print(Text(f"client {safe_text(client)}", style="bold"))
    out.print(
        Text(
            f"score {row['score']:.3f}  verdict {row['verdict']}  "
            f"requests {int(row['requests']):,}  "
            f"first {_iso(row['first_seen'])}  last {_iso(row['last_seen'])}"
            + (f"  (never blocked: {row['protected']})" if row["protected"] else "")
        )
    )
    reasons = row["reasons"] or ["no reason: the score is below the alert threshold"]
    for reason in reasons:
        out.print(Text(f"  - {reason}"))
    if row["campaign"] is not None:
        campaign = detection.campaigns.table.filter(pl.col("campaign") == row["campaign"]).row(0, named=True)
        out.print(
            Text(
                f"campaign {row['campaign']}: score {campaign['campaign_score']:.3f} "
                f"(own score {row['client_score']:.3f}); one of {campaign['clients']} clients that "
                f"{campaign_behaviour(campaign)}"
            )
        )
    requests = result.kept
    if requests is not None and samples:
        table = Table(
            title=f"requests (first {min(samples, requests.height)} of {requests.height:,})",
            title_justify="left",
        )
        # The referer too: a payload can ride in it (and a forged one shows there).
        for column in ("line", "time", "method", "target", "status", "referer", "user agent"):
            table.add_column(column)
        for r in requests.sort("time").head(samples).iter_rows(named=True):
            target = (r["path"] or "") + (f"?{r['query']}" if r["query"] is not None else "")
            table.add_row(
                str(r["line_no"]),
                _iso(r["time"]) or "",
                Text(safe_text(r["method"], 10)),
                Text(safe_text(target, 80)),
                str(r["status"] or "-"),
                Text(safe_text(r["referer"], 50)),
                Text(safe_text(r["user_agent"], 50)),
            )
        out.print(table)
    population = detection.table.frame.select(FEATURE_NAMES)
    medians = population.median().row(0, named=True)
    features = Table(
        title="features (suspicious-side deviation and push on the score)",
        title_justify="left",
        # A share of 0.867 beside "16 of 16 requests (100%)" would look like a bug otherwise.
        caption="values are what the model sees: shares are shrunk towards the site's own share, "
        "(k + 5·p0) / (n + 5), so a few requests say little; the words give the raw counts",
        caption_justify="left",
    )
    for column in ("feature", "value", "typical", "deviation", "push", "what it means here"):
        features.add_column(
            column,
            justify="right" if column in ("value", "typical", "deviation", "push") else "left",
        )
    order = sorted(range(len(FEATURES)), key=lambda j: -scores.contribution[i][j])
    for j in order:
        f = FEATURES[j]
        deviation = scores.deviation[i][j]
        push = scores.contribution[i][j]
        features.add_row(
            f.name,
            f"{row[f.name]:.4g}",
            f"{medians[f.name]:.4g}",
            f"{deviation:.2f}",
            f"{push:.2f}",
            Text(describe(f.name, row) if deviation > 0 else ""),
        )
    out.print(features)
    _summary(result, None)


def _campaign_frame(detection: Detection, policy: Policy) -> pl.DataFrame:
    """The documented fields of every campaign, in order."""
    when = "%Y-%m-%dT%H:%M:%SZ"
    table = policy.campaign_verdicts(detection.campaigns.table)
    behaviour = [campaign_behaviour(row) for row in table.iter_rows(named=True)]
    return table.select(
        "campaign",
        pl.col("campaign_score").alias("score"),
        "verdict",
        "clients",
        "requests",
        pl.Series("behaviour", behaviour, dtype=pl.String),
        "shared_by",
        "shared",
        "shared_example",
        pl.col("first_seen").dt.strftime(when),
        pl.col("last_seen").dt.strftime(when),
        "user_agents",
        "networks",
        "members",
    )


@app.command()
def campaigns(
    paths: PathsArg,
    json_out: Annotated[bool, typer.Option("--json", help="JSON Lines, one object per campaign.")] = False,
    log_format: FormatOpt = AUTO,
    strict: StrictOpt = False,
    model: ModelOpt = None,
    window_secs: WindowOpt = WINDOW_SECS,
    alert_threshold: AlertOpt = DEFAULT_ALERT_THRESHOLD,
    block_threshold: BlockOpt = DEFAULT_BLOCK_THRESHOLD,
    min_block_requests: MinBlockOpt = DEFAULT_MIN_BLOCK_REQUESTS,
    trusted_proxy: TrustedOpt = None,
    ipv6_prefix: Ipv6Opt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows in the table.")] = 30,
    seed: SeedOpt = 0,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """List groups of clients that behave alike in a suspicious way: size, time span, what they
    share, the campaign's score and its members."""
    policy = policy_from(alert_threshold, block_threshold, min_block_requests, [], False, trusted_proxy)
    result, detection = _detect(
        paths,
        policy,
        model,
        log_format=log_format,
        strict=strict,
        window_secs=window_secs,
        progress=progress,
        seed=seed,
        identity=identity_from(trusted_proxy, ipv6_prefix),
        window=_window(since, until),
    )
    frame = _campaign_frame(detection, policy)
    if json_out:
        sys.stdout.write(ndjson_of(frame))
    else:
        _campaign_table(frame, top)
    _summary(result, detection)


def _campaign_table(frame: pl.DataFrame, top: int) -> None:
    flagged = frame.filter(pl.col("verdict") != PASS).height
    title = f"{frame.height} campaign(s), {flagged} flagged" if frame.height else "No campaign found"
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("campaign", no_wrap=True)
    table.add_column("score", justify="right")
    table.add_column("verdict")
    table.add_column("clients", justify="right")
    table.add_column("what the members share", min_width=40)
    table.add_column("members", min_width=20)
    styles = {BLOCK: "bold red", ALERT: "yellow"}
    for row in frame.head(top).iter_rows(named=True):
        members = row["members"]
        shown = ", ".join(safe_text(m, 45) for m in members[:MEMBERS_SHOWN])
        if len(members) > MEMBERS_SHOWN:
            shown += f" and {len(members) - MEMBERS_SHOWN} more"
        table.add_row(
            Text(row["campaign"]),
            Text(f"{row['score']:.3f}"),
            Text(row["verdict"], style=styles.get(row["verdict"], "")),
            Text(f"{row['clients']:,}"),
            Text(row["behaviour"]),
            Text(shown),
        )
    out.print(table)
    if frame.height > top:
        out.print(Text(f"... and {frame.height - top} more (use --top or --json)"))


@app.command(name="eval")
def evaluate_command(
    paths: PathsArg,
    labels_path: Annotated[
        Path,
        typer.Option("--labels", "-l", help="CSV with a header: ip,label[,actor]; label malicious|benign."),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object with every figure.")] = False,
    log_format: FormatOpt = AUTO,
    model: ModelOpt = None,
    window_secs: WindowOpt = WINDOW_SECS,
    alert_threshold: AlertOpt = DEFAULT_ALERT_THRESHOLD,
    block_threshold: BlockOpt = DEFAULT_BLOCK_THRESHOLD,
    min_block_requests: MinBlockOpt = DEFAULT_MIN_BLOCK_REQUESTS,
    allow: AllowOpt = None,
    block_private: BlockPrivateOpt = False,
    trusted_proxy: TrustedOpt = None,
    ipv6_prefix: Ipv6Opt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Misses and false positives listed.")] = 20,
    campaigns: CampaignsOpt = True,
    seed: SeedOpt = 0,
    progress: ProgressOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """Run detection on labelled logs: precision, recall, F1, false-positive rate, ROC-AUC, misses."""
    labels = load_labels(labels_path)
    policy = policy_from(
        alert_threshold, block_threshold, min_block_requests, allow or [], block_private, trusted_proxy
    )
    result, detection = _detect(
        paths,
        policy,
        model,
        log_format=log_format,
        strict=False,
        window_secs=window_secs,
        progress=progress,
        campaigns=campaigns,
        seed=seed,
        identity=identity_from(trusted_proxy, ipv6_prefix),
        window=_window(since, until),
    )
    ev = evaluate(
        detection.findings,
        labels,
        explain=lambda ips: reasons_of(detection, ips),
        min_block_requests=policy.min_block_requests,
    )
    if json_out:
        sys.stdout.write(escape_json_text(json.dumps(ev.as_json())) + "\n")
    else:
        _evaluation_tables(ev, top)
    _summary(result, detection)


def _evaluation_tables(ev: Evaluation, top: int) -> None:
    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    out.print(
        Text(
            f"{ev.labelled:,} labelled clients in the log ({ev.malicious:,} malicious, "
            f"{ev.labelled - ev.malicious:,} benign); ROC-AUC {ratio(ev.roc_auc)}, PR-AUC {ratio(ev.pr_auc)}"
        )
    )
    figures = Table(title="per client", title_justify="left")
    for column in ("at", "precision", "recall", "F1", "FP rate", "TP", "FP", "FN", "TN"):
        figures.add_column(column, justify="left" if column == "at" else "right")
    for name, c in (("alert", ev.alert), ("block", ev.block)):
        figures.add_row(
            name,
            *(ratio(c[k]) for k in ("precision", "recall", "f1", "fpr")),
            *(f"{int(c[k]):,}" for k in ("tp", "fp", "fn", "tn")),
        )
    out.print(figures)
    _operating_points(ev)
    if ev.per_actor:
        actors = Table(title="recall at alert per actor", title_justify="left")
        actors.add_column("actor")
        actors.add_column("recall", justify="right")
        for actor, recall in ev.per_actor.items():
            actors.add_row(Text(safe_text(actor, 60)), f"{recall:.2f}")
        out.print(actors)
    for title, frame in (("missed attackers", ev.misses), ("benign clients flagged", ev.false_positives)):
        if frame.height == 0:
            continue
        table = Table(
            title=f"{title} ({frame.height:,}, top {min(top, frame.height)} by score)", title_justify="left"
        )
        for column in ("client", "actor", "score", "verdict", "requests", "why it scored so"):
            table.add_column(column, justify="right" if column in ("score", "requests") else "left")
        for row in frame.head(top).iter_rows(named=True):
            table.add_row(
                Text(safe_text(row["ip"], 45)),
                Text(safe_text(row["actor"], 30)),
                f"{row['score']:.3f}",
                row["verdict"],
                f"{int(row['requests']):,}",
                Text("\n".join(row["reasons"] or []) or "-"),
            )
        out.print(table)
    if ev.unlabelled:
        shown = ", ".join(safe_text(ip, 45) for ip in ev.unlabelled[:10])
        more = f" and {len(ev.unlabelled) - 10:,} more" if len(ev.unlabelled) > 10 else ""
        out.print(
            Text(
                f"{len(ev.unlabelled):,} clients of the log are not in the labels "
                f"(not counted): {shown}{more}"
            )
        )
    if ev.missing:
        shown = ", ".join(safe_text(ip, 45) for ip in ev.missing[:10])
        more = f" and {len(ev.missing) - 10:,} more" if len(ev.missing) > 10 else ""
        out.print(Text(f"{len(ev.missing):,} labelled clients do not appear in the log: {shown}{more}"))


def _operating_points(ev: Evaluation) -> None:
    """What one threshold for all clients would do on these labels: for choosing thresholds."""
    points = ev.operating_points
    if not points or not ev.malicious or ev.malicious == ev.labelled:
        return  # one class only: there is no trade-off to show
    benign = ev.labelled - ev.malicious
    table = Table(title="thresholds on these labels (one for all clients)", title_justify="left")
    for column in ("goal", "threshold", "attackers", "benign clients"):
        table.add_column(column, justify="left" if column == "goal" else "right")
    for point in points["alert"]:
        table.add_row(
            f"alert {point['recall_goal']:.0%} of attackers",
            f">= {point['threshold']:.4f}",
            f"{point['tp']:,} of {ev.malicious:,}",
            f"{point['fp']:,} of {benign:,}",
        )
    block = points["block"]
    if block["highest_benign"] is not None:
        table.add_row(
            f"block no benign client ({block['min_requests']:,}+ requests)",
            f"> {block['highest_benign']:.4f}",
            f"{block['tp']:,} of {ev.malicious:,}",
            Text(f"0 (highest: {safe_text(block['highest_benign_client'], 45)})"),
        )
    out.print(table)


@app.command()
def version() -> None:
    """Print the MLGuard version."""
    out.print(f"mlguard {__version__}")


def main() -> None:
    verbose = "--verbose" in sys.argv or "-v" in sys.argv
    try:
        app()
    except MLGuardError as exc:
        if verbose:
            traceback.print_exc()
        # One line, however narrow the terminal: no wrapping, control characters escaped.
        sys.stderr.write(f"mlguard: error: {safe_text(exc)}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `mlguard detect ... | head`: the reader went away; that is not an error.
        sys.stderr.close()
        sys.exit(0)
