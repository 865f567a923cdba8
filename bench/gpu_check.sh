#!/usr/bin/env bash
# One call on a GPU machine (torch + triton + nvcc already installed, no package registry):
#   bash bench/gpu_check.sh OUTDIR
# builds m3kernels with its CUDA kernels, runs the test suite on the GPU (no interpreter: bf16 and large shapes
# included), compute-sanitizer on the CUDA backend tests, and the GPU benchmarks; logs and a short table go to
# OUTDIR. Budget: at most 8 minutes (the step timeouts add up to 470 s); each step has its own timeout so a hang
# cannot eat the rest. Tests run without -x (one failure must not hide the others), GPU-backend files first.
set -uo pipefail
OUT="${1:?usage: bash bench/gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS CMD...: run with a timeout, log to OUTDIR/NAME.log, record the status
    local name="$1" secs="$2"
    shift 2
    local t0=$SECONDS
    timeout "$secs" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/steps.txt"
    return 0
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then  # benchmark peers carried from bench/fetch_gpu_wheels.sh
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
step build 120 env MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e .
grep -E "registers|spill" -r build 2>/dev/null | sort -u >"$OUT/ptxas.txt"
step info 30 python3 -m m3kernels.cli info
step tests 180 python3 -m pytest -q -p no:cacheprovider --timeout=60 tests/test_cuda_backend.py \
    tests/test_triton_maxsim.py tests/test_triton_sparse.py tests/test_triton_attention.py tests/test_maxsim.py \
    tests/test_sparse.py tests/test_attention.py tests/test_torch_library.py tests/test_bad_inputs.py tests/model
if command -v compute-sanitizer >/dev/null; then
    step memcheck 30 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -x \
        tests/test_cuda_backend.py -k "not large"
    step racecheck 30 compute-sanitizer --tool racecheck --error-exitcode 9 python3 -m pytest -q -x \
        tests/test_cuda_backend.py -k "not large"
fi
step bench 110 python3 -m m3kernels.cli bench --quick --out "$OUT/bench"
echo "== steps"; cat "$OUT/steps.txt"
echo "== test summary"; tail -n 3 "$OUT/tests.log"
echo "== bench"; cat "$OUT/bench/table.txt" 2>/dev/null || tail -n 20 "$OUT/bench.log"
