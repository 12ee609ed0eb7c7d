"""Formats compiled from nginx `log_format` and Apache `LogFormat` strings, on real log lines."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlguard.errors import UsageError
from mlguard.formats import get_format
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
UTC = dt.UTC

# Nginx Proxy Manager's two formats, as its nginx config defines them.
NPM_PROXY = (
    "[$time_local] $upstream_cache_status $upstream_status $status - $request_method $scheme $host "
    '"$request_uri" [Client $remote_addr] [Length $body_bytes_sent] [Gzip $gzip_ratio] '
    '[Sent-to $server] "$http_user_agent" "$http_referer"'
)
NPM_STANDARD = (
    '[$time_local] $status - $request_method $scheme $host "$request_uri" [Client $remote_addr] '
    '[Length $body_bytes_sent] [Gzip $gzip_ratio] "$http_user_agent" "$http_referer"'
)
NGINX_COMBINED = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
RECORD = ["client", "time", "request", "method", "path", "query", "status", "bytes", "referer", "user_agent"]


def parse(spec: str, fixture: str):
    return get_format(spec).parse((FIXTURES / fixture).read_bytes())


def test_nginx_proxy_manager_proxy_format_parses_every_real_line() -> None:
    parsed = parse("nginx:" + NPM_PROXY, "npm_proxy_sample.log")
    assert parsed.unparsed.height == 0
    assert parsed.records.height == 6
    first = parsed.records.row(0, named=True)
    assert first["client"] == "1.2.3.4"
    assert first["time"] == dt.datetime(2022, 1, 24, 16, 51, 2, tzinfo=UTC)
    # no $request in this format: the request line is rebuilt from method and URI
    assert first["request"] == "GET /sdfdsf"
    assert (first["method"], first["path"], first["status"], first["bytes"]) == ("GET", "/sdfdsf", 404, 192)
    assert first["user_agent"].startswith("Mozilla/5.0 (X11; Linux x86_64)")
    # every other variable is kept as a column of its own, by its nginx name
    assert first["upstream_cache_status"] == "-"
    assert first["host"] == "openresty.local"
    assert first["server"] == "openresty"
    assert parsed.records["gzip_ratio"].to_list() == ["3.10", "-", "2.45", "1.89", "-", "-"]


def test_nginx_proxy_manager_standard_format_parses_every_real_line() -> None:
    parsed = parse("nginx:" + NPM_STANDARD, "npm_standard_sample.log")
    assert parsed.unparsed.height == 0
    assert parsed.records["client"].to_list() == [
        "207.32.219.89",
        "192.168.1.25",
        "198.51.100.42",
        "10.20.30.40",
        "203.0.113.89",
    ]
    assert parsed.records["status"].to_list() == [444, 200, 404, 301, 403]
    assert parsed.records["path"].to_list()[0] == "/.env"


def test_the_other_format_s_lines_are_reported_not_parsed() -> None:
    # The NPM file mixes two formats: the `standard` lines do not fit `proxy`, and say so.
    parsed = parse("nginx:" + NPM_PROXY, "npm_standard_sample.log")
    assert parsed.records.height == 0
    assert parsed.unparsed["reason"].unique().to_list() == ["does not match the log format"]
    assert parsed.unparsed["line_no"].to_list() == [1, 2, 3, 4, 5]


def test_nginx_combined_string_matches_the_built_in_combined_parser() -> None:
    data = (FIXTURES / "combined_sample.log").read_bytes()
    built_in = get_format("combined").parse(data)
    compiled = get_format("nginx:" + NGINX_COMBINED).parse(data)
    assert compiled.unparsed.height == built_in.unparsed.height == 0
    assert compiled.records.select(RECORD).equals(built_in.records.select(RECORD))
    assert compiled.records["remote_user"].null_count() == 0  # kept as text, '-' included


def test_apache_logformat_with_an_extra_header_parses_the_almhuette_log() -> None:
    spec = (
        'apache:%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-Agent}i\\" \\"%{X-Forwarded-For}i\\"'
    )
    parsed = parse(spec, "almhuette_sample.log")
    assert parsed.unparsed.height == 0
    assert parsed.records.height == 40
    first = parsed.records.row(0, named=True)
    assert first["client"] == "193.106.31.130"
    # +0200 in the log, UTC in the record
    assert first["time"] == dt.datetime(2019, 10, 15, 14, 7, 52, tzinfo=UTC)
    assert first["request"] == "POST /administrator/index.php HTTP/1.0"
    assert first["user_agent"] == "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)"
    assert set(parsed.records["http_x_forwarded_for"].to_list()) == {"-"}
    # the built-in combined parser agrees on every field it has
    built_in = get_format("combined").parse((FIXTURES / "almhuette_sample.log").read_bytes())
    assert parsed.records.select(RECORD).equals(built_in.records.select(RECORD))


def test_apache_common_from_a_config_file_matches_the_built_in_common(tmp_path: Path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(
        "<IfModule log_config_module>\n"
        '    LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{Referer}i\\" \\"%{User-Agent}i\\"" combined\n'
        '    LogFormat "%h %l %u %t \\"%r\\" %>s %b" common\n'
        "</IfModule>\n"
    )
    data = (FIXTURES / "common_sample.log").read_bytes()
    compiled = get_format(f"apache-config:{conf}#common").parse(data)
    built_in = get_format("common").parse(data)
    assert compiled.unparsed.height == built_in.unparsed.height
    assert compiled.records.select(RECORD).equals(built_in.records.select(RECORD))
    with pytest.raises(UsageError, match="several formats"):
        get_format(f"apache-config:{conf}")
    with pytest.raises(UsageError, match="no format named 'vhost'"):
        get_format(f"apache-config:{conf}#vhost")


def test_nginx_config_file_with_a_multi_line_log_format(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "http {\n"
        "    log_format  main  '$remote_addr - $remote_user [$time_local] \"$request\" '\n"
        "                      '$status $body_bytes_sent \"$http_referer\" '\n"
        '                      \'"$http_user_agent" "$http_x_forwarded_for" rt=$request_time\';\n'
        "    access_log  /var/log/nginx/access.log  main;\n"
        "}\n"
    )
    line = (
        b'198.51.100.7 - - [20/Nov/2026:10:00:00 +0000] "GET /search?q=1 HTTP/1.1" 200 512 "-" '
        b'"curl/8.5.0" "203.0.113.5, 198.51.100.7" rt=0.004\n'
    )
    parsed = get_format(f"nginx-config:{conf}").parse(line)
    assert parsed.unparsed.height == 0
    row = parsed.records.row(0, named=True)
    assert (row["path"], row["query"]) == ("/search", "q=1")
    assert row["http_x_forwarded_for"] == "203.0.113.5, 198.51.100.7"
    assert row["request_time"] == "0.004"


def test_iso8601_and_epoch_times() -> None:
    iso = get_format('nginx:$time_iso8601 $remote_addr "$request" $status')
    parsed = iso.parse(b'2026-11-20T10:00:00+01:00 2001:DB8::5 "GET / HTTP/1.1" 204\n')
    assert parsed.records["time"].to_list() == [dt.datetime(2026, 11, 20, 9, 0, tzinfo=UTC)]
    assert parsed.records["client"].to_list() == ["2001:db8::5"]  # IPv6 lower-cased: one client, one key
    epoch = get_format('nginx:$msec $remote_addr "$request" $status')
    parsed = epoch.parse(b'1763632800.250 203.0.113.1 "GET / HTTP/1.1" 200\n')
    assert parsed.records["time"].to_list() == [dt.datetime(2025, 11, 20, 10, 0, 0, 250000, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('nginx:[$time_local] "$request" $status', "no client address field"),
        ('nginx:$remote_addr "$request" $status', "no time field"),
        ('apache:%h %t "%r" %Z', "directive '%Z' is not supported"),
        ("apache:", "format string is empty"),
        ("syslog:whatever", "unknown log format"),
    ],
)
def test_bad_format_strings_are_usage_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        get_format(spec)


def mlguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlguard", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_cli_detect_with_a_compiled_format() -> None:
    proc = mlguard(
        "detect", str(FIXTURES / "npm_proxy_sample.log"), "--log-format", "nginx:" + NPM_PROXY, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    clients = {json.loads(line)["ip"]: json.loads(line) for line in proc.stdout.splitlines()}
    assert set(clients) == {"1.2.3.4", "192.168.1.100", "203.0.113.45", "172.16.0.50"}
    assert clients["1.2.3.4"]["requests"] == 2
    assert "0 unparsed" in proc.stderr


def test_cli_rejects_a_bad_format_string_in_one_line() -> None:
    proc = mlguard("detect", str(FIXTURES / "npm_proxy_sample.log"), "-f", "nginx:$status")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "no client address field" in proc.stderr


def test_extra_columns_do_not_reach_the_feature_pipeline() -> None:
    # The streaming read asks for the record columns only; extras must not break it.
    from mlguard.pipeline import read_logs

    result = read_logs([str(FIXTURES / "npm_proxy_sample.log")], log_format="nginx:" + NPM_PROXY)
    assert (result.stats.lines, result.stats.records, result.stats.unparsed) == (6, 6, 0)
    assert result.table is not None
    assert result.table.frame.height == 4


# Built-in formats of other servers: every real sample line parses, and `auto` picks the format.
# (format, fixture, lines, lines whose status is logged as '-')
BUILT_IN_SAMPLES = [
    ("alb", "alb_crowdsec.log", 14, 0),
    ("elb", "elb_aws_docs_example.log", 2, 0),
    ("traefik", "traefik_clf_crowdsec.log", 7, 1),
    ("vhost_combined", "vhost_combined_crowdsec.log", 2, 0),
    ("caddy", "caddy_crowdsec.log", 10, 0),
    ("traefik-json", "traefik_json_crowdsec.log", 6, 0),
    ("envoy", "envoy_crowdsec.log", 4, 0),
    ("ingress-nginx", "ingress_nginx_real_nginx.log", 9, 0),
    ("cloudfront", "cloudfront_crowdsec.log", 2, 0),
    ("envoy-json", "envoy_json_crowdsec.log", 6, 0),
    ("envoy-json", "envoy_json_crawl_crowdsec.log", 41, 0),
]


@pytest.mark.parametrize(("name", "fixture", "lines", "no_status"), BUILT_IN_SAMPLES)
def test_built_in_formats_parse_their_real_samples(
    name: str, fixture: str, lines: int, no_status: int
) -> None:
    from mlguard.formats import detect_format

    data = (FIXTURES / "formats" / fixture).read_bytes()
    parsed = get_format(name).parse(data)
    assert parsed.unparsed.height == 0
    assert parsed.records.height == lines
    assert parsed.records["client"].null_count() == 0
    assert parsed.records["time"].null_count() == 0
    assert parsed.records["status"].null_count() == no_status  # a client that hung up: status '-'
    assert detect_format(data).name == name


def test_load_balancer_lines_give_the_client_address_and_the_path() -> None:
    alb = get_format("alb").parse((FIXTURES / "formats" / "alb_crowdsec.log").read_bytes()).records
    second = alb.row(1, named=True)
    # "192.168.1.11:44740" and "GET https://www.example.com:443/robots.txt HTTP/1.1"
    assert second["client"] == "192.168.1.11"
    assert (second["method"], second["path"], second["protocol"]) == ("GET", "/robots.txt", "HTTP/1.1")
    assert second["request"] == "GET /robots.txt HTTP/1.1"
    assert second["time"] == dt.datetime(2023, 4, 26, 12, 23, 0, 186641, tzinfo=UTC)
    assert second["domain_name"] == "www.example.com"
    assert alb["more_fields"][0] == ' "10.0.0.1:80" "200" "-" "-"'  # newer fields AWS appended
    elb = get_format("elb").parse((FIXTURES / "formats" / "elb_aws_docs_example.log").read_bytes()).records
    assert elb["client"].to_list() == ["192.168.131.39", "192.168.131.39"]
    assert elb["status"].to_list() == [200, 503]
    assert elb["backend_status_code"].to_list() == ["200", "-"]


def test_vhost_and_traefik_keep_their_extra_fields() -> None:
    vhost = get_format("vhost_combined").parse(
        (FIXTURES / "formats" / "vhost_combined_crowdsec.log").read_bytes()
    )
    assert vhost.records["client"].to_list() == ["1.2.3.4", "192.168.1.1"]
    assert vhost.records["server_name"].to_list() == ["website.com", "www.crowdsec11.net"]
    traefik = get_format("traefik").parse((FIXTURES / "formats" / "traefik_clf_crowdsec.log").read_bytes())
    first = traefik.records.row(0, named=True)
    assert (first["router_name"], first["service_url"], first["duration"]) == (
        "test@docker",
        "http://172.17.0.3:80",
        "0",
    )


def test_json_logs_give_the_client_the_request_and_the_agent() -> None:
    caddy = get_format("caddy").parse((FIXTURES / "formats" / "caddy_crowdsec.log").read_bytes()).records
    first = caddy.row(0, named=True)
    # Caddy's client_ip (what its trusted_proxies settle on) wins over the TCP peer remote_ip
    assert (first["client"], first["request"], first["user_agent"]) == (
        "127.0.0.1",
        "GET / HTTP/1.0",
        "curl/7.74.0",
    )
    assert first["time"] == dt.datetime.fromtimestamp(1693840791.7564995, UTC).replace(microsecond=756499)
    traefik = get_format("traefik-json").parse(
        (FIXTURES / "formats" / "traefik_json_crowdsec.log").read_bytes()
    )
    row = traefik.records.row(0, named=True)
    assert (row["client"], row["path"], row["status"], row["bytes"]) == (
        "172.17.0.1",
        "/594VAEoi.save",
        200,
        357,
    )
    assert row["user_agent"] == "Nikto"


def test_jsonl_with_a_field_mapping() -> None:
    fmt = get_format(
        "jsonl:client=remote_addr,time=time_iso8601,request=request,status=status,"
        "bytes=body_bytes_sent,user_agent=http_user_agent|ua"
    )
    data = (
        b'{"remote_addr":"203.0.113.5","time_iso8601":"2026-11-20T10:00:00+01:00",'
        b'"request":"GET /x?a=1 HTTP/1.1","status":"404","body_bytes_sent":"12","ua":"curl/8.5"}\n'
        b"{not json\n"
        b'{"remote_addr":"203.0.113.6","status":200}\n'
    )
    parsed = fmt.parse(data)
    row = parsed.records.row(0, named=True)
    assert (row["client"], row["path"], row["query"], row["status"], row["user_agent"]) == (
        "203.0.113.5",
        "/x",
        "a=1",
        404,
        "curl/8.5",
    )
    assert row["time"] == dt.datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert parsed.unparsed["reason"].to_list() == ["not valid JSON", "bad timestamp"]
    with pytest.raises(UsageError, match="no client"):
        get_format("jsonl:time=ts,status=code,request=req")
    with pytest.raises(UsageError, match="unknown record field 'host'"):
        get_format("jsonl:host=h,client=c,time=t,status=s,request=r")


def test_envoy_takes_the_client_from_the_right_most_forwarded_entry() -> None:
    text = get_format("envoy").parse((FIXTURES / "formats" / "envoy_crowdsec.log").read_bytes()).records
    # "10.0.35.28", "[fd00:1234:5678::5a24]", "192.168.1.100, 10.42.0.1", "..., [fd00:1234:5678::1]:54321"
    assert text["client"].to_list() == [
        "10.0.35.28",
        "fd00:1234:5678::5a24",
        "10.42.0.1",
        "fd00:1234:5678::1",
    ]
    assert text["http_x_forwarded_for"][2] == "192.168.1.100, 10.42.0.1"  # kept whole for --trusted-proxy
    assert text["request"][0] == "POST /api/v1/locations HTTP/2"
    as_json = get_format("envoy-json").parse((FIXTURES / "formats" / "envoy_json_crowdsec.log").read_bytes())
    first = as_json.records.row(0, named=True)
    # downstream_remote_address "10.0.0.12:59292" without its port; the CRI prefix is not part of the JSON
    assert (first["client"], first["path"], first["status"]) == ("10.0.0.12", "/assets/image.webp", 200)


def test_ingress_nginx_keeps_every_upstream_tried() -> None:
    rows = get_format("ingress-nginx").parse(
        (FIXTURES / "formats" / "ingress_nginx_real_nginx.log").read_bytes()
    )
    first = rows.records.row(0, named=True)
    assert (first["upstream_addr"], first["upstream_status"]) == (
        "127.0.0.1:18099, 127.0.0.1:18081",
        "502, 200",
    )
    assert (first["proxy_upstream_name"], first["proxy_alternative_upstream_name"]) == ("default-web-80", "")
    assert rows.records["status"].to_list() == [200, 200, 404, 404, 404, 404, 200, 200, 501]


def test_cloudfront_lines_with_their_header() -> None:
    from mlguard.formats.servers import CLOUDFRONT_FIELDS

    header = "#Version: 1.0\n#Fields: " + " ".join(CLOUDFRONT_FIELDS) + "\n"
    data = header.encode() + (FIXTURES / "formats" / "cloudfront_crowdsec.log").read_bytes()
    parsed = get_format("cloudfront").parse(data)
    assert parsed.unparsed["reason"].to_list() == ["header line", "header line"]  # reported, not data
    row = parsed.records.row(0, named=True)
    # date and time fields joined (UTC); the query string rejoins the path
    assert row["time"] == dt.datetime(2024, 3, 12, 15, 22, 28, tzinfo=UTC)
    assert (row["client"], row["request"], row["status"]) == (
        "1.2.3.4",
        "GET /testseb?query_param=42 HTTP/2.0",
        400,
    )
    assert (row["edge_location"], row["host"]) == ("CDG50-P2", "d6rcaj0q1hys9.cloudfront.net")
