#!/usr/bin/env bash
# The CUDA path, as one short prepared script for a machine with NVIDIA GPUs:
# the reference MNIST spec for 2 epochs in one process, then DDP with one process per GPU.
# Usage: bash bench/cuda_check.sh [MNIST_ROOT]   (MNIST_ROOT holds MNIST/raw/*-ubyte)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-../shared/data/mnist}
out=$(mktemp -d)
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
common=(specs/mnist_cnn.yaml --quiet --set train.epochs=2 --set "data.root=$root" --set data.download=false)
python3 -m cnnspec run "${common[@]}" --device cuda --output "$out/single"
echo "single process:"; cat "$out/single/metrics.jsonl"
if [ "$gpus" -gt 1 ]; then
  python3 -m torch.distributed.run --standalone --nproc_per_node="$gpus" -m cnnspec run "${common[@]}" \
    --device cuda --output "$out/ddp"
  echo "DDP, $gpus processes:"; cat "$out/ddp/metrics.jsonl"
else
  echo "one GPU: DDP with one process per GPU is the single-process run above"
fi
