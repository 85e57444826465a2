# vitlens on a GPU box: the Streamlit dashboard and its job worker in one container.
# Build:  docker build -t vitlens .
# Run:    docker run --gpus all -p 8501:8501 -v vitlens-cache:/data/cache -v /path/to/ckpts:/data/checkpoints:ro \
#                    -v /path/to/datasets:/data/datasets:ro vitlens
# CUDA runtime base; PyTorch comes from requirements.txt (its CUDA wheels carry their own CUDA libraries),
# installed with the same command README.md gives, so the image runs what the tests ran.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VITLENS_CACHE_DIR=/data/cache \
    VITLENS_CHECKPOINT_ROOT=/data/checkpoints \
    VITLENS_DATA_ROOT=/data/datasets \
    VITLENS_DEVICE=auto \
    VITLENS_WORKERS=1 \
    VITLENS_CACHE_SIZE=20G \
    HF_HOME=/data/cache/huggingface

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 vitlens \
    && mkdir -p /data/cache /data/checkpoints /data/datasets /app \
    && chown -R vitlens:vitlens /data /app

WORKDIR /app
COPY --chown=vitlens:vitlens requirements.txt pyproject.toml README.md ./
COPY --chown=vitlens:vitlens vitlens ./vitlens
USER 1000
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install -r requirements.txt -e .
COPY --chown=vitlens:vitlens app.py ./
COPY --chown=vitlens:vitlens pages ./pages
COPY --chown=vitlens:vitlens .streamlit ./.streamlit

VOLUME ["/data/cache", "/data/checkpoints", "/data/datasets"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "http://localhost:8501/_stcore/health"]
CMD ["/app/.venv/bin/streamlit", "run", "app.py", "--server.headless", "true", "--server.address", "0.0.0.0", "--server.port", "8501", "--server.fileWatcherType", "none"]
