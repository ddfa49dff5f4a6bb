#!/usr/bin/env bash
# The device path, as one short prepared script (see bench/cuda_check.py for what it measures):
# both example specs for 15 epochs and the hand-written loop on the same device (on CUDA also the
# reference with its step captured as a CUDA graph against it eager, and under bf16), then DDP when
# there are several GPUs. Usage: bash bench/cuda_check.sh [--device cuda|cpu] [--epochs N]
#   [--data MNIST_ROOT] [--json FILE]     (MNIST_ROOT holds MNIST/raw/*-ubyte)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/cuda_check.py "$@"
