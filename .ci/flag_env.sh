#!/usr/bin/env bash
# Creates (or reuses) the virtualenv that runs FlagEmbedding 1.4.2, the reference BGE-M3 implementation, for the
# parity tests and the encode benchmark. It needs transformers<5, so it cannot live in the main environment.
# Usage: M3K_FLAG_PYTHON="$(bash .ci/flag_env.sh)"   (prints the venv's python path on stdout, logs on stderr)
set -euo pipefail
VENV="${M3K_FLAG_VENV:-$HOME/.cache/m3k-flag-venv}"
PY="$VENV/bin/python"
if [ -x "$PY" ] && "$PY" -c "import FlagEmbedding" >/dev/null 2>&1; then
    echo "$PY"
    exit 0
fi
BASE="${PYTHON:-python3}"
"$BASE" -m venv "$VENV" >&2
"$PY" -m pip install --quiet --upgrade pip >&2
"$PY" -m pip install --quiet torch==2.13.0 FlagEmbedding==1.4.2 "transformers<5" >&2
"$PY" -c "import FlagEmbedding" >&2
echo "$PY"
