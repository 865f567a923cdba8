#!/usr/bin/env bash
# Downloads what bench/gpu_check.sh needs on a GPU machine that has no package registry, as wheels into .whl/
# (git-ignored); pass `carry: [".whl"]` to the device call.
#   .whl/*.whl       benchmark peers (pure-Python Triton packages; their torch/triton are on the GPU machine),
#                    installed into the main environment's path.
#   .whl/flag/*.whl  FlagEmbedding 1.4.2 and the versions it needs beside the GPU image's newer ones
#                    (transformers<5 and its huggingface-hub / tokenizers, datasets, peft): an overlay that only
#                    the FlagEmbedding reference process sees (the encode benchmark's baseline).
# PYTHON_VERSION (default 3.12, the GPU machine's) picks the interpreter the wheels are for.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV="${PYTHON_VERSION:-3.12}"
fetch() {  # fetch DIR SPEC...
    local dir="$1"
    shift
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dir" "$@" 2> >(grep -v "is ignored" >&2)
}
fetch .whl flash-maxsim==0.3.0 late-interaction-kernels==0.4.5
fetch .whl/flag FlagEmbedding==1.4.2 transformers==4.57.6 huggingface-hub==0.36.2 tokenizers==0.22.2 \
    datasets==5.0.1 dill==0.4.1 multiprocess==0.70.19 peft==0.21.2
du -sh .whl
