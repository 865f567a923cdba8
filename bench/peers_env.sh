#!/usr/bin/env bash
# Creates (or reuses) a virtualenv holding the benchmark's optional peers - never dependencies of m3kernels:
# fast-maxsim, maxsim-cpu, colbert-ai (segmented_maxsim.cpp) and FlagEmbedding 1.4.2 (needs transformers<5).
# It sees the main environment's packages (torch, m3kernels) through --system-site-packages.
# Usage: PEERS_PY="$(bash bench/peers_env.sh)"; "$PEERS_PY" -m m3kernels.cli bench
set -euo pipefail
VENV="${M3K_PEERS_VENV:-$HOME/.cache/m3k-peers-venv}"
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c "import fast_maxsim, maxsim_cpu, colbert, FlagEmbedding" >/dev/null 2>&1; then
    echo "$PY"
    exit 0
fi
BASE="${PYTHON:-python3}"
"$BASE" -m venv --system-site-packages "$VENV" >&2
"$PY" -m pip install --quiet "torch==$("$BASE" -c 'import torch; print(torch.__version__.split("+")[0])')" \
    fast-maxsim==0.2.0 maxsim-cpu==0.1.0 colbert-ai==0.2.22 FlagEmbedding==1.4.2 "transformers<5" >&2
echo "$PY"
