"""m3kernels: fused kernels for BGE-M3 (MaxSim, sparse lexical weights, varlen attention)."""

from m3kernels.maxsim import maxsim, maxsim_varlen

__version__ = "0.1.0"

__all__ = ["maxsim", "maxsim_varlen"]
