"""MaxSim (late interaction): public ops in api.py, torch oracle in reference.py, kernels in cpu.py
(csrc/maxsim/maxsim_cpu.cpp), triton.py and cuda.py (csrc/maxsim/maxsim_cuda.cu)."""

from m3kernels import _backend
from m3kernels.maxsim.api import maxsim, maxsim_varlen

_backend.register("maxsim", "reference", _backend.always)
_backend.register("maxsim", "cpu", _backend.cpu_kernels_unavailable, "m3kernels.maxsim.cpu")
_backend.register("maxsim", "triton", _backend.triton_unavailable, "m3kernels.maxsim.triton")
_backend.register("maxsim", "cuda", _backend.cuda_kernels_unavailable, "m3kernels.maxsim.cuda")

__all__ = ["maxsim", "maxsim_varlen"]
