"""Peak RSS of the Lambda function scoring one 100 MB gzip ALB object: ``python -m bench lambda-memory``.

Issue #6 asks that the handler score a 100 MB gzip ALB log object within a 1,024 MB memory
limit. This benchmark builds such an object (the throughput benchmark's generated 10M-line log,
lines written again in ALB's layout by the fixture converter tests/fixtures/alb/make_alb.py,
until the gzip output reaches the size), trains a baseline on its first 200,000 lines, starts
moto's server on 127.0.0.1 with a log bucket, a findings bucket, the DynamoDB table and a WAFv2
IP set, and invokes ``mlguard.aws.lambda_handler.handle`` on a real-shaped S3 event in a fresh
process (enforce mode). The peak RSS is the kernel's ``ru_maxrss`` of that process (moto and
its copy of the object live in this process, not that one).

    python -m bench lambda-memory [--mib 100] [--repeat 3] [--chunk-mib 16]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.throughput import CACHE_DIR, REPO_ROOT, RESULTS_DIR, ensure_log, machine_info, run_measured

LIMIT_MIB = 1024
TRAIN_LINES = 200_000
CHILD = """
import json, sys
from mlguard.aws.lambda_handler import handle
event = json.loads(sys.argv[1])
result = handle(event)
[done] = result["processed"]
print(json.dumps({k: done[k] for k in ("lines", "unparsed", "clients", "alerts", "blocks", "seconds")}))
"""


def _converter():  # type: ignore[no-untyped-def]
    path = REPO_ROOT / "tests" / "fixtures" / "alb" / "make_alb.py"
    spec = importlib.util.spec_from_file_location("mlguard_make_alb", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_object(mib: int, seed: int) -> tuple[Path, dict]:
    """A gzip ALB object of about `mib` MiB (compressed), cached in bench/.cache."""
    out = CACHE_DIR / f"alb-{mib}mib-s{seed}.log.gz"
    meta_path = Path(f"{out}.meta.json")
    if out.exists() and meta_path.exists():
        return out, json.loads(meta_path.read_text())
    source, _ = ensure_log(10_000_000, seed, skip_generate=False, force=False)
    alb_line = _converter().alb_line
    target = mib * 2**20
    lines = skipped = 0
    started = time.perf_counter()
    with (
        open(source, encoding="utf-8", errors="replace") as src,
        open(out, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
    ):
        for n, line in enumerate(src, 1):
            try:
                converted = alb_line(line.rstrip("\n"), n)
            except ValueError:  # the generated log's deliberately broken lines
                skipped += 1
                continue
            gz.write(converted.encode() + b"\n")
            lines += 1
            if lines % 100_000 == 0 and raw.tell() >= target:
                break
    meta = {
        "path": str(out.relative_to(REPO_ROOT)),
        "bytes": out.stat().st_size,
        "lines": lines,
        "source": str(source.relative_to(REPO_ROOT)),
        "source_lines_left_out": skipped,
        "build_s": round(time.perf_counter() - started, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return out, meta


def ensure_model(obj: Path, seed: int) -> Path:
    from mlguard.detectors.model import load_model
    from mlguard.errors import ModelError

    model = CACHE_DIR / f"alb-baseline-s{seed}.npz"
    if model.exists():
        try:
            load_model(model)
            return model
        except ModelError as exc:  # built by an older MLGuard (features changed): train it again
            print(f"[lambda] retraining the cached baseline: {exc}", file=sys.stderr)
    head = CACHE_DIR / f"alb-train-{TRAIN_LINES}.log"
    with gzip.open(obj, "rt") as src, open(head, "w") as dst:
        for n, line in enumerate(src):
            if n >= TRAIN_LINES:
                break
            dst.write(line)
    subprocess.run(
        [sys.executable, "-m", "mlguard", "train", str(head), "--out", str(model), "--no-progress"],
        check=True,
        cwd=REPO_ROOT,
    )
    return model


def _stack(endpoint: str, obj: Path, model: Path) -> tuple[dict, dict[str, str]]:
    import boto3

    from mlguard.aws.dynamodb import table_definition

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="logs")
    s3.create_bucket(Bucket="findings")
    s3.upload_file(str(model), "findings", "baseline.npz")
    key = "AWSLogs/123456789012/elasticloadbalancing/us-east-1/2026/11/21/bench.log.gz"
    s3.upload_file(str(obj), "logs", key)
    etag = s3.head_object(Bucket="logs", Key=key)["ETag"].strip('"')
    boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1").create_table(
        **table_definition("mlguard")
    )
    waf = boto3.client("wafv2", endpoint_url=endpoint, region_name="us-east-1")
    ip_set = waf.create_ip_set(Name="mlguard", Scope="REGIONAL", IPAddressVersion="IPV4", Addresses=[])
    env = {
        "MLGUARD_AWS_ENDPOINT_URL": endpoint,
        "MLGUARD_MODEL_URI": "s3://findings/baseline.npz",
        "MLGUARD_FINDINGS_BUCKET": "findings",
        "MLGUARD_TABLE": "mlguard",
        "MLGUARD_MODE": "enforce",
        "MLGUARD_WAF_IPV4_SET_ARN": ip_set["Summary"]["ARN"],
        "MLGUARD_CRAWLER_DNS": "false",
        "MLGUARD_DYNAMODB_THREADS": "1",  # moto's DynamoDB is not thread-safe
    }
    event = {"Records": []}
    template = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": "logs", "arn": "arn:aws:s3:::logs"},
            "object": {"key": key, "size": obj.stat().st_size, "eTag": etag},
        },
    }
    event["Records"].append(template)
    return event, env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench lambda-memory", description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=100, help="compressed size of the ALB object")
    ap.add_argument("--repeat", type=int, default=3, help="invocations (fresh process each; median)")
    ap.add_argument("--chunk-mib", type=int, default=16, help="MLGUARD_CHUNK_BYTES, in MiB")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args(argv)
    from moto.server import ThreadedMotoServer

    obj, meta = ensure_object(a.mib, a.seed)
    model = ensure_model(obj, a.seed)
    dummy = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    os.environ.update(dummy)
    runs = []
    for _ in range(a.repeat):
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            event, env = _stack(f"http://{host}:{port}", obj, model)
            env["MLGUARD_CHUNK_BYTES"] = str(a.chunk_mib * 2**20)
            child_env = {**os.environ, **dummy, **env}
            run = run_measured(
                [sys.executable, "-c", CHILD, json.dumps(event)], capture=True, env=child_env, timeout=3600
            )
        finally:
            server.stop()
        if run["rc"] != 0:
            raise RuntimeError(run["stderr_tail"])
        run["result"] = json.loads(run["stdout"].strip().splitlines()[-1])
        runs.append(run)
        print(f"[bench] peak RSS {run['maxrss_mib']:.0f} MiB, {run['wall_s']:.1f} s", file=sys.stderr)
    peak = statistics.median(r["maxrss_mib"] for r in runs)
    report = {
        "command": (
            f"python -m bench lambda-memory --mib {a.mib} --repeat {a.repeat} --chunk-mib {a.chunk_mib}"
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "object": meta,
        "result": runs[0]["result"],
        "peak_rss_mib": [round(r["maxrss_mib"]) for r in runs],
        "median_peak_rss_mib": round(peak),
        "wall_s": [round(r["wall_s"], 1) for r in runs],
        "limit_mib": LIMIT_MIB,
        "within_limit": peak <= LIMIT_MIB,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "lambda_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    return 0 if report["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
