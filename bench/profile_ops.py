"""Host vs device time of one call per op: see m3kernels/benchmarks/profile.py (--help)."""

import sys

from m3kernels.benchmarks.profile import main

if __name__ == "__main__":
    sys.exit(main())
