# syntax=docker/dockerfile:1
# MLGuard's container image; how it runs on Kubernetes: docs/deploy-kubernetes.md.
#   docker build -t mlguard-web:0.1.0 .
#   docker run --rm -v "$PWD:/logs:ro" mlguard-web:0.1.0 detect /logs/access.log
# tests/test_deploy.py checks the rules this file keeps (stages, numeric user, no build tools in
# the final stage, entrypoint, healthcheck) and runs checkov on it.

# Build stage: MLGuard's wheel, then a virtual environment with it and its dependencies. Every
# dependency ships manylinux wheels, so no compiler is needed; --only-binary turns a missing
# wheel into a build error instead of a source build.
FROM python:3.12-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/mlguard \
    && wheel="$(ls /wheels/mlguard_web-*.whl)" \
    && /opt/mlguard/bin/pip install --only-binary=:all: "${wheel}[aws,web]" \
    && /opt/mlguard/bin/pip uninstall --yes pip setuptools wheel
COPY deploy/kubernetes/ingress-nginx/trim_log.py /opt/mlguard/libexec/trim_log.py

# Final stage: the same slim Python, the virtual environment, nothing else.
FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="mlguard-web" \
      org.opencontainers.image.description="Find malicious web clients in HTTP access logs with unsupervised machine learning." \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric user, so that Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 mlguard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mlguard \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/mlguard
COPY --from=build /opt/mlguard /opt/mlguard
ENV PATH=/opt/mlguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/mlguard
# 8080: `mlguard serve`; 9464: `mlguard watch --metrics-port 9464`.
EXPOSE 8080 9464
# Healthy when the installation imports and, if MLGUARD_HEALTH_URL is set (e.g. watch's
# http://127.0.0.1:9464/metrics), when that URL answers. Kubernetes ignores HEALTHCHECK and uses
# the probes in deploy/kubernetes/.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; url = os.environ.get('MLGUARD_HEALTH_URL'); url and urllib.request.urlopen(url, timeout=5).close(); import mlguard.cli"]
ENTRYPOINT ["mlguard"]
CMD ["--help"]
