#!/usr/bin/env bash
# GPU validation of sciml-norm and sciml-equivariant on the lent GPU machine (python3 with torch, triton, e3nn,
# timm, pytest preinstalled; no uv, no network). Run from the repository root:
#     OUT=/some/dir bash shared/gpu_norm_equivariant.sh
# First, in the background while the tests run, shared/evonorm_precompile.py compiles every EvoNorm kernel the
# benchmarks below launch (stand-in driver, worker processes, Triton's cache in $TRITON_CACHE_DIR), so their time
# limits go to measuring; each step logs how many kernels (cubins) it still had to compile.
# Steps, in order of priority, each under its own time limit so that one slow step cannot starve the rest:
# the gpu-marked tests of sciml-norm (both EvoNorm strategies; each case repeated through the direct launches), the
# fused EvoNorm benchmark (NCHW, then channels-last; the default, the split strategy and Triton's own launch path
# side by side), the host / GPU split of one step (profile_evonorm_step.py), the sweep of the persistent EvoNorm kernels' launch
# constants (PERSISTENT_SWEEP=0 skips it); with GAUNT=1 the gpu-marked tests of sciml-equivariant, the Gaunt
# benchmark against e3nn and the Gaunt kernel's block sweep; with COMPILED=1 the EvoNorm benchmark under torch.compile(mode="reduce-overhead"), with
# SWEEP_EVONORM=1 the split kernels' tile sweep, with OTHERS=1 the gpu-marked tests of the other packages.
# The benchmarks and the sweep survive a kernel fault (it breaks CUDA in their process): they record it, exit 3 and
# are rerun with --resume, skipping what they measured and the contender that faulted (see resumable below).
# Logs and JSON go to
# $OUT/work, which is packed into $OUT/results.tar.gz at the end (the machine returns at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-results}"
WORK="$OUT/work"
mkdir -p "$WORK"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
SRC=$(ls -d packages/*/src | paste -sd: -)
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
SITE="$WORK/site"
"$PY" shared/write_dist_info.py "$SITE" >"$WORK/dist-info.log" 2>&1
export PYTHONPATH="$SITE:$PYTHONPATH"

export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/sciml-triton-cache}"
mkdir -p "$TRITON_CACHE_DIR"
cubins() { find "$TRITON_CACHE_DIR" -name '*.cubin' 2>/dev/null | wc -l; }

step() {  # step NAME SECONDS COMMAND... (its exit status in STEP_RC; the log of a rerun is appended)
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS c0
    c0=$(cubins)
    echo "== $name (limit ${limit}s, at ${t0}s)"
    timeout -k 5 "$limit" "$@" >>"$WORK/$name.log" 2>&1
    STEP_RC=$?
    local compiled=$(($(cubins) - c0))
    echo "   rc=$STEP_RC in $((SECONDS - t0))s, $compiled kernels compiled"
    echo "$name rc=$STEP_RC seconds=$((SECONDS - t0)) compiled=$compiled" >>"$WORK/steps.txt"
}

# resumable NAME SECONDS COMMAND...: a step whose script keeps a journal (bench_evonorm_gpu.Journal). When a kernel
# fault breaks CUDA, the script exits with status 3 (or the process dies by a signal); it is then rerun with
# --resume, which skips what was measured and the contender that broke it, while at least 20 of the SECONDS are left
# (at most 6 runs).
resumable() {
    local name=$1 limit=$2
    shift 2
    local end=$((SECONDS + limit)) runs=0 extra=()
    while :; do
        step "$name" $((end - SECONDS)) "$@" "${extra[@]}"
        runs=$((runs + 1))
        if [ "$STEP_RC" != 3 ] && { [ "$STEP_RC" -lt 128 ] || [ "$STEP_RC" = 137 ]; }; then
            return
        fi
        if [ $runs -ge 6 ] || [ $((end - SECONDS)) -lt 20 ]; then
            return
        fi
        echo "   CUDA broke in $name: rerun with --resume"
        extra=(--resume)
    done
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
    "$PY" -c "import triton, e3nn, timm; print('triton', triton.__version__, 'e3nn', e3nn.__version__, 'timm', timm.__version__)" 2>&1
} >"$WORK/machine.txt" 2>&1
cat "$WORK/machine.txt"

# ahead-of-time compilation of the benchmarks' kernels, on all but two cores, while the tests run
JOBS=$(($(nproc) > 4 ? $(nproc) - 2 : 2))
PRE_T0=$SECONDS
timeout -k 5 200 "$PY" shared/evonorm_precompile.py --jobs "$JOBS" --resources "$WORK/kernel-resources.json" \
    >"$WORK/precompile.log" 2>&1 &
PRE_PID=$!

PYTEST=("$PY" -m pytest -p no:cacheprovider -q -m gpu -o addopts="" --import-mode=importlib -W "ignore::DeprecationWarning")
# the gpu tests of sciml-norm in two processes at once, as their time goes mostly to Triton compiling each case's
# kernels: the split strategy's cases, and the rest (the persistent kernels, pipelined and wide variants, compile)
step pytest-norm-split 240 "${PYTEST[@]}" packages/sciml-norm/tests -k split --junitxml="$WORK/pytest-norm-split.xml" &
SPLIT_PID=$!
step pytest-norm 240 "${PYTEST[@]}" packages/sciml-norm/tests -k "not split" --junitxml="$WORK/pytest-norm.xml"
wait "$SPLIT_PID"
wait "$PRE_PID"
echo "precompile rc=$? done at $((SECONDS))s (started at ${PRE_T0}s): $(tail -n 1 "$WORK/precompile.log")" | tee -a "$WORK/steps.txt"
resumable evonorm-nchw 110 "$PY" packages/sciml-norm/benchmarks/bench_evonorm_gpu.py "$WORK/evonorm-nchw.json"
resumable evonorm-cl 85 "$PY" packages/sciml-norm/benchmarks/bench_evonorm_gpu.py "$WORK/evonorm-cl.json" \
    --channels-last
step profile-step 50 "$PY" packages/sciml-norm/benchmarks/profile_evonorm_step.py "$WORK/profile-step.json"
if [ "${PERSISTENT_SWEEP:-1}" = 1 ]; then
    # whatever is left of about 540 s (the run is given 590 s and must still pack its results), at least 40 s
    SWEEP_BUDGET=$((540 - SECONDS > 40 ? 540 - SECONDS : 40))
    resumable sweep-persistent $((SWEEP_BUDGET + 20)) "$PY" packages/sciml-norm/benchmarks/sweep_evonorm_persistent.py \
        "$WORK/sweep-persistent.json" --until $(($(date +%s) + SWEEP_BUDGET))
fi
if [ "${GAUNT:-0}" = 1 ]; then
    step pytest-eq 120 "${PYTEST[@]}" packages/sciml-equivariant/tests --junitxml="$WORK/pytest-eq.xml"
    step gaunt 90 "$PY" packages/sciml-equivariant/benchmarks/bench_gaunt_gpu.py "$WORK/gaunt-cuda.json"
    step sweep-gaunt 60 "$PY" packages/sciml-equivariant/benchmarks/sweep_gaunt_blocks.py "$WORK/sweep-gaunt.json"
fi
if [ "${COMPILED:-0}" = 1 ]; then
    step evonorm-compiled 240 "$PY" packages/sciml-norm/benchmarks/bench_evonorm_gpu.py "$WORK/evonorm-compiled.json" \
        --compile reduce-overhead --dtypes float32
fi
if [ "${SWEEP_EVONORM:-0}" = 1 ]; then
    step sweep-evonorm 70 "$PY" packages/sciml-norm/benchmarks/sweep_evonorm_tiles.py "$WORK/sweep-evonorm.json"
fi
if [ "${OTHERS:-0}" = 1 ]; then
    step pytest-others 120 "${PYTEST[@]}" packages/sciml-optim/tests packages/sciml-ot/tests packages/sciml-special/tests \
        packages/sciml-protocols/tests --junitxml="$WORK/pytest-others.xml"
fi

rm -rf "$SITE"
for f in precompile pytest-norm pytest-norm-split evonorm-nchw evonorm-cl profile-step sweep-persistent pytest-eq gaunt sweep-gaunt evonorm-compiled \
    sweep-evonorm pytest-others; do
    echo "---------------- $f (tail)"
    tail -n 40 "$WORK/$f.log" 2>/dev/null
done
tar -czf "$OUT/results.tar.gz" -C "$OUT" work && rm -rf "$WORK"
