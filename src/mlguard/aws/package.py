"""`python -m mlguard.aws.package --out DIR`: the deployment artifact of the Lambda functions.

It measures what the functions need: the MLGuard modules they import (found by importing the
entry points in a fresh interpreter, so the CLI, the daemon and the other enforcers stay out)
and the third-party distributions they use, with everything those depend on, as installed here.
A zip deployment package may hold 250 MB unzipped (262,144,000 bytes, function and layers
together); NumPy, SciPy, scikit-learn, PyOD (with Numba and LLVM) and Polars hold several times
that, so the functions ship as a **container image** (up to 10 GB) and this command writes its
build context:

    DIR/Dockerfile         FROM the AWS Lambda Python base image of this Python's version
    DIR/requirements.txt   every distribution needed, pinned to the versions tested here
                           (boto3 and its dependencies come with the base image)
    DIR/mlguard/           the modules the functions import, with their data files
    DIR/package.json       the measurement and the decision

`sam build` (deploy/aws/template.yaml points at build/lambda) builds and pushes the image.
No network is used here: pip runs inside `docker build`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from mlguard import __version__

ENTRY_MODULES = (
    "mlguard.aws.lambda_handler",
    "mlguard.aws.retrain",
    "mlguard.aws.decisions",
    "mlguard.enforcers.aws_waf",  # imported when the function enforces
)
# What the functions import beyond the standard library (the CLI's typer, rich and
# prometheus-client are not among them).
FUNCTION_REQUIREMENTS = ("polars", "numpy", "scikit-learn", "pyod", "zstandard", "dnspython")
# In every AWS Lambda Python base image already.
PROVIDED = {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3"}
ZIP_LIMIT_BYTES = 262_144_000  # AWS Lambda: deployment package (and layers), unzipped
BASE_IMAGE = "public.ecr.aws/lambda/python"

_CLOSURE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.__file__ for n, m in list(sys.modules.items())
                         if (n == "mlguard" or n.startswith("mlguard.")) and getattr(m, "__file__", None)})))
"""

DOCKERFILE = """\
# The MLGuard Lambda functions (MLGuard {version}), written by `python -m mlguard.aws.package`.
# Build with `sam build` (deploy/aws/template.yaml) or: docker build -t mlguard-lambda .
FROM {base}:{python}
COPY requirements.txt ${{LAMBDA_TASK_ROOT}}/
RUN pip install --no-cache-dir --only-binary=:all: -r ${{LAMBDA_TASK_ROOT}}/requirements.txt
COPY mlguard ${{LAMBDA_TASK_ROOT}}/mlguard
# Only /tmp is writable in Lambda: Numba's cache and Matplotlib's config (PyOD imports both) go there.
ENV NUMBA_CACHE_DIR=/tmp/numba MPLCONFIGDIR=/tmp/matplotlib
# The detector; the retraining function overrides it with mlguard.aws.retrain.handler.
CMD ["mlguard.aws.lambda_handler.handler"]
"""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wanted(requirement: str) -> str | None:
    """The distribution a Requires-Dist line names, if it applies here without extras."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return None
    return _normal(req.name)


def dependency_closure(names: tuple[str, ...] = FUNCTION_REQUIREMENTS) -> dict[str, metadata.Distribution]:
    """Every distribution the given ones need, as installed here, by normalised name."""
    found: dict[str, metadata.Distribution] = {}
    todo = [_normal(n) for n in names]
    while todo:
        name = todo.pop()
        if name in found or name in PROVIDED:
            continue
        dist = metadata.distribution(name)
        found[name] = dist
        todo += [n for n in map(_wanted, dist.requires or []) if n is not None]
    return found


def installed_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for file in dist.files or []:
        path = Path(str(file.locate()))
        if path.is_file():
            total += path.stat().st_size
    return total


def module_closure() -> list[Path]:
    """The files of the MLGuard modules the entry points import."""
    done = subprocess.run(
        [sys.executable, "-c", _CLOSURE, *ENTRY_MODULES],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return [Path(p) for p in json.loads(done.stdout)]


def build(out: Path) -> dict[str, object]:
    import mlguard

    root = Path(mlguard.__file__).parent
    deps = dependency_closure()
    sizes = {dist.metadata["Name"]: installed_bytes(dist) for dist in deps.values()}
    modules = module_closure()
    target = out / "mlguard"
    if target.exists():
        shutil.rmtree(target)
    copied = set()
    for path in modules:
        folder = path.parent
        for item in [path, *(p for p in folder.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc"))]:
            relative = item.relative_to(root)
            if relative in copied:
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target / relative)
            copied.add(relative)
    pins = sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in deps.values())
    (out / "requirements.txt").write_text("\n".join(pins) + "\n")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    (out / "Dockerfile").write_text(DOCKERFILE.format(version=__version__, base=BASE_IMAGE, python=python))
    total = sum(sizes.values())
    report: dict[str, object] = {
        "artifact": "image",
        "dependencies_bytes": total,
        "zip_limit_bytes": ZIP_LIMIT_BYTES,
        "largest": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:8]),
        "requirements": pins,
        "modules": sorted(str(p) for p in copied),
        "base_image": f"{BASE_IMAGE}:{python}",
    }
    (out / "package.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlguard.aws.package", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", required=True, type=Path, help="the build context to write (e.g. build/lambda)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = build(args.out)
    total = int(report["dependencies_bytes"])  # type: ignore[call-overload]
    largest = ", ".join(f"{n} {b / 1e6:.0f} MB" for n, b in report["largest"].items())  # type: ignore[attr-defined]
    verdict = (
        "more than a zip package may hold unzipped (262 MB): the functions ship as a container image"
        if total > ZIP_LIMIT_BYTES
        else "a zip package would hold it, but one image serves both functions: a container image"
    )
    print(f"dependencies: {total / 1e6:.0f} MB installed ({largest})")
    print(f"{verdict}; build context written to {args.out} (Dockerfile, requirements.txt, mlguard/)")
    print("next: sam build --template-file deploy/aws/template.yaml && sam deploy --guided")
    return 0


if __name__ == "__main__":
    sys.exit(main())
