"""`s3://bucket/prefix` inputs, against moto's S3 server on 127.0.0.1 (a real HTTP endpoint)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

LAB = ROOT / "tests" / "fixtures" / "lab_low_slow" / "access.log.gz"
ALB = ROOT / "tests" / "fixtures" / "formats" / "alb_crowdsec.log"


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # Dummy credentials and a region, so boto3 never looks for a real account or metadata service.
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="logs")
    # The lab log split in two objects, one gzip and one plain, plus an ALB object elsewhere.
    lines = gzip.decompress(LAB.read_bytes()).splitlines(keepends=True)
    half = len(lines) // 2
    s3.put_object(
        Bucket="logs", Key="web/2026/11/21/part-1.log.gz", Body=gzip.compress(b"".join(lines[:half]))
    )
    s3.put_object(Bucket="logs", Key="web/2026/11/21/part-2.log", Body=b"".join(lines[half:]))
    s3.put_object(
        Bucket="logs", Key="alb/AWSLogs/1/elasticloadbalancing/x.log.gz", Body=gzip.compress(ALB.read_bytes())
    )
    yield env
    server.stop()


def mlguard(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlguard", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=env,
    )


def verdicts(json_lines: str) -> list[tuple]:
    rows = [json.loads(line) for line in json_lines.splitlines()]
    return sorted((r["ip"], r["score"], r["verdict"], r["requests"]) for r in rows)


def test_an_s3_prefix_reads_every_object_like_the_local_file(s3_env: dict[str, str]) -> None:
    remote = mlguard(s3_env, "detect", "s3://logs/web/", "--json", "--no-progress")
    assert remote.returncode == 0, remote.stderr
    local = mlguard(s3_env, "detect", str(LAB), "--json", "--no-progress")
    assert verdicts(remote.stdout) == verdicts(local.stdout)
    assert "10,117 lines read" in remote.stderr and "0 unparsed" in remote.stderr


def test_s3_load_balancer_logs_are_recognised(s3_env: dict[str, str]) -> None:
    proc = mlguard(s3_env, "detect", "s3://logs/alb/", "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "format: alb" in proc.stderr
    assert {json.loads(line)["ip"] for line in proc.stdout.splitlines()} >= {"192.168.1.10", "192.168.1.11"}


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://logs/nothing-here/", "no object under"),
        ("s3://no-such-bucket/x", "NoSuchBucket"),
        ("s3:///x", "names no bucket"),
    ],
)
def test_s3_problems_are_one_line_errors(s3_env: dict[str, str], uri: str, message: str) -> None:
    proc = mlguard(s3_env, "detect", uri, "--no-progress")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_s3_objects_are_read_in_time_order(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from mlguard.sources.s3 import list_objects

    for key, value in s3_env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    names = list_objects("s3://logs/web/")
    assert names == ["s3://logs/web/2026/11/21/part-1.log.gz", "s3://logs/web/2026/11/21/part-2.log"]
