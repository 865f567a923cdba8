"""MaxSim on the C++ CPU kernels (csrc/maxsim/maxsim_cpu.cpp)."""

from __future__ import annotations

import torch

from m3kernels import _native
from m3kernels.maxsim.ops import define_backend, kernel_args, new_outputs


def forward(q, q_off, q_len, d, d_off, d_len, pairwise, need_argmax):
    q = q.float().contiguous()
    d = d.contiguous()
    nq, nd = q_off.shape[0], d_off.shape[0]
    scores, argmax = new_outputs(q, nq, nd, pairwise, need_argmax)
    argmax.fill_(-1)  # rows of tokens outside every item stay -1
    _native.C.maxsim_forward_cpu(
        *kernel_args(q, q_off, q_len, d, d_off, d_len, pairwise, q.shape[0], d.shape[0]),
        _native.addr(scores),
        _native.addr(argmax) if need_argmax else 0,
        _native.threads(),
    )
    return scores, argmax


def backward(grad, q, q_off, q_len, d, d_off, d_len, argmax, pairwise, deterministic):
    # Always deterministic: every output row is owned by one thread.
    q = q.float().contiguous()
    d = d.contiguous()
    dq = torch.zeros(q.shape, dtype=torch.float32)
    dd = torch.zeros(d.shape, dtype=torch.float32)
    _native.C.maxsim_backward_cpu(
        *kernel_args(q, q_off, q_len, d, d_off, d_len, pairwise, q.shape[0], d.shape[0]),
        _native.addr(grad),
        _native.addr(argmax),
        _native.addr(dq),
        _native.addr(dd),
        _native.threads(),
    )
    return dq, dd


op, eager_op = define_backend("cpu", forward, backward)
