#!/usr/bin/env bash
# Compile-only CI check of the CUDA code (no GPU, no CUDA build of torch needed):
#   1. configures CMake with -DM3K_CUDA_COMPILE_ONLY=ON and builds every csrc/*/*_cuda.cu for M3K_CUDA_ARCHS
#      (default "80;90") with -Xptxas=-v -Werror=all-warnings into a temporary build directory;
#   2. compiles python/bind_cuda.cpp with g++ -Wall -Wextra -Werror against the CUDA, pybind11 and Python
#      headers (no torch, nothing linked).
# Writes ptxas' register / spill report per kernel (demangled) to $1 (default build/ptxas.txt). Exits
# non-zero on any compile error or warning.
# Usage: bash .ci/compile_cuda.sh [report-file]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPORT="${1:-$ROOT/build/ptxas.txt}"
ARCHS="${M3K_CUDA_ARCHS:-80;90}"
NVCC="${CUDACXX:-$(command -v nvcc || true)}"
if [ -z "$NVCC" ]; then
    echo "compile_cuda: nvcc not found (set CUDACXX or put nvcc on PATH)" >&2
    exit 2
fi
BUILD="$(mktemp -d "${TMPDIR:-/tmp}/m3k-cuda-compile.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT
LOG="$BUILD/build.log"

echo "compile_cuda: nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), archs $ARCHS, build dir $BUILD" >&2
nice cmake -S "$ROOT" -B "$BUILD" -G Ninja -DM3K_CUDA_COMPILE_ONLY=ON -DM3K_CUDA_ARCHS="$ARCHS" \
    -DCMAKE_CUDA_COMPILER="$NVCC" >"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log" >&2; exit 1; }
if ! nice cmake --build "$BUILD" -j2 -- -v >"$LOG" 2>&1; then
    grep -v -E '^ptxas info|bytes stack frame' "$LOG" >&2 || true
    echo "compile_cuda: CUDA compile FAILED" >&2
    exit 1
fi
if grep -E -i '(^|[^-])warning' "$LOG" | grep -v -- '-Werror' >&2; then
    echo "compile_cuda: warnings in the CUDA compile" >&2
    exit 1
fi

# CUDA include dirs as CMake found them (nvcc on PATH may be a wrapper script).
CUDA_INCS="$(sed -n 's/^set(CMAKE_CUDA_TOOLKIT_INCLUDE_DIRECTORIES "\(.*\)")$/\1/p' \
    "$BUILD"/CMakeFiles/*/CMakeCUDACompiler.cmake | tr ';' '\n' | sed 's/^/-I/' | tr '\n' ' ')"
PY="${PYTHON:-python3}"
PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
PB_INC="$("$PY" -c 'import pybind11; print(pybind11.get_include())')"
nice "${CXX:-g++}" -std=c++17 -O2 -Wall -Wextra -Werror -fPIC -I"$ROOT/csrc" -I"$ROOT/python" \
    $CUDA_INCS -I"$PB_INC" -I"$PY_INC" -c "$ROOT/python/bind_cuda.cpp" -o "$BUILD/bind_cuda.o"

mkdir -p "$(dirname "$REPORT")"
# "Compiling entry function 'X' for 'sm_NN'" is followed by its "Used N registers" and spill lines.
awk '
    /Compiling entry function/ { match($0, /\047[^\047]+\047 for \047sm_[0-9a-z]+\047/); fn = substr($0, RSTART, RLENGTH) }
    /bytes spill stores/ { spill = $0; sub(/^[ \t]+/, "", spill) }
    /Used [0-9]+ registers/ { sub(/.*Used /, "Used "); print fn ": " $0 "; " spill }
' "$LOG" | sed "s/'//g" | while IFS= read -r line; do
    name="${line%% for sm_*}"
    echo "$(echo "$name" | c++filt) for sm_${line#* for sm_}"
done | sed -E 's/m3k::\(anonymous namespace\):://g' | sort -u >"$REPORT"
echo "compile_cuda: OK ($(wc -l <"$REPORT") kernel entries); ptxas report in $REPORT" >&2
