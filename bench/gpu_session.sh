#!/usr/bin/env bash
# One device command that measures everything needing a GPU (budget: ~10 minutes on an H100/H200).
#
# Prepare on the host (ignored folder .gpu/, carried to the device):
#   mkdir -p .gpu/ref .gpu/data .gpu/whl && cp ../shared/bench/*.py .gpu/ref/ \
#     && cp ../shared/data/{mnist,cifar10}.tar.gz .gpu/data/ \
#     && cp ../shared/wheels/ml_collections-1.1.0-py3-none-any.whl .gpu/whl/
# Run (device tool): bash bench/gpu_session.sh   with carry [".gpu"]
# Writes at most 8 files to $OUT: bench.jsonl, ref.jsonl, the CIFAR-10 and MNIST results and
# Table 1s, and the log.
set -uo pipefail
OUT=${OUT:-/tmp/jaxwm_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export JAXWM_CACHE_DIR=/tmp/jaxwm_cache JAXWM_SECRET=gpu-session-demo-key
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
log() { echo "=== $(date +%T) $*"; }
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
log "throughput: jaxwm vs the plain Flax and PyTorch-eager references, same process order"
python3 bench/train_throughput.py --model resnet18 --dtype bfloat16 --batch 1024 \
  --what train_step partial_step --out "$OUT/bench.jsonl"
python3 .gpu/ref/flax_resnet18_bench.py 1024 | tee "$OUT/ref.jsonl"
python3 -c "import sys, json; sys.path.insert(0, '.gpu/ref'); import torch_resnet18_bench as t; \
print(json.dumps(t.bench(False, 1024)))" | tee -a "$OUT/ref.jsonl"
log "CIFAR-10: victim (ResNet18) + partitioned and baseline embedding + verification"
python3 launch.py --config=configs/cifar10_partitioned.py \
  --config.data.source=folder:.gpu/data/cifar10.tar.gz --config.progress=False --workdir=/tmp/runs/c10 \
  ${C10_ARGS:-} && cp /tmp/runs/c10/results.json "$OUT/c10_results.json" \
  && cp /tmp/runs/c10/table1.md "$OUT/c10_table1.md"
log "MNIST: the same pipeline"
python3 launch.py --config=configs/mnist_partitioned.py \
  --config.data.source=folder:.gpu/data/mnist.tar.gz --config.progress=False --workdir=/tmp/runs/mnist \
  ${MNIST_ARGS:-} && cp /tmp/runs/mnist/results.json "$OUT/mnist_results.json" \
  && cp /tmp/runs/mnist/table1.md "$OUT/mnist_table1.md"
log "done"
} 2>&1 | tee "$OUT/log.txt"
