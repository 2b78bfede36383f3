# syntax=docker/dockerfile:1
# The llama31_8b benchmark in NVIDIA's NeMo container (NeMo 2, Megatron-Core, TransformerEngine, apex,
# ModelOpt), with this repository at WORKDIR and its pinned requirements on top.
#
#   docker build -t llama31-8b .
#   docker build --build-arg BASE_DIGEST=sha256:<digest> -t llama31-8b .    the exact base, by digest
#   bash dev/run_docker.sh                                                  run it (docs/CLUSTER.md)
#
# The base's torch and TransformerEngine are what the benchmark is measured with: a pip constraint
# file, made from the base's own versions before anything is installed, keeps any later pip install
# (requirements.txt here, or a user's) from replacing them.

ARG BASE_IMAGE=nvcr.io/nvidia/nemo:26.02
# Content digest of BASE_IMAGE; empty = whatever the tag points to at build time. Look it up with
#   docker buildx imagetools inspect nvcr.io/nvidia/nemo:26.02
# and pass it to pin the base byte for byte.
ARG BASE_DIGEST=
FROM ${BASE_IMAGE}${BASE_DIGEST:+@${BASE_DIGEST}}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# rclone copies the C4 files and the tokenizer from object storage (utils/, docs).
# The distribution's current rclone is fine here: the benchmark does not depend on its version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends rclone \
    && rm -rf /var/lib/apt/lists/*

# Constrain torch, its Triton, and TransformerEngine to the versions the base ships; fail the build
# if either torch or TransformerEngine is missing from pip's view, since then nothing would be protected.
RUN mkdir -p /etc/llama31 \
    && python -m pip list --format=freeze \
       | grep -iE '^(torch|torchvision|torchaudio|triton|pytorch-triton|transformer[-_]engine[-_a-z0-9]*)==' \
       > /etc/llama31/pip-constraints.txt \
    && grep -qiE '^torch==' /etc/llama31/pip-constraints.txt \
    && grep -qiE '^transformer[-_]engine' /etc/llama31/pip-constraints.txt \
    && cat /etc/llama31/pip-constraints.txt

# LLAMA31_CONTAINER tells dev/venv.sh to use this image's Python instead of creating a .venv.
# PIP_CONSTRAINT applies the constraint file to every pip install, in this build and after it.
ENV LLAMA31_CONTAINER=1 \
    PIP_CONSTRAINT=/etc/llama31/pip-constraints.txt \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /workspace/llama31

# Requirements first, so that editing code does not reinstall them.
COPY requirements.txt ./
RUN python -m pip install --no-cache-dir -r requirements.txt \
    && python -c "import torch, transformer_engine, megatron.core as mc; \
print('torch', torch.__version__, '| TransformerEngine', transformer_engine.__version__, \
'| megatron-core', mc.__version__, mc.__file__)"

COPY . .
