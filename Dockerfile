# GPU image for clusters: docker build -t vqa-toolkit . && docker run --gpus all -v /data:/data -v /out:/out vqa-toolkit vqa-extract ...
# The torch 2.14.1 wheel from PyPI is the CUDA 13 build and carries its CUDA runtime, cuDNN and NCCL as pip
# packages, so a slim Python 3.11 base plus the host's NVIDIA driver (nvidia-container-toolkit) is a complete CUDA
# PyTorch environment. It is the same Python and the same install steps as the README's `make` targets.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TORCH_HOME=/weights/torch

WORKDIR /opt/vqa-toolkit
COPY setup.cfg pyproject.toml README.md ./
COPY extract ./extract
COPY train ./train
COPY models ./models
COPY pipelines ./pipelines
RUN pip install --no-cache-dir .

# /data: datasets (read-only is fine); /out: features and runs; /weights: checkpoints and the torch hub cache.
VOLUME ["/data", "/out", "/weights"]
WORKDIR /out
CMD ["vqa-extract", "--help"]
