"""Microbenchmarks behind `m3k bench`: one module per op (maxsim.py, sparse.py, attention.py), a shared
harness (interleaved timing, peak memory, correctness check before timing), the machine ceilings (roofline.py)
and the report (table, CSV/JSON, plots)."""
