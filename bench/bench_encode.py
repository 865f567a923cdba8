"""End-to-end encode benchmark, ours vs FlagEmbedding 1.4.2: see m3kernels/benchmarks/encode.py (--help)."""

import sys

from m3kernels.benchmarks.encode import main

if __name__ == "__main__":
    sys.exit(main())
