"""Parsing real log lines: the fast and exact paths, unparsed lines, compression, hostile input."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import polars as pl
import pytest
import zstandard

from mlguard.formats import FORMATS, detect_format, get_format
from mlguard.formats.base import MAX_LINE_BYTES
from mlguard.pipeline import read_logs
from mlguard.schema import RECORD_SCHEMA


def test_combined_sample_parses_every_line(fixtures: Path) -> None:
    data = (fixtures / "combined_sample.log").read_bytes()
    parsed = get_format("combined").parse(data)
    assert parsed.records.schema == pl.Schema(RECORD_SCHEMA)
    assert parsed.records.height == 300 and parsed.unparsed.height == 0
    # Fixture line 150 is elastic line 8899, whose user agent has no closing quote: the
    # request is real, so it is kept, with the user agent up to the end of the line.
    cut = parsed.records.filter(pl.col("line_no") == 150).row(0, named=True)
    assert cut["user_agent"] == "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html"
    first = parsed.records.row(0, named=True)
    assert first["line_no"] == 1
    assert first["status"] in (200, 304, 404, 301)
    assert first["time"].tzinfo is not None


def test_fields_of_a_known_line() -> None:
    line = (
        b'83.149.9.216 - - [17/May/2015:10:05:03 +0200] "GET /a/b.png?x=1&y=2 HTTP/1.1" 200 203023 '
        b'"http://semicomplete.com/" "Mozilla/5.0 (Macintosh)"\n'
    )
    row = get_format("combined").parse(line).records.row(0, named=True)
    assert row["client"] == "83.149.9.216"
    assert row["time"].isoformat() == "2015-05-17T08:05:03+00:00"  # +0200 honoured, UTC out
    assert (row["method"], row["path"], row["query"], row["protocol"]) == (
        "GET",
        "/a/b.png",
        "x=1&y=2",
        "HTTP/1.1",
    )
    assert (row["status"], row["bytes"]) == (200, 203023)
    assert row["referer"] == "http://semicomplete.com/"
    assert row["user_agent"] == "Mozilla/5.0 (Macintosh)"


def test_escaped_quotes_take_the_exact_path() -> None:
    line = (
        b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /q?a=\\"x\\" HTTP/1.1" 404 12 "-" '
        b'"Mozilla \\"quoted\\" agent"\n'
    )
    parsed = get_format("combined").parse(line)
    assert parsed.unparsed.height == 0
    row = parsed.records.row(0, named=True)
    assert row["query"] == 'a=\\"x\\"'
    assert row["user_agent"] == 'Mozilla \\"quoted\\" agent'
    assert row["referer"] is None and row["status"] == 404


@pytest.mark.parametrize("status", [b"200", b"+12", b"-12", b" 12", b"2x0"])
def test_a_status_is_judged_alike_on_the_fast_and_the_exact_path(status: bytes) -> None:
    # The same fields, once as a plain line (fast path) and once with an escaped quote in the
    # user agent (exact path): a status one path takes, the other must take too.
    line = b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" ' + status + b' 5 "-" "ua"\n'
    escaped = line.replace(b'"ua"', b'"u\\"a"')
    fast, exact = (get_format("combined").parse(text) for text in (line, escaped))
    assert fast.records.height == exact.records.height
    assert fast.records["status"].to_list() == exact.records["status"].to_list()


def test_common_format_and_detection(fixtures: Path) -> None:
    data = (fixtures / "common_sample.log").read_bytes()
    assert detect_format(data).name == "common"
    parsed = get_format("common").parse(data)
    assert parsed.unparsed.height == 0
    assert parsed.records.height == 50
    assert parsed.records["user_agent"].null_count() == 50
    # Common lines are not combined lines: counted as unparsed there, with a reason.
    combined = get_format("combined").parse(data)
    assert combined.records.height == 0 and combined.unparsed.height == 50
    assert detect_format((fixtures / "combined_sample.log").read_bytes()).name == "combined"


def test_ipv6_clients_are_kept_and_lower_cased() -> None:
    line = b'2A01:4F8::1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "x"\n'
    assert get_format("combined").parse(line).records["client"].to_list() == ["2a01:4f8::1"]


def test_hostile_lines_match_their_expectations(fixtures: Path) -> None:
    data = (fixtures / "hostile.log").read_bytes()
    expect = json.loads((fixtures / "hostile.expect.json").read_text())
    parsed = get_format("combined").parse(data)
    parsed_lines = dict(
        zip(parsed.records["line_no"].to_list(), parsed.records["client"].to_list(), strict=True)
    )
    unparsed_lines = set(parsed.unparsed["line_no"].to_list())
    assert len(parsed_lines) + len(unparsed_lines) == len(expect)
    for case in expect:
        if case["parses"]:
            assert parsed_lines.get(case["line_no"]) == case["client"], case["note"]
        else:
            assert case["line_no"] in unparsed_lines, case["note"]
    reasons = dict(
        zip(parsed.unparsed["line_no"].to_list(), parsed.unparsed["reason"].to_list(), strict=True)
    )
    assert reasons[8] == f"line longer than {MAX_LINE_BYTES} bytes"
    assert reasons[9] == "empty line"


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [
        (".gz", gzip.compress),
        (".bz2", bz2.compress),
        (".xz", lzma.compress),
        (".zst", lambda b: zstandard.ZstdCompressor().compress(b)),
    ],
)
def test_compressed_inputs_read_the_same(fixtures: Path, tmp_path: Path, suffix: str, compress) -> None:
    data = (fixtures / "combined_sample.log").read_bytes()
    plain = read_logs([str(fixtures / "combined_sample.log")])
    target = tmp_path / f"sample.log{suffix}"
    target.write_bytes(compress(data))
    packed = read_logs([str(target)])
    assert packed.stats.lines == plain.stats.lines == 300
    assert packed.stats.records == plain.stats.records == 300
    assert packed.table is not None and plain.table is not None
    assert packed.table.frame.equals(plain.table.frame)


def test_truncated_gzip_keeps_what_was_read(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / "labelled_small" / "access.log").read_bytes()
    total = data.count(b"\n")
    packed = gzip.compress(data)
    target = tmp_path / "cut.log.gz"
    target.write_bytes(packed[: len(packed) // 2])
    result = read_logs([str(target)])
    assert total // 4 < result.stats.lines < total
    assert result.stats.unparsed <= 1  # at most the one line cut in the middle
    assert result.stats.problems and "stopped reading early" in result.stats.problems[0].message


def test_small_chunks_give_the_same_table_as_one_chunk(fixtures: Path) -> None:
    path = str(fixtures / "labelled_small" / "access.log")
    whole = read_logs([path])
    pieces = read_logs([path], chunk_bytes=16 * 1024)
    assert whole.table is not None and pieces.table is not None
    assert pieces.stats.lines == whole.stats.lines
    # Nothing depends on where the reader cut the input, not even gaps that straddle a cut.
    assert pieces.table.frame.equals(whole.table.frame)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_line_too_long_is_reported_as_such_by_every_format(name: str) -> None:
    # Long lines are blanked before a format sees them: whatever the format makes of an empty
    # line, the long one must come out unparsed, with its own reason and its start as text.
    long_line = b"A" * 10 + b"<x>" * (MAX_LINE_BYTES // 3 + 10)
    data = b"\n".join([b"", long_line, b"", long_line + b"B"]) + b"\n"
    parsed = get_format(name).parse(data)
    reasons = dict(
        zip(parsed.unparsed["line_no"].to_list(), parsed.unparsed["reason"].to_list(), strict=True)
    )
    texts = dict(zip(parsed.unparsed["line_no"].to_list(), parsed.unparsed["text"].to_list(), strict=True))
    assert parsed.records.height == 0
    assert reasons[2] == reasons[4] == f"line longer than {MAX_LINE_BYTES} bytes"
    assert reasons[1] != reasons[2] and reasons[3] != reasons[2]  # the empty lines keep theirs
    assert texts[2] == long_line[:512].decode() and texts[1] == ""
