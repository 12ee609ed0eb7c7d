"""Hostile and broken input in every format: nothing crashes or hangs, nothing is lost silently."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlguard.formats import get_format
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
SAMPLES = {
    "combined": FIXTURES / "combined_sample.log",
    "ingress-nginx": FIXTURES / "formats" / "ingress_nginx_real_nginx.log",
    "vhost_combined": FIXTURES / "formats" / "vhost_combined_crowdsec.log",
    "traefik": FIXTURES / "formats" / "traefik_clf_crowdsec.log",
    "traefik-json": FIXTURES / "formats" / "traefik_json_crowdsec.log",
    "caddy": FIXTURES / "formats" / "caddy_crowdsec.log",
    "envoy": FIXTURES / "formats" / "envoy_crowdsec.log",
    "envoy-json": FIXTURES / "formats" / "envoy_json_crowdsec.log",
    "alb": FIXTURES / "formats" / "alb_crowdsec.log",
    "elb": FIXTURES / "formats" / "elb_aws_docs_example.log",
    "cloudfront": FIXTURES / "formats" / "cloudfront_crowdsec.log",
}
# Lines an attacker can make a server write, or that broken files hold.
JUNK = [
    b"\x1b[2J\x1b]0;owned\x07\x1b[31mred\x1b[0m",
    b"<script>alert(1)</script>",
    b"nul\x00byte\x00line",
    b"\xff\xfe\xc3\x28 invalid utf-8 \xed\xa0\x80",
    b"A" * 1_100_000,  # a 1 MB line
    b'{"not": "an access log"}',
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello where HTTP was expected
]


def _with_junk(sample: bytes) -> tuple[bytes, int]:
    good = sample if sample.endswith(b"\n") else sample + b"\n"
    lines = good.splitlines(keepends=True)
    mixed = b"".join(j + b"\n" + line for j, line in zip(JUNK * len(lines), lines, strict=False))
    return mixed + b"".join(j + b"\n" for j in JUNK), len(lines)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_format_keeps_its_lines_among_hostile_ones(name: str) -> None:
    data, good = _with_junk(SAMPLES[name].read_bytes())
    parsed = get_format(name).parse(data)
    total = data.count(b"\n")
    assert parsed.records.height + parsed.unparsed.height == total  # every line accounted for
    assert parsed.records.height == good  # every real line still parsed, no junk taken for one
    assert parsed.unparsed["reason"].null_count() == 0
    assert any("longer than" in r for r in parsed.unparsed["reason"].to_list())  # the 1 MB line


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mlguard", *args], capture_output=True, timeout=180, cwd=ROOT
    )


@pytest.mark.parametrize("name", ["caddy", "envoy", "cloudfront"])
def test_terminal_output_of_hostile_fields_is_escaped(name: str, tmp_path: Path) -> None:
    # The real sample plus a real line of it whose user agent became terminal escapes and HTML.
    sample = SAMPLES[name].read_bytes()
    agent = {"caddy": b"curl/7.74.0", "envoy": b"nsq2http", "cloudfront": b"curl/7.81.0"}[name]
    escape = b"\\u001b]0;pwn\\u0007<b>x</b>" if name == "caddy" else b"\x1b]0;pwn\x07<b>x</b>"
    hostile = sample.splitlines()[0].replace(agent, escape)
    if name == "cloudfront":  # its sample holds one client: make the hostile one another
        hostile = hostile.replace(b"1.2.3.4", b"198.51.100.7")
    log = tmp_path / "hostile.log"
    log.write_bytes(sample.rstrip(b"\n") + b"\n" + b"\n".join([hostile] * 30) + b"\n")
    client = get_format(name).parse(hostile + b"\n").records["client"][0]
    proc = _run("explain", str(log), "--ip", client, "-f", name)
    assert proc.returncode == 0, proc.stderr
    assert b"pwn" in proc.stdout  # the agent is shown ...
    assert (
        b"\x1b" not in proc.stdout and b"\x07" not in proc.stdout and b"\x1b" not in proc.stderr
    )  # ... escaped


def test_an_empty_file_beside_a_real_one_is_fine_and_alone_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    both = _run("detect", str(empty), str(FIXTURES / "combined_sample.log"), "--json", "--no-progress")
    assert both.returncode == 0, both.stderr
    assert both.stdout.strip()
    alone = _run("detect", str(empty), "--no-progress")
    assert alone.returncode == 2 and b"Traceback" not in alone.stderr
    assert len(alone.stderr.strip().splitlines()) == 1


def test_mixed_formats_in_one_file_keep_the_majority_and_report_the_rest(tmp_path: Path) -> None:
    combined = (FIXTURES / "combined_sample.log").read_bytes().splitlines()
    caddy = (FIXTURES / "formats" / "caddy_crowdsec.log").read_bytes().splitlines()[:3]
    mixed = tmp_path / "mixed.log.gz"
    mixed.write_bytes(gzip.compress(b"\n".join(combined[:20] + caddy + combined[20:]) + b"\n"))
    proc = _run("detect", str(mixed), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.decode()
    assert "format: combined" in err and "3 unparsed" in err
    assert all(json.loads(line)["ip"] for line in proc.stdout.splitlines())


def test_a_gzip_cut_in_the_middle_keeps_what_was_read(tmp_path: Path) -> None:
    whole = gzip.compress((FIXTURES / "combined_sample.log").read_bytes() * 20)
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    proc = _run("detect", str(cut), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert b"stopped reading early" in proc.stderr


def test_rotated_logs_in_a_directory_are_read_oldest_first(tmp_path: Path) -> None:
    import os

    from mlguard.sources.files import expand_paths

    # logrotate names the newest file first: access.log, access.log.1, access.log.2.gz
    for age, name in enumerate(["access.log", "access.log.1", "access.log.2.gz"]):
        path = tmp_path / name
        path.write_bytes(b"")
        os.utime(path, ns=(1_700_000_000_000_000_000 - age * 86_400 * 10**9,) * 2)
    assert [Path(p).name for p in expand_paths([str(tmp_path)])] == [
        "access.log.2.gz",
        "access.log.1",
        "access.log",
    ]
    assert [Path(p).name for p in expand_paths([str(tmp_path / "access.log*")])] == [
        "access.log.2.gz",
        "access.log.1",
        "access.log",
    ]


@pytest.mark.parametrize(
    "where",
    ["ip", "reasons", "features"],
)
def test_json_lines_escape_del_and_c1_controls_wherever_they_are(where: str) -> None:
    # JSON escapes only C0 controls; a terminal that shows the file would obey C1 ones (CSI is
    # \x9b). Wherever a text holds one (a column, a list of reasons, a struct), it is escaped.
    import polars as pl

    from mlguard.explain.reasons import ndjson_of

    hostile = "a\x9b31mb\x7fc\x85"
    row = {"ip": "10.0.0.1", "reasons": ["fine"], "features": {"n": 1.0, "agent": "ok"}}
    if where == "ip":
        row["ip"] = hostile
    elif where == "reasons":
        row["reasons"] = ["fine", hostile]
    else:
        row["features"] = {"n": 1.0, "agent": hostile}
    frame = pl.DataFrame([row])
    text = ndjson_of(frame)
    assert not any("\x7f" <= ch <= "\x9f" for ch in text)
    assert "\\u009b31mb\\u007fc\\u0085" in text
    assert json.loads(text) == row  # still the same values once parsed
    clean = pl.DataFrame([{"ip": "10.0.0.1", "reasons": ["é…"], "features": {"n": 1.0, "agent": "ok"}}])
    assert ndjson_of(clean) == clean.write_ndjson()
