#!/usr/bin/env bash
# GPU validation for the lent GPU machine (Python 3.12 with torch and triton preinstalled; no uv, no network).
# Run from the repository root:   bash shared/gpu_check.sh
# It runs every test marked gpu (Triton kernels against their references on the real device among them) and
# `sciml bench --device cuda`,
# and writes a log and JSON results to $OUT (default: ./gpu-results).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

# Every package's sources on the path, as if installed.
SRC=$(ls -d packages/*/src | paste -sd: -)
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"

# Entry points (sciml.demos, sciml.benchmarks) need package metadata, which PYTHONPATH alone does not give:
# write minimal .dist-info folders for the workspace members into a scratch site directory.
SITE="$OUT/site"
mkdir -p "$SITE"
"$PY" shared/write_dist_info.py "$SITE" >"$OUT/dist-info.log" 2>&1
export PYTHONPATH="$SITE:$PYTHONPATH"

{
    echo "== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
    "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

status=0
echo "== pytest -m gpu"
"$PY" -m pytest packages/*/tests integration_tests -m gpu -p no:cacheprovider -q \
    --junitxml="$OUT/pytest-gpu.xml" 2>&1 | tee "$OUT/pytest-gpu.log"
rc=${PIPESTATUS[0]}
# Exit status 5 means no test carried the gpu marker, which is not a failure of the GPU.
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then status=1; fi

echo "== sciml bench --device cuda"
"$PY" -m sciml bench --device cuda --json "$OUT/bench-cuda.json" 2>&1 | tee "$OUT/bench-cuda.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== package GPU benchmarks (packages/*/benchmarks/bench_*_gpu.py OUT.json)"
for script in packages/*/benchmarks/bench_*_gpu.py; do
    [ -e "$script" ] || continue
    name=$(basename "$script" .py)
    "$PY" "$script" "$OUT/$name.json" 2>&1 | tee "$OUT/$name.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done

echo "== sciml info"
"$PY" -m sciml info 2>&1 | tee "$OUT/info.txt"

echo "gpu_check status: $status" | tee "$OUT/status.txt"
exit $status
