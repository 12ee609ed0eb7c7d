"""Property tests: no input, however hostile, makes the parser raise or lose a line."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mlguard.features.aggregate import ClientAccumulator
from mlguard.formats import FORMATS, get_format
from mlguard.sources.files import _MAGIC as MAGIC
from mlguard.sources.files import count_lines, read_chunks

VALID = b'203.0.113.9 - - [17/May/2015:10:05:03 +0000] "GET /index.html HTTP/1.1" 200 1 "-" "ua"\n'

# Pieces that matter to a combined-log parser, mixed with arbitrary bytes.
PIECES = st.sampled_from(
    [
        b'"',
        b"\\",
        b'\\"',
        b"[",
        b"]",
        b" ",
        b"\n",
        b"\r",
        b"\x00",
        b"\x01",
        b"\xff",
        b"-",
        b"?",
        b"\x1b[31m",
        b"<script>",
        b"17/May/2015:10:05:03 +0000",
        b"GET / HTTP/1.1",
        b"200",
        b"::1",
    ]
)
HOSTILE = st.lists(st.one_of(st.binary(max_size=40), PIECES), max_size=40).map(b"".join)


# Every built-in format and two compiled from server format strings (with extra fields).
PARSERS = [
    *FORMATS,
    'nginx:$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for" $request_time',
    'apache:%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-agent}i\\" %D %{X-Request-Id}i',
    "jsonl:client=ip,time=ts,request=req,status=code,user_agent=headers.ua|$.ua",
]


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=HOSTILE)
def test_any_bytes_parse_without_raising_and_every_line_is_accounted_for(data: bytes) -> None:
    for name in PARSERS:
        parsed = get_format(name).parse(data, first_line_no=1)
        assert parsed.records.height + parsed.unparsed.height == _line_count(data)
        line_nos = sorted(parsed.records["line_no"].to_list() + parsed.unparsed["line_no"].to_list())
        assert line_nos == list(range(1, _line_count(data) + 1))


@settings(max_examples=150, deadline=None)
@given(prefix=HOSTILE, suffix=HOSTILE)
def test_a_valid_line_survives_any_neighbours(prefix: bytes, suffix: bytes) -> None:
    data = prefix + b"\n" + VALID + suffix
    parsed = get_format("combined").parse(data)
    assert "203.0.113.9" in parsed.records["client"].to_list()


@settings(max_examples=60, deadline=None)
@given(data=HOSTILE)
def test_features_of_hostile_records_never_raise(data: bytes) -> None:
    parsed = get_format("combined").parse(VALID + data + b"\n" + VALID)
    acc = ClientAccumulator()
    acc.add(parsed.records)
    table = acc.finish()
    assert table.frame.height >= 1
    assert table.frame["requests"].sum() == parsed.records.height


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=HOSTILE, tail=HOSTILE)
def test_a_chunk_ending_before_its_buffer_ends_keeps_exactly_its_lines(data: bytes, tail: bytes) -> None:
    # Plain files are parsed straight from the read buffer, whose last (partial) line belongs
    # to the next chunk: the parse must stop exactly at `end`, like a parse of the copy.
    data = data + b"\n"
    buffer = data + tail.replace(b"\n", b"")
    for name in FORMATS:
        fmt = get_format(name)
        direct = fmt.run(buffer, 1, len(data)).sort("line_no")
        copied = fmt.run(data, 1).sort("line_no")
        assert direct.equals(copied)
        assert direct.height == _line_count(data)


@settings(max_examples=300, deadline=None)
@given(data=HOSTILE, cut=st.integers(min_value=0), piece=st.integers(min_value=1, max_value=70))
def test_lines_are_counted_exactly_across_count_pieces(data: bytes, cut: int, piece: int) -> None:
    # Counted piece by piece (1 MiB in real runs): a newline on a piece's edge counts once.
    end = cut % (len(data) + 1)
    assert count_lines(data, end, piece=piece) == _line_count(data[:end])
    assert count_lines(bytearray(data), end, piece=piece) == _line_count(data[:end])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=HOSTILE, chunk=st.integers(min_value=1, max_value=64))
def test_file_chunks_hold_every_line_once_whatever_the_chunk_size(
    tmp_path_factory, data: bytes, chunk: int
) -> None:
    # A file that starts like a compressed stream is decompressed (by content, not name).
    assume(not data.startswith(tuple(MAGIC)))
    path = tmp_path_factory.mktemp("chunks") / "access.log"
    path.write_bytes(data)
    chunks = list(read_chunks([str(path)], chunk_bytes=chunk))
    joined = b"".join(bytes(c.data[: c.end]) for c in chunks)
    assert joined == data
    numbers = [c.first_line_no for c in chunks]
    expected = [1 + data[: sum(c.end for c in chunks[:i])].count(b"\n") for i in range(len(chunks))]
    assert numbers == expected


# Compiled formats split each line on its quotes and match the short pieces (fast path); the
# full-line regex takes the rest. Both must read every line the same way.
TWO_PATH = [spec for spec in PARSERS if spec.startswith(("nginx:", "apache:"))] + [
    "ingress-nginx",
    "envoy",
    "traefik",
    "vhost_combined",
]
COMBINED_LINE = st.sampled_from(
    [
        VALID,
        b'203.0.113.9 - bob [17/May/2015:10:05:03 +0200] "GET /a?b=\\"c\\" HTTP/1.1" 404 - "-" '
        b'"x\\"y" "1.2.3.4" 0.1\n',
        b'2001:db8::1 - - [17/May/2015:10:05:03 +0000] "-" 400 0 "-" "-" "-" -\n',
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(st.one_of(COMBINED_LINE, HOSTILE.map(lambda b: b + b"\n")), max_size=8).map(b"".join))
def test_the_fast_path_reads_lines_exactly_as_the_full_regex(data: bytes) -> None:
    import copy

    for spec in TWO_PATH:
        fast = get_format(spec)
        exact = copy.copy(fast)
        exact.segments = None  # type: ignore[attr-defined]
        a, b = fast.parse(data), exact.parse(data)
        assert a.records.equals(b.records), spec
        assert a.unparsed.equals(b.unparsed), spec
