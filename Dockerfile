# vitlens on a GPU box: the Streamlit dashboard (and, as a second service, `vitlens worker`).
# Build:  docker build -t vitlens .            (here: podman build --format docker --build-arg BASE=localhost/debian:bookworm)
# Run:    docker compose up -d                 (dashboard + worker, see docker-compose.yml)
#
# BASE: a plain Debian image is enough. torch's CUDA wheels bring their own CUDA 13 libraries and the
# NVIDIA container toolkit brings the driver (>= 580 for CUDA 13), so a CUDA base image would only
# add a second, unused CUDA (gigabytes) and its NVIDIA_REQUIRE_CUDA check.
ARG BASE=debian:bookworm-slim

# ---- build: the virtual environment, installed with the same command README.md gives
FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt pyproject.toml README.md ./
COPY vitlens ./vitlens
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install -r requirements.txt -e . && find /app/.venv -name "__pycache__" -type d -prune -exec rm -rf {} +

# ---- runtime: Python, curl for the health check, the venv and the app; no compilers, tests or browsers
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    VITLENS_CACHE_DIR=/data/cache \
    VITLENS_CHECKPOINT_ROOT=/data/checkpoints \
    VITLENS_DATA_ROOT=/data/datasets \
    VITLENS_DEVICE=auto \
    VITLENS_CACHE_SIZE=20G \
    HF_HOME=/data/cache/huggingface
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 vitlens \
    && mkdir -p /data/cache /data/checkpoints /data/datasets /app \
    && chown -R vitlens:vitlens /data /app
WORKDIR /app
COPY --from=build --chown=vitlens:vitlens /app /app
COPY --chown=vitlens:vitlens app.py ./
COPY --chown=vitlens:vitlens pages ./pages
COPY --chown=vitlens:vitlens .streamlit ./.streamlit
USER 1000
VOLUME ["/data/cache", "/data/checkpoints", "/data/datasets"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "http://localhost:8501/_stcore/health"]
# `vitlens check-device` fails fast with one log line when VITLENS_DEVICE=cuda and no usable GPU is there.
CMD ["/bin/sh", "-c", "/app/.venv/bin/vitlens check-device && exec /app/.venv/bin/vitlens dashboard --server.headless true --server.address 0.0.0.0 --server.port 8501 --server.fileWatcherType none"]
