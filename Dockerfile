# syntax=docker/dockerfile:1
#
# Upload gateway image. Build from the repository root:
#   docker build -t upload-gateway .
# Run (every setting comes from GATEWAY_* environment variables, see deploy/README.md):
#   docker run -p 8080:8080 -e GATEWAY_DATABASE_URL=... upload-gateway
#   docker run --rm upload-gateway migrate

ARG PYTHON_IMAGE=python:3.12-slim

# --- build: install the project and its dependencies into a self-contained venv ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# .dockerignore admits only what the package needs (pyproject.toml, README.md, gateway/,
# migrations/), so no local .env, .venv or .git ever reaches the image, nor devtools/
# (`gateway dev`, its moto S3, the demo page): in the image `gateway dev` says it needs a
# source checkout. No extras: moto is not installed.
COPY . .
RUN pip install . \
 && gateway --help >/dev/null

# --- runtime: the venv only, run as an unprivileged user ---
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="upload-gateway" \
      org.opencontainers.image.description="Presigned-upload gateway with per-tenant storage quotas" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_LOG_FORMAT=json
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Numeric so Kubernetes' runAsNonRoot can verify it without looking up /etc/passwd.
USER 10001:10001
EXPOSE 8080
# No curl in the slim image: the stdlib does the probe (urlopen raises on non-2xx).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
