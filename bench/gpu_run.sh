#!/usr/bin/env bash
# The GPU benchmark as one command on a lent GPU machine (docs/BENCHMARKS.md, "GPU"): installs the
# wheels of .whl/ (bench/gpu_prepare.sh) under /tmp/site, records the GPU and torch, runs
# tests/test_gpu.py (at most 120 s), then bench/gpu.py on .gpudata/ (at most 330 s of runs).
# Everything lands in $OUT: gpu.log (all of the output) and gpu.json (the figures).
#
#   bash bench/gpu_run.sh                                         # on the GPU machine ($OUT is set there)
#   OUT=/tmp/gpu NO_WHEELS=1 PYTHON=.venv/bin/python GPU_BENCH_ARGS="--device cpu --smoke" bash bench/gpu_run.sh
set -u
: "${OUT:?set OUT to the folder for gpu.log and gpu.json}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"

run() {
    source bench/gpu_env.sh  # wheels, PYTHONPATH, caches
    echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "no nvidia-smi"
    "$PYTHON" -c "import torch, torchaudio, soundfile; print('torch', torch.__version__, 'cuda', torch.version.cuda,
    'cudnn', torch.backends.cudnn.version(), 'torchaudio', torchaudio.__version__, 'soundfile', soundfile.__version__,
    'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"

    echo "== tests/test_gpu.py"
    timeout -k 5 120 "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/test_gpu.py
    echo "== pytest exit $?"

    echo "== bench/gpu.py"
    # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of arguments
    timeout -k 5 400 "$PYTHON" bench/gpu.py --data .gpudata --budget 330 --json "$OUT/gpu.json" ${GPU_BENCH_ARGS:-}
    echo "== bench exit $?"
}

run 2>&1 | tee -a "$OUT/gpu.log"
