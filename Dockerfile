# syntax=docker/dockerfile:1
#
# One image for every module of the ofsre platform (gateway, consents, accounts, payments,
# worker) and the schema migration; the first argument picks which one runs:
#
#   docker build -t ofsre:0.1.0 .
#   docker build -t ofsre:0.1.0-aws --build-arg QUEUE_EXTRAS=sqs .     # + the SQS/SNS backend
#   docker run --read-only --tmpfs /tmp -v ofsre-data:/var/lib/ofsre -p 8080:8080 \
#     ofsre:0.1.0 gateway --host 0.0.0.0 --port 8080
#
# What it holds: `pip install 'ofsre[platform,loki,datadog,elastic]'` (the services and the
# three log shippers) plus, with --build-arg QUEUE_EXTRAS=sqs,kafka,pubsub, any of the queue
# backends. Never the `dashboards`, `loadtests` or `kubernetes` extras (grafanalib, locust,
# kubernetes): those are tools for a workstation or CI, not for a pod.
#
# The Helm chart (platform/deploy/helm/ofsre-platform) runs this image locked down: non-root
# USER below, read-only root filesystem, and the VOLUMEs below as emptyDirs.
# tests/platform/deploy/test_dockerfile.py holds the chart and this file to each other and
# runs hadolint on it. No Docker engine runs on the development machines or CI: this file is
# linted and cross-checked there, never built.

# Pinned to a patch release; a registry that builds this should also pin the digest
# (python:3.11.14-slim-bookworm@sha256:...), which cannot be looked up offline.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --------------------------------------------------------------------------- builder
# Builds ofsre and every dependency as wheels, then installs them into a virtualenv at the
# path it will have in the final image (a virtualenv's scripts hold absolute paths).
FROM ${PYTHON_IMAGE} AS builder

# Optional queue backends, comma separated: sqs, kafka, pubsub (empty: the database queue only).
ARG QUEUE_EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the wheel is made of (.dockerignore admits nothing else): the package metadata
# and the folders that pyproject.toml's package-dir maps into the `ofsre` namespace.
COPY pyproject.toml README.md ./
COPY cli/ cli/
COPY instrumentation/ instrumentation/
COPY exporters/ exporters/
COPY dashboards/ dashboards/
COPY alerts/ alerts/
COPY loadtests/ loadtests/
COPY platform/services/ platform/services/
COPY platform/queue/ platform/queue/
COPY platform/runtime/ platform/runtime/

# Every dependency has a manylinux wheel for CPython 3.11 (asyncpg, uvloop, httptools, psutil,
# grpcio), so no compiler is needed. The extras string is what the services need; `${QUEUE_EXTRAS:+,…}`
# appends the chosen queue backends only when the build argument is set.
RUN pip wheel --wheel-dir /wheels ".[platform,loki,datadog,elastic${QUEUE_EXTRAS:+,${QUEUE_EXTRAS}}]" \
 && python -m venv /opt/ofsre \
 && /opt/ofsre/bin/pip install --no-index --find-links /wheels \
      "ofsre[platform,loki,datadog,elastic${QUEUE_EXTRAS:+,${QUEUE_EXTRAS}}]" \
 && /opt/ofsre/bin/pip uninstall --yes pip

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="ofsre" \
      org.opencontainers.image.description="ofsre Open Finance platform: gateway, consents, accounts, payments, worker" \
      org.opencontainers.image.licenses="Apache-2.0"

# A system user with a fixed numeric id, so Kubernetes can check runAsNonRoot and the chart's
# runAsUser/runAsGroup (10001) name the same user. No home directory: HOME is /tmp below.
# /var/lib/ofsre is the data dir (OFSRE_DATA_DIR): runtime state, the default SQLite file,
# the log shippers' spool.
RUN groupadd --system --gid 10001 ofsre \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ofsre \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ofsre

COPY --from=builder /opt/ofsre /opt/ofsre

# PYTHONDONTWRITEBYTECODE: pip compiled the bytecode at install; the root filesystem is
# read-only at run time, so nothing may try to write __pycache__. HOME and TMPDIR point at
# /tmp so that any library cache lands in a writable volume.
ENV PATH=/opt/ofsre/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    OFSRE_DATA_DIR=/var/lib/ofsre

# Every path the services write. With a read-only root filesystem each must be a volume:
# the chart mounts an emptyDir on each (tests/platform/deploy checks the two lists agree).
VOLUME ["/tmp", "/var/lib/ofsre"]
WORKDIR /var/lib/ofsre

USER 10001:10001
EXPOSE 8080

# `python -m ofsre.platform.run <gateway|consents|accounts|payments|worker|migrate> [--host H --port P]`.
# No HEALTHCHECK: Kubernetes ignores it and probes /healthz and /readyz itself (see the chart),
# and the port depends on the arguments.
ENTRYPOINT ["python", "-m", "ofsre.platform.run"]
CMD ["--help"]
