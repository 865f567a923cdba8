"""MaxSim (late interaction): public ops in api.py, torch oracle in reference.py, kernels in cpu.py
(csrc/maxsim/maxsim_cpu.cpp), triton.py and cuda.py (csrc/maxsim/maxsim_cuda.cu)."""

from m3kernels import _backend
from m3kernels.maxsim import cpu  # noqa: F401  (registers the "cpu" backend)
from m3kernels.maxsim.api import maxsim, maxsim_varlen

_backend.register("maxsim", "reference", _backend.always)
_backend.register("maxsim", "triton", _backend.triton_unavailable)
_backend.register("maxsim", "cuda", _backend.cuda_kernels_unavailable)

__all__ = ["maxsim", "maxsim_varlen"]
