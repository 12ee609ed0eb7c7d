"""Campaigns: attackers spread over many addresses are found; innocent crowds are not.

Fixtures (tests/fixtures/crowds/, provenance in PROVENANCE.md): real lab logs written by nginx
(credential stuffing from 120 addresses; a benign-heavy day with crawler fleets, monitors, NATs
and home-page viewers), the real elastic log (WordPress probers spread over many addresses,
crawler fleets), and crowds built from real lab lines re-addressed (monitors from many regions,
a corporate NAT pool) or from a documented session model (a mobile app's API users).
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlguard.cli import app
from mlguard.decisions.policy import ALERT, BLOCK, Policy, parse_networks
from mlguard.detectors.campaigns import _network, _networks
from mlguard.pipeline import Detection, read_logs, score_table

CROWDS = Path(__file__).parent / "fixtures" / "crowds"
FLAGGED = [ALERT, BLOCK]


def labels(path: Path) -> dict[str, tuple[str, str]]:
    with path.open() as f:
        return {row["ip"]: (row["label"], row.get("actor", "")) for row in csv.DictReader(f)}


def detect(*paths: Path, policy: Policy | None = None) -> Detection:
    return score_table(read_logs([str(p) for p in paths]), policy or Policy())


def flagged_campaign_members(detection: Detection, threshold: float = 0.5) -> set[str]:
    table = detection.campaigns.table.filter(pl.col("campaign_score") >= threshold)
    return {member for members in table["members"].to_list() for member in members}


def test_credential_stuffing_over_120_addresses_is_one_flagged_campaign() -> None:
    truth = labels(CROWDS / "lab_stuffing.labels.csv")
    stuffers = {ip for ip, (_, actor) in truth.items() if actor == "hydra-stuffing"}
    benign = {ip for ip, (label, _) in truth.items() if label == "benign"}
    detection = detect(CROWDS / "lab_stuffing.log.gz")
    findings = detection.findings
    alerted = set(findings.filter(pl.col("verdict").is_in(FLAGGED))["client"])
    # Each stuffer sent 2-5 login attempts: alone, none of them scores as an attacker.
    own = findings.filter(pl.col("client").is_in(list(stuffers)) & (pl.col("client_score") >= 0.5))
    assert own.height == 0
    assert len(alerted & stuffers) / len(stuffers) >= 0.9
    assert not flagged_campaign_members(detection) & benign
    member = findings.filter(pl.col("client").is_in(list(stuffers)) & pl.col("verdict").is_in(FLAGGED)).row(
        0, named=True
    )
    lead = member["reasons"][0]
    assert lead.startswith("one of ") and "POST /login" in lead and member["campaign"] in lead
    # A handful of requests each: never enough to block any of them on their own evidence.
    assert member["requests"] < 20


def test_probes_spread_over_many_addresses_form_campaigns_in_a_real_log() -> None:
    """The elastic log (semicomplete.com, 2015) holds WordPress probers that each sent one or two
    requests from their own address, and crawler fleets that must stay crowds."""
    weak = labels(CROWDS / "elastic_apache.weak_labels.csv")
    probers = {ip for ip, (label, _) in weak.items() if label == "malicious"}
    detection = detect(CROWDS / "elastic_apache.log.gz")
    in_campaigns = flagged_campaign_members(detection)
    assert len(in_campaigns & probers) >= 20
    crawlers = set(
        detection.findings.filter(
            pl.col("top_user_agent").str.contains(
                "(?i)baiduspider|archive.org_bot|ahrefsbot|googlebot|bingbot"
            )
        )["client"]
    )
    assert len(crawlers) > 50
    assert not in_campaigns & crawlers
    # Two Facebook link-preview fetchers and one other client each asked once for the same
    # missing image of a shared page: a broken link, not a probe.
    assert not in_campaigns & {"69.171.237.10", "69.171.237.9", "74.208.180.23"}
    reasons = detection.findings.filter(pl.col("client").is_in(list(in_campaigns & probers)))["reasons"]
    assert any("answered 404" in r[0] and "wp-" in r[0] for r in reasons.to_list())


@pytest.mark.parametrize("crowd", ["mobile_app", "monitors_from_regions", "nat_pool", None])
def test_innocent_crowds_never_form_a_malicious_campaign(crowd: str | None) -> None:
    """A benign-heavy day (home-page viewers, crawler fleets in /24s, monitors, feed readers,
    NAT'd browsers), alone and with each crowd added: no benign client is pulled into a
    campaign that scores, and the crowd itself is not flagged."""
    truth = labels(CROWDS / "lab_benign_heavy.labels.csv")
    paths = [CROWDS / "lab_benign_heavy.log.gz"]
    crowd_clients: set[str] = set()
    if crowd is not None:
        paths.append(CROWDS / f"{crowd}.log.gz")
        with gzip.open(paths[-1], "rt") as f:
            crowd_clients = {line.split(" ", 1)[0] for line in f}
    detection = detect(*paths)
    benign = {ip for ip, (label, _) in truth.items() if label == "benign"} | crowd_clients
    assert not flagged_campaign_members(detection) & benign
    findings = detection.findings.filter(pl.col("client").is_in(list(benign)))
    pulled = findings.filter(pl.col("verdict").is_in(FLAGGED) & (pl.col("campaign_score") >= 0.5))
    assert pulled.height == 0


def test_members_keep_the_block_rules_allowlist_and_evidence() -> None:
    """A campaign carries its members' alerts; a block still needs the campaign's score above the
    block threshold and its requests above the minimum, and an allowlisted member is never blocked."""
    truth = labels(CROWDS / "lab_stuffing.labels.csv")
    stuffers = sorted(ip for ip, (_, actor) in truth.items() if actor == "hydra-stuffing")
    strict = detect(CROWDS / "lab_stuffing.log.gz", policy=Policy(alert_threshold=0.3, block_threshold=0.35))
    members = strict.findings.filter(pl.col("client").is_in(stuffers) & pl.col("campaign").is_not_null())
    assert members.height > 0
    blocked = members.filter(pl.col("verdict") == BLOCK)
    assert blocked.height > 0
    assert (blocked["evidence_requests"] >= 20).all() and (blocked["requests"] < 20).all()
    allow = parse_networks([f"{stuffers[0]}/32", f"{stuffers[1]}/32"])
    allowed = detect(
        CROWDS / "lab_stuffing.log.gz", policy=Policy(alert_threshold=0.3, block_threshold=0.35, allow=allow)
    )
    kept = allowed.findings.filter(pl.col("client").is_in(stuffers[:2]))
    assert set(kept["verdict"]) == {"pass"} and set(kept["protected"]) == {"allowlisted"}


def test_campaigns_command_lists_and_escapes(tmp_path: Path) -> None:
    """`mlguard campaigns --json` prints one object per campaign with its members; a user agent
    an attacker shared is printed escaped in the table and the JSON."""
    log = tmp_path / "access.log"
    with gzip.open(CROWDS / "lab_benign_heavy.log.gz", "rb") as src, log.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    hostile = "\x1b[31m<script>alert(1)</script> Scanner/1.0"
    with log.open("a") as f:
        for i in range(12):
            # Each address probes its own names: what they share is the user agent.
            name = "abcdefghijkl"[i] * 3  # digits would fold into one path template
            for j, path in enumerate((f"/.env.{name}", f"/backup-{name}.sql", f"/db-{name}.zip")):
                when = f"23/Nov/2026:10:{i:02d}:{j * 7:02d} +0000"
                f.write(f'198.51.{i}.{20 + i} - - [{when}] "GET {path} HTTP/1.1" 404 153 "-" "{hostile}"\n')
    runner = CliRunner()
    result = runner.invoke(app, ["campaigns", str(log), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"campaign", "score", "verdict", "clients", "requests", "behaviour", "members"} <= set(rows[0])
    probe = next(r for r in rows if "198.51.0.20" in r["members"])
    assert probe["clients"] == 12 and probe["verdict"] in FLAGGED and probe["requests"] == 36
    assert probe["shared_by"] == "user agent" and probe["shared"] == hostile
    assert probe["shared_example"] is None  # a real path only where a path is shared
    assert "\x1b" not in result.stdout and "\\u001b" in result.stdout  # JSON escapes it
    assert "\\x1b[31m<script>" in probe["behaviour"]  # the words show it escaped
    table = runner.invoke(app, ["campaigns", str(log), "--no-progress"])
    assert table.exit_code == 0 and "\x1b[31m" not in table.stdout and "\\x1b[31m" in table.stdout
    # Every client of `detect --json` says which campaign it belongs to, or null.
    detected = runner.invoke(app, ["detect", str(log), "--json", "--no-progress"])
    clients = [json.loads(line) for line in detected.stdout.splitlines()]
    assert all("campaign" in c for c in clients)
    assert {c["campaign"] for c in clients if c["ip"].startswith("198.51.")} == {probe["campaign"]}
    assert any(c["campaign"] is None for c in clients)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.ip_addresses(v=4).map(str),
            st.ip_addresses(v=6).map(str),
            st.ip_addresses(v=4).map(lambda a: ".".join(f"{int(o):03d}" for o in str(a).split("."))),
            st.sampled_from(["1.2.3.0/24", "2001:db8::/48", "not an address", "", "1.2.3.4:80", "[::1]"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_networks_per_campaign_match_parsing_each_member(clients: list[str]) -> None:
    # The /24 of a plain IPv4 address is taken as text; every other member is parsed. The
    # count must be what parsing every member gives, whatever the members look like.
    table = pl.DataFrame({"campaign": ["c-1"], "members": [clients]})
    counted = _networks(table).row(0, named=True)["networks"]
    assert counted == len({_network(c) for c in clients})


def test_a_campaign_is_described_by_a_real_path_of_its_template() -> None:
    # Members are grouped on a path template (digits folded, lower case), which is no path
    # anyone sent: "/winnt/system0/cmd.exe". The reason shows a path from the log instead.
    from mlguard.explain.reasons import campaign_behaviour
    from mlguard.features.signals import path_template

    log = CROWDS / "elastic_apache.log.gz"
    with gzip.open(log, "rt", errors="replace") as f:
        text = f.read()
    table = detect(log).campaigns.table.filter(pl.col("shared_by") == "path")
    assert table.height > 0
    for row in table.iter_rows(named=True):
        example = row["shared_example"]
        assert f" {example} HTTP/" in text or f" {example}?" in text
        assert pl.select(path_template(pl.lit(example))).item() == row["shared"]
    listed = CliRunner().invoke(app, ["campaigns", str(log), "--json", "--no-progress"])
    by_path = {r["campaign"]: r["shared_example"] for r in map(json.loads, listed.stdout.splitlines())}
    assert {c: by_path[c] for c in table["campaign"]} == dict(
        table.select("campaign", "shared_example").iter_rows()
    )
    row = dict(table.row(0, named=True), shared="/winnt/system0/cmd.exe")
    folded = campaign_behaviour(dict(row, shared_example="/winnt/System32/cmd.exe"))
    assert "paths like /winnt/System32/cmd.exe" in folded and "system0" not in folded
    exact = campaign_behaviour(dict(row, shared="/wp-login.php", shared_example="/wp-login.php"))
    assert " /wp-login.php" in exact and "paths like" not in exact
