"""The Lambda function end to end, against moto's server on 127.0.0.1 (real HTTP endpoints for S3,
DynamoDB and WAFv2): a real-shaped S3 event for a gzip ALB log object with real attackers
(tests/fixtures/alb/PROVENANCE.md), scored against a baseline stored in S3; findings, DynamoDB
decisions and the IP set are read back from the server. Dummy credentials and a region are always
set and the metadata service disabled, so boto3 never looks for a real account.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import polars as pl
import pytest
from typer.testing import CliRunner

from tests.conftest import FIXTURES, ROOT

try:
    import boto3
    from moto.server import ThreadedMotoServer  # noqa: F401 - checked here, used by moto_server
except ImportError:  # the `test` extra brings them; CI must not skip this file
    if os.environ.get("CI"):
        raise
    pytest.skip("boto3 and moto[server] are not installed", allow_module_level=True)

from mlguard.aws import lambda_handler, retrain
from mlguard.aws.decisions import main as decisions_cli
from mlguard.aws.dynamodb import DynamoDecisionStore, table_definition
from mlguard.aws.lambda_handler import handle
from mlguard.aws.settings import SETTINGS, AwsSettings
from mlguard.cli import app
from mlguard.errors import MLGuardError, UsageError
from tests.moto_server import moto_endpoint

pytestmark = pytest.mark.aws

ALB = FIXTURES / "alb"
ATTACK, HISTORY = ALB / "attack.log.gz", ALB / "history.log.gz"
T0 = datetime(2026, 11, 21, 16, 5, tzinfo=UTC)  # five minutes after the log's last line
KEY = (
    "AWSLogs/123456789012/elasticloadbalancing/us-east-1/2026/11/21/"
    "123456789012_elasticloadbalancing_us-east-1_app.larkspur-shop.50dc6c495c0c9188_20261121T1605Z_10.0.1.7_{n}.log.gz"
)
# The attackers of the log (labels: tests/fixtures/lab_low_slow/labels.csv) that the baseline
# blocks at the default thresholds, and the ones it alerts on.
BLOCKED = {"75.162.150.183", "118.187.187.169", "222.201.121.25", "24.216.121.62"}
ALERTED = {"50.67.175.223", "111.22.134.227", "68.230.9.189"}
ALLOWED = "222.201.121.25"  # dirb, allowed by a person in one scenario

@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_endpoint(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline, made as a user makes it: `mlguard train` on earlier logs of the same site."""
    path = tmp_path_factory.mktemp("model") / "baseline.npz"
    done = CliRunner().invoke(app, ["train", str(HISTORY), "--out", str(path), "--no-progress"])
    assert done.exit_code == 0, done.output
    return path


@dataclass
class Stack:
    """What deploy/aws/template.yaml creates, made on the moto server under fresh names."""

    endpoint: str
    logs: str
    findings: str
    table: str
    ipv4_set: dict[str, str]
    env: dict[str, str]

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1")

    @property
    def store(self) -> DynamoDecisionStore:
        return DynamoDecisionStore(self.table, self.client("dynamodb"), threads=1)

    def upload(self, key: str, body: bytes) -> dict[str, Any]:
        put = self.client("s3").put_object(Bucket=self.logs, Key=key, Body=body)
        return {"key": key, "etag": put["ETag"].strip('"'), "size": len(body)}

    def ip_set(self) -> tuple[set[str], str]:
        found = self.client("wafv2").get_ip_set(
            Name=self.ipv4_set["Name"], Scope="REGIONAL", Id=self.ipv4_set["Id"]
        )
        return set(found["IPSet"]["Addresses"]), found["LockToken"]

    def findings_objects(self) -> dict[str, tuple[str, Any]]:
        listed = self.client("s3").list_objects_v2(Bucket=self.findings, Prefix="mlguard/findings/")
        listed = listed.get("Contents", [])
        return {o["Key"]: (o["ETag"], o["LastModified"]) for o in listed}

    def findings_rows(self, key: str) -> list[dict[str, Any]]:
        body = self.client("s3").get_object(Bucket=self.findings, Key=key)["Body"].read()
        return [json.loads(line) for line in body.decode().splitlines()]

    def table_items(self) -> list[dict[str, Any]]:
        items = self.client("dynamodb").scan(TableName=self.table)["Items"]
        return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))

    def run(self, event: dict[str, Any], when: datetime = T0) -> dict[str, Any]:
        return handle(event, env=self.env, clock=lambda: when)


def make_stack(endpoint: str, model_file: Path, mode: str = "enforce", **extra: str) -> Stack:
    name = uuid.uuid4().hex[:10]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    logs, findings = f"logs-{name}", f"findings-{name}"
    s3.create_bucket(Bucket=logs)
    s3.create_bucket(Bucket=findings)
    s3.upload_file(str(model_file), findings, "mlguard/models/baseline.npz")
    table = f"mlguard-{name}"
    boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1").create_table(
        **table_definition(table)
    )
    waf = boto3.client("wafv2", endpoint_url=endpoint, region_name="us-east-1")
    ipv4 = waf.create_ip_set(
        Name=f"mlguard-{name}", Scope="REGIONAL", IPAddressVersion="IPV4", Addresses=[], Description="MLGuard"
    )["Summary"]
    env = {
        "MLGUARD_AWS_ENDPOINT_URL": endpoint,
        "MLGUARD_MODEL_URI": f"s3://{findings}/mlguard/models/baseline.npz",
        "MLGUARD_FINDINGS_BUCKET": findings,
        "MLGUARD_TABLE": table,
        "MLGUARD_MODE": mode,
        "MLGUARD_WAF_IPV4_SET_ARN": ipv4["ARN"],
        "MLGUARD_CRAWLER_DNS": "false",  # no DNS query leaves the machine
        "MLGUARD_DYNAMODB_THREADS": "1",  # moto's DynamoDB is not thread-safe
        **extra,
    }
    return Stack(endpoint, logs, findings, table, ipv4, env)


def s3_event(stack: Stack, *objects: dict[str, Any]) -> dict[str, Any]:
    """An S3 event notification as AWS documents it (event message structure, version 2.1)."""
    records = []
    for n, obj in enumerate(objects):
        records.append(
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-21T16:05:00.000Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": "C3D13FE58DE4C810",
                    "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "mlguard-logs",
                    "bucket": {
                        "name": stack.logs,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{stack.logs}",
                    },
                    "object": {
                        "key": quote_plus(obj["key"], safe="/"),  # S3 URL-encodes keys in events
                        "size": obj.get("size", 0),
                        "eTag": obj.get("etag", ""),
                        "sequencer": f"0055AED6DCD90281E{n}{uuid.uuid4().hex[:6].upper()}",
                    },
                },
            }
        )
    return {"Records": records}


def expected_findings(model_file: Path, *extra: str) -> list[dict[str, Any]]:
    """What `mlguard detect --model --json` says about the same log: flagged clients only."""
    done = CliRunner().invoke(
        app,
        [
            "detect",
            str(ATTACK),
            "--model",
            str(model_file),
            "--json",
            "--no-progress",
            "--no-crawler-dns",
            *extra,
        ],
    )
    assert done.exit_code == 0, done.output
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return [r for r in rows if r["verdict"] != "pass"]


def verdicts(store: DynamoDecisionStore) -> dict[str, tuple[str, str | None]]:
    return {d.client: (d.verdict, d.expires) for d in store.list() if d.verdict != "allow"}


@pytest.fixture(scope="module")
def first_run(endpoint: str, model_file: Path) -> tuple[Stack, dict[str, Any], dict[str, Any]]:
    """Enforce mode; a person has allowed one attacker before the log arrives."""
    stack = make_stack(endpoint, model_file)
    assert (
        decisions_cli(
            ["--table", stack.table, "--endpoint-url", endpoint, "allow", ALLOWED, "--reason", "ours"]
        )
        == 0
    )
    obj = stack.upload(KEY.format(n="2a8c1f0e"), ATTACK.read_bytes())
    event = s3_event(stack, obj)
    return stack, event, stack.run(event)


def test_findings_are_those_of_mlguard_detect_written_once_as_json_lines(
    first_run: tuple[Stack, dict[str, Any], dict[str, Any]], model_file: Path
) -> None:
    stack, _, result = first_run
    [done] = result["processed"]
    assert (done["format"], done["lines"], done["unparsed"], done["clients"]) == ("alb", 10_117, 0, 281)
    assert (done["blocks"], done["alerts"]) == (len(BLOCKED) - 1, len(ALERTED))
    assert result["failed"] == [] and result["skipped"] == []
    [key] = stack.findings_objects()
    assert done["findings"] == f"s3://{stack.findings}/{key}"
    assert key.startswith(f"mlguard/findings/{stack.logs}/AWSLogs/") and key.endswith(".jsonl")
    # The same pipeline as the CLI, campaigns and reasons included; the allowed client is no finding.
    assert stack.findings_rows(key) == expected_findings(model_file, "--allow", ALLOWED)
    assert {r["ip"] for r in stack.findings_rows(key)} == (BLOCKED | ALERTED) - {ALLOWED}


def test_decisions_are_in_dynamodb_with_ttls_and_blocks_in_the_ip_set(
    first_run: tuple[Stack, dict[str, Any], dict[str, Any]],
) -> None:
    stack, _, result = first_run
    assert result["processed"][0]["decisions"] == {"new": 6, "refreshed": 0, "allowed": 0}
    block_until, alert_until = "2026-11-21T20:05:00Z", "2026-11-22T16:05:00Z"  # 4 h and 24 h
    assert verdicts(stack.store) == {
        **{ip: ("block", block_until) for ip in BLOCKED - {ALLOWED}},
        **{ip: ("alert", alert_until) for ip in ALERTED},
    }
    addresses, _ = stack.ip_set()
    assert addresses == {f"{ip}/32" for ip in BLOCKED - {ALLOWED}}
    assert result["enforced"]["sent"] == 3 and result["enforced"]["failed"] == 0


def test_a_redelivered_event_changes_nothing(first_run: tuple[Stack, dict[str, Any], dict[str, Any]]) -> None:
    stack, event, _ = first_run
    before = (stack.findings_objects(), stack.table_items(), stack.ip_set())
    again = stack.run(event, T0 + timedelta(minutes=1))
    assert again["processed"] == [] and again["failed"] == []
    [skipped] = again["skipped"]
    assert skipped["why"] == "already processed" and skipped["before"]["blocks"] == 3
    # Same findings object (ETag and time), same items, same IP set and lock token (no write).
    assert (stack.findings_objects(), stack.table_items(), stack.ip_set()) == before


def test_a_malformed_object_does_not_poison_the_batch_and_a_repeat_offence_refreshes(
    endpoint: str, model_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = make_stack(endpoint, model_file, mode="alert")
    first = stack.upload(KEY.format(n="0first00"), ATTACK.read_bytes())
    assert stack.run(s3_event(stack, first))["processed"][0]["decisions"]["new"] == 7
    decided = verdicts(stack.store)
    corrupt = stack.upload(KEY.format(n="1corrupt"), ATTACK.read_bytes()[:20] + os.urandom(4000))
    not_a_log = stack.upload(KEY.format(n="2notalog"), gzip.compress(b"Enable AccessLog for ELB: x\n" * 3))
    gone = {"key": KEY.format(n="3deleted"), "etag": "0" * 32}
    again = stack.upload(KEY.format(n="4secondx"), ATTACK.read_bytes())  # the next copy of the same log
    event = s3_event(stack, corrupt, not_a_log, gone, again)
    with caplog.at_level(logging.INFO, logger="mlguard.aws"):
        result = stack.run(event, T0 + timedelta(minutes=5))
    failed = {f["object"].rsplit("_", 1)[-1]: f["error"] for f in result["failed"]}
    assert set(failed) == {"1corrupt.log.gz", "2notalog.log.gz", "3deleted.log.gz"}
    assert "NoSuchKey" in failed["3deleted.log.gz"]
    assert all("retry" not in f for f in result["failed"])  # nothing to gain from another delivery
    assert sum('"event": "failed"' in r.getMessage() for r in caplog.records) == 3
    [done] = result["processed"]
    assert done["object"].endswith("4secondx.log.gz")
    # The same clients again: each decision refreshed (expiry moved on), none created twice.
    assert done["decisions"] == {"new": 0, "refreshed": 7, "allowed": 0}
    assert len(stack.store.list()) == 7 and set(verdicts(stack.store)) == set(decided)
    assert verdicts(stack.store)["75.162.150.183"] == ("block", "2026-11-21T20:10:00Z")
    assert len(stack.findings_objects()) == 2
    assert stack.ip_set()[0] == set()  # alert mode leaves the IP set alone
    # The whole batch delivered again: everything skipped, the failures included.
    repeat = stack.run(event, T0 + timedelta(minutes=6))
    assert len(repeat["skipped"]) == 4 and repeat["processed"] == repeat["failed"] == []


def test_allow_and_ttls_hold_across_invocations_and_the_model_is_cached_by_etag(
    endpoint: str, model_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = make_stack(endpoint, model_file)
    lambda_handler._models.clear()
    with caplog.at_level(logging.INFO, logger="mlguard.aws"):
        stack.run(s3_event(stack, stack.upload(KEY.format(n="a0000000"), ATTACK.read_bytes())))
        assert stack.ip_set()[0] == {f"{ip}/32" for ip in BLOCKED}
        # A person allows a blocked client: revoked at once, out of the set on the next run (the
        # 15-minute schedule), and a later object with the same client does not block it again.
        assert (
            decisions_cli(
                ["--table", stack.table, "--endpoint-url", endpoint, "allow", ALLOWED, "--reason", "pen test"]
            )
            == 0
        )
        scheduled = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
        assert stack.run(scheduled, T0 + timedelta(minutes=15))["enforced"]["failed"] == 0
        assert stack.ip_set()[0] == {f"{ip}/32" for ip in BLOCKED - {ALLOWED}}
        # Four hours on, the blocks have expired and leave the set.
        after = stack.run(scheduled, T0 + timedelta(hours=4, minutes=1))
        assert after["expired"] == 3 and stack.ip_set()[0] == set()
        # The same attackers again: blocked anew, for 8 h this time (repeat offenders).
        later = T0 + timedelta(hours=5)
        result = stack.run(
            s3_event(stack, stack.upload(KEY.format(n="b0000000"), ATTACK.read_bytes())), later
        )
    assert result["processed"][0]["decisions"] == {"new": 3, "refreshed": 3, "allowed": 0}
    assert {ip: v for ip, v in verdicts(stack.store).items() if v[0] == "block"} == {
        ip: ("block", "2026-11-22T05:05:00Z") for ip in BLOCKED - {ALLOWED}
    }
    assert stack.ip_set()[0] == {f"{ip}/32" for ip in BLOCKED - {ALLOWED}}
    loads = [r for r in caplog.records if '"event": "model_loaded"' in r.getMessage()]
    assert len(loads) == 1  # two objects, one download: the ETag had not changed
    # A new baseline (another ETag), from the retraining function, is picked up by the next run.
    model_key = (stack.findings, "mlguard/models/baseline.npz")
    etag_before = lambda_handler._models[model_key][0]
    stack.client("s3").put_object(
        Bucket=stack.findings, Key=model_key[1], Body=retrained_model(stack, endpoint)
    )
    with caplog.at_level(logging.INFO, logger="mlguard.aws"):
        stack.run(s3_event(stack, stack.upload(KEY.format(n="c0000000"), ATTACK.read_bytes())), later)
    assert lambda_handler._models[model_key][0] != etag_before
    assert sum('"event": "model_loaded"' in r.getMessage() for r in caplog.records) == 2


def retrained_model(stack: Stack, endpoint: str) -> bytes:
    """The retraining function's model, learned from the history log in the log bucket."""
    stack.upload(
        "AWSLogs/123456789012/elasticloadbalancing/us-east-1/2026/11/23/history.log.gz", HISTORY.read_bytes()
    )
    stack.upload("AWSLogs/123456789012/ELBAccessLogTestFile", b"Enable AccessLog for ELB: larkspur-shop\n")
    env = {
        "MLGUARD_AWS_ENDPOINT_URL": endpoint,
        "MLGUARD_LOG_URI": f"s3://{stack.logs}/AWSLogs/",
        "MLGUARD_MODEL_URI": f"s3://{stack.findings}/mlguard/models/retrained.npz",
        "MLGUARD_TABLE": stack.table,
    }
    summary = retrain.handle({}, env=env, clock=lambda: datetime.now(UTC))
    # Every ALB object of the last week (two copies of the attack log and the history; not the
    # test file ALB writes); the clients under an active alert or block are left out of what
    # normal looks like.
    assert summary["objects"] == 3 and summary["unparsed"] == 0
    assert summary["left_out_flagged"] == len(BLOCKED | ALERTED) - 1
    return (
        stack.client("s3")
        .get_object(Bucket=stack.findings, Key="mlguard/models/retrained.npz")["Body"]
        .read()
    )


def test_settings_are_checked_with_one_line_each() -> None:
    base = {"MLGUARD_MODEL_URI": "s3://b/m.npz", "MLGUARD_FINDINGS_BUCKET": "f", "MLGUARD_TABLE": "t"}
    assert AwsSettings.from_env(base).mode == "alert"
    for change, message in [
        ({"MLGUARD_MODE": "enforce"}, "MLGUARD_MODE is enforce but MLGUARD_WAF_IPV4_SET_ARN is not set"),
        ({"MLGUARD_MODE": "block"}, "MLGUARD_MODE 'block'; expected one of: alert, enforce"),
        ({"MLGUARD_MODEL_URI": "/tmp/m.npz"}, "MLGUARD_MODEL_URI '/tmp/m.npz' is not s3://bucket/key"),
        ({"MLGUARD_BLOCK_THRESHOLD": "high"}, "MLGUARD_BLOCK_THRESHOLD 'high' is not a float"),
        ({"MLGUARD_CAMPAIGNS": "maybe"}, "MLGUARD_CAMPAIGNS 'maybe' is not true or false"),
        ({"MLGUARD_TABLE": ""}, "MLGUARD_TABLE is not set"),
    ]:
        with pytest.raises(UsageError, match="^" + message.replace("(", r"\(")):
            AwsSettings.from_env({**base, **change})


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "deploy-aws.md").read_text()
    for setting in SETTINGS:
        assert f"`{setting.name}`" in doc, setting.name


def test_the_sam_template_passes_cfn_lint_and_matches_the_code() -> None:
    if os.environ.get("CI") is None:
        pytest.importorskip("cfnlint")  # the `test` extra brings it; CI must not skip this
    from cfnlint.api import ManualArgs, lint_file
    from cfnlint.decode import decode

    path = ROOT / "deploy" / "aws" / "template.yaml"
    problems = lint_file(path, config=ManualArgs(regions=["us-east-1"]))
    assert [str(p) for p in problems] == []
    template, _ = decode(str(path))
    resources = template["Resources"]
    # The table is the one the code creates in the tests, with its TTL attribute.
    table = resources["DecisionTable"]["Properties"]
    made = table_definition("x")
    assert table["KeySchema"] == made["KeySchema"]
    assert table["AttributeDefinitions"] == made["AttributeDefinitions"]
    assert table["GlobalSecondaryIndexes"] == made["GlobalSecondaryIndexes"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "delete_after", "Enabled": True}
    # Every variable the functions are given is a setting the code reads.
    names = {s.name for s in SETTINGS}
    for function in ("DetectorFunction", "RetrainFunction"):
        assert set(resources[function]["Properties"]["Environment"]["Variables"]) <= names
    assert resources["DetectorFunction"]["Properties"]["ImageConfig"]["Command"] == [
        "mlguard.aws.lambda_handler.handler"
    ]
    assert resources["RetrainFunction"]["Properties"]["ImageConfig"]["Command"] == [
        "mlguard.aws.retrain.handler"
    ]
    # Least privilege: these actions and no others, no wildcard action or resource.
    actions = {}
    for role in ("DetectorRole", "RetrainRole"):
        [policy] = resources[role]["Properties"]["Policies"]
        statements = policy["PolicyDocument"]["Statement"]
        actions[role] = {
            s["Sid"]: sorted([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
            for s in statements
        }
        for s in statements:
            assert s["Resource"] != "*" and "*" not in str(s["Action"])
    assert actions["DetectorRole"] == {
        "ReadLogObjects": ["s3:GetObject", "s3:GetObjectVersion"],
        "ReadModel": ["s3:GetObject"],
        "WriteFindings": ["s3:PutObject"],
        "UpdateIPSet": ["wafv2:GetIPSet", "wafv2:UpdateIPSet"],
        "Decisions": sorted(
            f"dynamodb:{a}"
            for a in ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "ConditionCheckItem")
        ),
        "Logs": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
    }
    assert set(actions["RetrainRole"]) == {
        "ListLogObjects",
        "ReadLogObjects",
        "WriteModel",
        "ReadActiveDecisions",
        "Logs",
    }


def test_the_package_holds_only_what_the_functions_import(tmp_path: Path) -> None:
    out = tmp_path / "lambda"
    done = subprocess.run(
        [sys.executable, "-m", "mlguard.aws.package", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "package.json").read_text())
    # numpy, polars, scikit-learn, pyod and their dependencies do not fit a zip (250 MB unzipped).
    assert report["artifact"] == "image" and report["dependencies_bytes"] > report["zip_limit_bytes"]
    assert "container image" in done.stdout
    dockerfile = (out / "Dockerfile").read_text()
    assert 'CMD ["mlguard.aws.lambda_handler.handler"]' in dockerfile
    pins = dict(line.split("==") for line in (out / "requirements.txt").read_text().split())
    assert {"polars", "numpy", "scikit-learn", "pyod"} <= set(pins)
    assert not {"typer", "rich", "prometheus-client"} & set(pins)
    packaged = {
        p.relative_to(out / "mlguard").as_posix() for p in (out / "mlguard").rglob("*") if p.is_file()
    }
    assert {
        "aws/lambda_handler.py",
        "aws/retrain.py",
        "enforcers/aws_waf.py",
        "decisions/crawler_ranges.json",
    } <= packaged
    assert not {"cli.py", "watch.py", "enforcers/nginx.py"} & packaged
    # The packaged copy imports on its own (PYTHONPATH puts it before the installed one).
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlguard.aws.lambda_handler, mlguard.aws.retrain, mlguard; print(mlguard.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(out)},
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == str(out / "mlguard" / "__init__.py")


def test_the_decisions_command_fails_in_one_line_on_a_missing_table(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert decisions_cli(["--table", "absent", "--endpoint-url", endpoint, "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: table absent: ResourceNotFoundException") and err.count("\n") == 1


def test_a_bad_model_fails_the_invocation_for_a_retry_without_losing_the_object(
    endpoint: str, model_file: Path, tmp_path: Path
) -> None:
    stack = make_stack(endpoint, model_file)
    stack.client("s3").put_object(
        Bucket=stack.findings, Key="mlguard/models/baseline.npz", Body=b"not a model"
    )
    event = s3_event(stack, stack.upload(KEY.format(n="d0000000"), ATTACK.read_bytes()))
    with pytest.raises(
        MLGuardError, match=r"1 object\(s\) failed and will be retried: .*not an MLGuard model"
    ):
        stack.run(event)
    stack.client("s3").upload_file(str(model_file), stack.findings, "mlguard/models/baseline.npz")
    assert len(stack.run(event)["processed"]) == 1  # the claim was given back: the retry scores it
    assert pl.DataFrame(stack.findings_rows(next(iter(stack.findings_objects()))))["ip"].len() == 7


def test_two_invocations_deciding_about_one_client_at_once_create_one_decision(
    endpoint: str, model_file: Path
) -> None:
    """The race, made to happen: invocation A reads the client's decisions (none), invocation B
    decides about the same client, then A writes. A's transaction must fail on the client's
    version and A must read again and refresh B's decision instead of creating a second one."""
    stack = make_stack(endpoint, model_file, mode="alert")
    finding = pl.DataFrame(
        {"client": ["81.2.69.160"], "verdict": ["block"], "score": [0.9], "reasons": [["many 404s"]]}
    )
    a, b = stack.store, stack.store
    read = a._client_items
    reads: list[int] = []

    def read_while_b_decides(client: str) -> Any:
        found = read(client)
        reads.append(len(found[1]))
        if len(reads) == 1:
            assert b.record(finding, T0) == {"new": 1, "refreshed": 0, "allowed": 0}
        return found

    a._client_items = read_while_b_decides  # type: ignore[method-assign]
    assert a.record(finding, T0 + timedelta(minutes=1)) == {"new": 0, "refreshed": 1, "allowed": 0}
    assert reads == [0, 1]  # A read again after its write was refused
    [decision] = stack.store.list()
    assert (decision.verdict, decision.expires) == ("block", "2026-11-21T20:06:00Z")


def test_a_claim_is_a_lease_and_a_finished_object_stays_done(endpoint: str, model_file: Path) -> None:
    store = make_stack(endpoint, model_file, mode="alert").store
    lease = timedelta(minutes=15)
    assert store.claim("logs/a.log.gz#1", T0, lease) == ("claimed", None)
    assert store.claim("logs/a.log.gz#1", T0 + timedelta(minutes=5), lease) == ("busy", None)
    # The first invocation died without a word: once its lease ran out, another takes over.
    assert store.claim("logs/a.log.gz#1", T0 + timedelta(minutes=16), lease) == ("claimed", None)
    store.finish("logs/a.log.gz#1", T0 + timedelta(minutes=17), {"lines": 3})
    assert store.claim("logs/a.log.gz#1", T0 + timedelta(days=2), lease) == ("done", {"lines": 3})
