#!/usr/bin/env bash
# Downloads the GPU benchmark peers as wheels into .whl/ (git-ignored), for a GPU machine that has no package
# registry: pass `carry: [".whl"]` to the device call and bench/gpu_check.sh installs them into /tmp/site.
# Both are pure-Python Triton packages; their torch/triton requirements are already on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .whl \
    flash-maxsim==0.3.0 late-interaction-kernels==0.4.5
ls .whl
