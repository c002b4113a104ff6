# syntax=docker/dockerfile:1.7
# One image for every PenguinMails process; the command picks the process:
#     docker run penguinmails-platform python -m services.<name> <process|migrate>
# Kubernetes (deploy/k8s) and docker-compose.yml set the command per container.
#
# Stage 1 installs exactly what uv.lock pins (no dev group) into /app/.venv; stage 2 is the
# slim runtime with that venv and the source, running as an unprivileged user. No compiler,
# no uv, no package caches and no secret reaches the final image: secrets come from Vault
# at run time (`vault:` settings, see docs/operations.md).
#
# Pin PYTHON_IMAGE to a digest in CI (python:3.11-slim-bookworm@sha256:...): both stages
# must use the same interpreter because the venv's python links to it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lockfile changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY libs ./libs
COPY services ./services
COPY scripts ./scripts
COPY deploy/vault ./deploy/vault
# The public OpenAPI document the gateway serves at /api/openapi.json and /api/docs.
COPY docs/openapi.yaml ./docs/openapi.yaml
# Bytecode at build time: the root filesystem is read-only at run time.
RUN python -m compileall -q libs services scripts

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid so Kubernetes can verify runAsNonRoot (runAsUser 10001).
RUN groupadd --system --gid 10001 pm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pm
ENV PATH=/app/.venv/bin:$PATH \
    VIRTUAL_ENV=/app/.venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PM_HTTP_HOST=0.0.0.0 \
    PM_HTTP_PORT=8080
WORKDIR /app
# Owned by root and not writable by the process user: code cannot be changed at run time.
COPY --from=builder --chown=root:root /app /app
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz; compose declares its own.
CMD ["python", "-m", "services.gateway", "api"]
