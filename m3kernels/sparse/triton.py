"""The sparse head on Triton kernels: fused token weights + GPU max-pool by id, and batched lexical scores.

pool: token weights w_t = relu(h_t . w + b) for real, non-skipped tokens with w_t > 0 (0 marks a dropped token; a
NaN weight is kept so that NaN input is detectable), max-pooled by (text, id). The pool of a text sorts the kept
tokens' keys (id << ROW_BITS | position) in registers (tl.sort) in one program, a segmented scan keeps each id
run's max weight (first position on ties, NaN wins), and run heads go to their ranked slot. That needs every text
to fit one block (<= _POOL_MAX_TEXT tokens) and ids below 2^(63 - ROW_BITS) - 1:
- with both bounds known to the caller (max_len, id_bound) and a sort block up to _ONE_KERNEL_MAX_BLOCK, one kernel
  does it all (_weights_pool_kernel): program (text, chunk) reads one chunk of the text's rows once and stores their
  weights, and the program that finishes a text's last chunk (a per-text counter) pools that text, while the other
  programs are still reading;
- otherwise the weights come first (_token_weights_kernel, rows outside every text dropped by segment id), one
  device sync reads the bounds unless both are known, and one program per text pools (_pool_texts_kernel);
- where the bounds do not fit (and during CUDA graph capture without both bounds, where no sync is allowed) the
  pool is a stable sort by (text, id, -w, row) in torch ops: the first entry of each (text, id) run is the max,
  its rank among the text's runs gives its slot.
No host loop over texts, no [B, L, vocab] tensor. The output is the compact per-text layout of
csrc/sparse/sparse.h.

scores: one Triton program per (query row, block of BLOCK_N doc rows) (or per block of pairs when pairwise):
every query entry is looked up in every doc row of the block by a vectorised binary search over the doc's
ascending ids, accumulating w_q * w_d in fp32 in a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from m3kernels import _triton_compat
from m3kernels.maxsim.triton import segment_ids
from m3kernels.sparse.ops import define_backend, new_pool_outputs, new_scores

_triton_compat.patch_interpreter()

_POOL_BLOCK_T = 16
_POOL_MAX_BLOCK_H = 128  # the H200 sweep of the one-kernel pool (2026-11-28): 1.09x 256
_POOL_WARPS = 4
_POOL_MAX_TEXT = 2048  # longest text the one-program-per-text pool sorts in registers (compile time grows fast)
_POOL_SORT_WARPS = {512: 4, _POOL_MAX_TEXT: 8}  # warps of the per-text pool: the first entry whose block >= BLOCK
# Largest sort block of the one-kernel pool. Every program of that kernel, the readers too, gets the sort's warps,
# registers and shared memory: at block 2048 (8 warps, 99 registers, 16 KiB on sm_90) that would leave ~2 blocks per
# SM for the read, untimed; above this block the weights and the pool run as two kernels.
_ONE_KERNEL_MAX_BLOCK = 512
_INT64_MAX = tl.constexpr(2**63 - 1)  # the sort key of a dropped token (sorts last)
_SCORES_BLOCK_E = 16
_SCORES_BLOCK_N = 32


@triton.jit
def _weights_of_rows(h_ptr, ids_ptr, w_ptr, bias_ptr, skip_ptr, n_skip, rows, ok, H,
                     BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    """fp32 [BLOCK_T]: h_r . w + b for the rows r (int64) where ok, ids_r is not skipped and the value is > 0 or
    NaN, else 0 (so relu(h . w + b) on kept tokens, and 0 marks a dropped one)."""
    rh = tl.arange(0, BLOCK_H)
    acc = tl.zeros([BLOCK_T], tl.float32)
    for h0 in range(0, H, BLOCK_H):
        h_ok = h0 + rh < H
        h = tl.load(h_ptr + rows[:, None] * H + h0 + rh[None, :], mask=ok[:, None] & h_ok[None, :], other=0.0)
        w = tl.load(w_ptr + h0 + rh, mask=h_ok, other=0.0)
        acc += tl.sum(h.to(tl.float32) * w[None, :], axis=1)
    val = acc + tl.load(bias_ptr)
    tok = tl.load(ids_ptr + rows, mask=ok, other=-1)
    # NaN is kept (as NaN) so that NaN inputs surface in the output.
    keep = ok & ((val > 0.0) | (val != val))
    for s in range(n_skip):
        keep = keep & (tok != tl.load(skip_ptr + s))
    return tl.where(keep, val, 0.0)


@triton.jit
def _token_weights_kernel(
    h_ptr, ids_ptr, seg_ptr, w_ptr, bias_ptr, skip_ptr, n_skip, out_ptr, T, H,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """out_t = _weights_of_rows for rows t in a text (seg_t >= 0), 0 for rows outside every text."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    ok = rows < T
    ok = ok & (tl.load(seg_ptr + rows, mask=ok, other=-1) >= 0)
    val = _weights_of_rows(h_ptr, ids_ptr, w_ptr, bias_ptr, skip_ptr, n_skip, rows.to(tl.int64), ok, H,
                           BLOCK_T, BLOCK_H)
    tl.store(out_ptr + rows, val, mask=rows < T)


def _token_weights(hidden: Tensor, ids: Tensor, seg: Tensor, weight: Tensor, bias: Tensor, skip: Tensor):
    """fp32 [T]: _token_weights_kernel's weights (0 for rows outside every text: seg < 0)."""
    t, h = hidden.shape
    out = torch.empty(t, dtype=torch.float32, device=hidden.device)
    if t == 0:
        return out
    with _triton_compat.device_context(hidden):
        _token_weights_kernel[(triton.cdiv(t, _POOL_BLOCK_T),)](
            hidden, ids, seg, weight, bias, skip, skip.numel(), out, t, h,
            BLOCK_T=_POOL_BLOCK_T, BLOCK_H=_block_h(h), num_warps=_POOL_WARPS,
        )
    return out


def _block_h(h: int) -> int:
    """BLOCK_H of the token-weights read for hidden size h: the power of two >= h, within [16, _POOL_MAX_BLOCK_H]."""
    return max(16, min(_POOL_MAX_BLOCK_H, triton.next_power_of_2(h)))


@triton.jit
def _run_max(first_a, w_a, at_a, first_b, w_b, at_b):
    """Segmented running max for tl.associative_scan: b starts a run, or b beats a (strictly; NaN wins)."""
    take_b = first_b | (w_b > w_a) | ((w_b != w_b) & (w_a == w_a))
    return first_a | first_b, tl.where(take_b, w_b, w_a), tl.where(take_b, at_b, at_a)


@triton.jit
def _pool_text(
    ids_ptr, w_ptr, keys_ptr, out_ids_ptr, out_vals_ptr, out_src_ptr, counts_ptr, b, start, n,
    ROW_BITS: tl.constexpr, BLOCK: tl.constexpr, W_CACHE: tl.constexpr,
):
    """Pools text b (rows start .. start + n, n <= BLOCK = 2^ROW_BITS) from its token weights w: keys of kept
    tokens (w != 0) sorted ascending, so each id's tokens form a run in position order; a run's max weight (first
    position on ties) goes to slot start + (run index). Slots past the text's count get id -1, value 0, src -1.
    keys_ptr [T] is scratch: the sorted keys pass through it so that each position can read its neighbours.
    W_CACHE: the cache modifier of the weight loads (".cg", L2 only, where other programs of the same launch wrote
    them)."""
    r = tl.arange(0, BLOCK)
    ok = r < n
    w = tl.load(w_ptr + start + r, mask=ok, other=0.0, cache_modifier=W_CACHE)
    tok = tl.load(ids_ptr + start + r, mask=ok, other=0)
    key = tl.where(ok & (w != 0.0), (tok << ROW_BITS) | r.to(tl.int64), _INT64_MAX)
    key = tl.sort(key)
    tl.store(keys_ptr + start + r, key, mask=ok)
    tl.debug_barrier()
    prev = tl.load(keys_ptr + start + r - 1, mask=ok & (r > 0), other=-1)
    nxt = tl.load(keys_ptr + start + r + 1, mask=r + 1 < n, other=_INT64_MAX)
    valid = key != _INT64_MAX
    run_id = key >> ROW_BITS
    first = valid & ((r == 0) | ((prev >> ROW_BITS) != run_id))
    last = valid & ((nxt == _INT64_MAX) | ((nxt >> ROW_BITS) != run_id))
    at = (key & (BLOCK - 1)).to(tl.int32)
    w_sorted = tl.load(w_ptr + start + at, mask=valid, other=0.0, cache_modifier=W_CACHE)
    _, best, best_at = tl.associative_scan((first, w_sorted, at), 0, _run_max)
    rank = tl.cumsum(first.to(tl.int32), 0) - 1
    count = tl.sum(first.to(tl.int32), 0)
    tl.store(out_ids_ptr + start + rank, run_id, mask=last)
    tl.store(out_vals_ptr + start + rank, best, mask=last)
    tl.store(out_src_ptr + start + rank, start + best_at, mask=last)
    rest = ok & (r >= count)
    tl.store(out_ids_ptr + start + r, tl.full([BLOCK], -1, tl.int64), mask=rest)
    tl.store(out_vals_ptr + start + r, tl.zeros([BLOCK], tl.float32), mask=rest)
    tl.store(out_src_ptr + start + r, tl.full([BLOCK], -1, tl.int64), mask=rest)
    tl.store(counts_ptr + b, count.to(tl.int64))


@triton.jit
def _pool_texts_kernel(
    ids_ptr, w_ptr, off_ptr, len_ptr, keys_ptr, out_ids_ptr, out_vals_ptr, out_src_ptr, counts_ptr,
    ROW_BITS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program b pools text b (rows off[b] .. off[b] + len[b]; rows past BLOCK, which only a length bound below
    the text's length can leave, are dropped rather than read unsorted) from the weights w."""
    b = tl.program_id(0)
    start = tl.load(off_ptr + b).to(tl.int64)
    n = tl.minimum(tl.load(len_ptr + b), BLOCK)
    _pool_text(ids_ptr, w_ptr, keys_ptr, out_ids_ptr, out_vals_ptr, out_src_ptr, counts_ptr, b, start, n,
               ROW_BITS, BLOCK, "")


@triton.jit
def _weights_pool_kernel(
    h_ptr, ids_ptr, weight_ptr, bias_ptr, skip_ptr, n_skip, off_ptr, len_ptr, done_ptr, w_ptr, keys_ptr,
    out_ids_ptr, out_vals_ptr, out_src_ptr, counts_ptr, H, CHUNKS,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, ROW_BITS: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program (b, c) = divmod(pid, CHUNKS) stores the token weights (_weights_of_rows) of rows c * BLOCK_T ..
    (c + 1) * BLOCK_T of text b (rows off[b] .. off[b] + min(len[b], BLOCK)) into w_ptr, then counts its chunk
    done (done_ptr [B], zeroed); the program that counts the text's last chunk pools it (_pool_text). An empty
    text has one chunk of no rows, so that its count is written too. Chunks run fastest in pid: the programs of a
    text run close together, and its pool overlaps the reading of the texts after it."""
    pid = tl.program_id(0)
    b = pid // CHUNKS
    c = pid % CHUNKS
    start = tl.load(off_ptr + b).to(tl.int64)
    n = tl.minimum(tl.load(len_ptr + b), BLOCK)
    chunks = tl.maximum(tl.cdiv(n, BLOCK_T), 1)
    if c < chunks:
        r = c * BLOCK_T + tl.arange(0, BLOCK_T)
        ok = r < n
        rows = start + r
        val = _weights_of_rows(h_ptr, ids_ptr, weight_ptr, bias_ptr, skip_ptr, n_skip, rows, ok, H, BLOCK_T, BLOCK_H)
        tl.store(w_ptr + rows, val, mask=ok)
        # Every thread's stores come before the count (barrier), the count releases them to the pooling program
        # and acquires the other chunks' stores for it.
        tl.debug_barrier()
        if tl.atomic_add(done_ptr + b, 1, sem="acq_rel", scope="gpu") == chunks - 1:
            _pool_text(ids_ptr, w_ptr, keys_ptr, out_ids_ptr, out_vals_ptr, out_src_ptr, counts_ptr, b, start, n,
                       ROW_BITS, BLOCK, ".cg")


def _bounds_known(max_len: int, id_bound: int) -> bool:
    """Whether the caller's bounds pick the sort block without reading the device: both given, max_len within one
    block (a looser one may hide a text that fits)."""
    return 0 < max_len <= _POOL_MAX_TEXT and id_bound > 0


def _pool_block(w: Tensor | None, ids: Tensor, lens: Tensor, max_len: int, id_bound: int) -> int | None:
    """The sort block of the one-program-per-text pool, or None when a text is too long or a kept id does not fit
    the packed key. max_len / id_bound (> 0) are the caller's bounds on the text lengths / ids (kept ids are then
    taken as >= 0: the API checks that after the launch); the unknown ones, and a max_len above _POOL_MAX_TEXT,
    are read from the device (one sync; none during CUDA graph capture, which then gets None), from the token
    weights w (None when nothing is read)."""
    if max_len > _POOL_MAX_TEXT:  # a loose bound: the true longest text may still fit a block
        max_len = 0
    longest, lo, hi = max_len, 0, id_bound - 1
    if not _bounds_known(max_len, id_bound):
        if w.is_cuda and torch.cuda.is_current_stream_capturing():
            return None
        kept = torch.where(w != 0, ids, 0)
        read = torch.stack([lens.max().to(torch.int64), *torch.aminmax(kept)]).tolist()
        longest = max_len if max_len > 0 else read[0]
        if id_bound <= 0:
            lo, hi = read[1], read[2]
    if longest > _POOL_MAX_TEXT or lo < 0:
        return None
    block = max(16, triton.next_power_of_2(longest))
    row_bits = block.bit_length() - 1
    # The largest key, (hi << row_bits) | (block - 1), must stay below _INT64_MAX, the key of a dropped token.
    return block if hi < 2 ** (63 - row_bits) - 1 else None


def _sort_warps_key(block: int) -> int:
    """The _POOL_SORT_WARPS entry of a sort block: the first whose block is at least as large."""
    return next(top for top in sorted(_POOL_SORT_WARPS) if block <= top)


def _pool_launch(x: Tensor, off: Tensor, block: int):
    """For the per-text pool of x's T rows in B = len(off) texts with sort block `block`: its outputs (every slot
    unused, as rows outside every text belong to no program and keep that), keys scratch [T] and launch options."""
    keys = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    warps = _POOL_SORT_WARPS[_sort_warps_key(block)]
    options = {"ROW_BITS": block.bit_length() - 1, "BLOCK": block, "num_warps": warps}
    return new_pool_outputs(x, off.shape[0]), keys, options


def _pool_in_programs(w: Tensor, ids: Tensor, off: Tensor, lens: Tensor, block: int):
    """The per-text pool of the token weights w [T] (one program per text)."""
    outs, keys, options = _pool_launch(w, off, block)
    with _triton_compat.device_context(w):
        _pool_texts_kernel[(off.shape[0],)](ids, w, off, lens, keys, *outs, **options)
    return outs


def _one_kernel_grid(b: int, block: int) -> int | None:
    """Programs of the one-kernel pool for b texts and sort block `block` (B * block / BLOCK_T), or None where it
    does not run: a block above _ONE_KERNEL_MAX_BLOCK, or a grid over one launch's 2^31 - 1 programs."""
    programs = b * _chunks_per_text(block)
    return programs if block <= _ONE_KERNEL_MAX_BLOCK and programs < 2**31 else None


def _chunks_per_text(block: int) -> int:
    """Chunks of _POOL_BLOCK_T rows per text in the one-kernel pool (the text's rows are at most the sort block)."""
    return triton.cdiv(block, _POOL_BLOCK_T)


def _weights_and_pool(hidden: Tensor, ids: Tensor, off: Tensor, lens: Tensor, weight: Tensor, bias: Tensor,
                      skip: Tensor, block: int):
    """Token weights and per-text pool in one launch (_weights_pool_kernel): B * (block / BLOCK_T) programs."""
    t, h = hidden.shape
    outs, keys, options = _pool_launch(hidden, off, block)
    w = torch.empty(t, dtype=torch.float32, device=hidden.device)
    done = torch.zeros(off.shape[0], dtype=torch.int32, device=hidden.device)
    with _triton_compat.device_context(hidden):
        _weights_pool_kernel[(_one_kernel_grid(off.shape[0], block),)](
            hidden, ids, weight, bias, skip, skip.numel(), off, lens, done, w, keys, *outs, h, _chunks_per_text(block),
            BLOCK_T=_POOL_BLOCK_T, BLOCK_H=_block_h(h), **options,
        )
    return outs


def pool(
    hidden: Tensor, ids: Tensor, off: Tensor, lens: Tensor, weight: Tensor, bias: Tensor, skip: Tensor,
    max_len: int = 0, id_bound: int = 0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """relu(h . w + b) max-pooled by id per text (text b = rows off[b] .. off[b] + lens[b] of hidden [T, H]).
    max_len, id_bound: the caller's bounds on the text lengths and ids, 0 if unknown (see _pool_block).

    Returns out_ids int64 [T], out_vals fp32 [T], out_src int64 [T], counts int64 [B]: text b's entries in
    slots off[b] .. off[b] + counts[b], ids ascending, out_src the first row reaching the max; other slots
    hold id -1, value 0, src -1.
    """
    hidden, ids = hidden.contiguous(), ids.contiguous()
    off, lens = off.contiguous(), lens.contiguous()
    t, b = hidden.shape[0], off.shape[0]
    dev = hidden.device
    if b == 0:  # no texts: before[owner] below would index an empty tensor (a device assert on CUDA)
        none = torch.full((t,), -1, dtype=torch.int64, device=dev)
        return none, torch.zeros(t, dtype=torch.float32, device=dev), none.clone(), torch.zeros_like(none[:0])
    weight, bias, skip = weight.float().contiguous(), bias.float(), skip.contiguous()
    # Bounds the caller knows pick the sort block without reading anything: then one launch can do it all.
    known = _bounds_known(max_len, id_bound)
    block = _pool_block(None, ids, lens, max_len, id_bound) if known and t > 0 else None
    if block is not None and _one_kernel_grid(b, block) is not None:
        return _weights_and_pool(hidden, ids, off, lens, weight, bias, skip, block)
    seg = segment_ids(off, lens, t)
    w = _token_weights(hidden, ids, seg, weight, bias, skip)
    if block is None and not known and t > 0:
        block = _pool_block(w, ids, lens, max_len, id_bound)
    if block is not None:
        return _pool_in_programs(w, ids, off, lens, block)
    keep = w != 0  # positive or NaN
    text = torch.where(keep, seg.long(), b)  # dropped tokens sort after every text
    order = torch.sort(w, descending=True, stable=True).indices
    order = order[torch.sort(ids[order], stable=True).indices]
    order = order[torch.sort(text[order], stable=True).indices]
    s_text, s_ids = text[order], ids[order]
    new_run = torch.ones(t, dtype=torch.bool, device=dev)
    new_run[1:] = (s_text[1:] != s_text[:-1]) | (s_ids[1:] != s_ids[:-1])
    head = new_run & keep[order]
    counts = torch.zeros(b + 1, dtype=torch.int64, device=dev).index_add_(0, s_text, head.long())[:b]
    before = torch.cumsum(counts, 0) - counts  # heads in earlier texts
    owner = s_text.clamp(max=max(b - 1, 0))
    rank = torch.cumsum(head.long(), 0) - 1 - before[owner]
    # Heads go to their slot; every other entry to its own spare slot past T (unique indices: deterministic).
    slot = torch.where(head, off.long()[owner] + rank, t + torch.arange(t, device=dev))

    def place(values: Tensor, fill: float) -> Tensor:
        return torch.full((2 * t,), fill, dtype=values.dtype, device=dev).scatter_(0, slot, values)[:t]

    return place(s_ids, -1), place(w[order], 0.0), place(order, -1), counts


@triton.jit
def _lexical_scores_kernel(
    q_indptr,
    q_ids,
    q_vals,
    d_indptr,
    d_ids,
    d_vals,
    out_ptr,
    n_q,
    n_rows,
    PAIRWISE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Lane n of program (i, block) scores query row i (row n if PAIRWISE) against doc row n:
    sum over the query's entries e of q_vals[e] * d_vals[k] where d_ids[k] == q_ids[e] (binary search).
    One flat grid axis (axis 1 would cap the doc blocks at 65535, i.e. ~2M docs): program p is
    (i, block) = (p % n_q, p // n_q), queries fastest so that a block of docs is re-read from L2; p = block
    if PAIRWISE."""
    pid = tl.program_id(0)
    qi = 0 if PAIRWISE else pid % n_q
    blk = pid if PAIRWISE else pid // n_q
    rn = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = rn < n_rows
    d_lo = tl.load(d_indptr + rn, mask=n_ok, other=0)
    d_hi = tl.load(d_indptr + rn + 1, mask=n_ok, other=0)
    q_row = rn if PAIRWISE else qi + tl.zeros([BLOCK_N], tl.int32)
    q_lo = tl.load(q_indptr + q_row, mask=n_ok, other=0)
    q_hi = tl.load(q_indptr + q_row + 1, mask=n_ok, other=0)
    q_n = q_hi - q_lo
    # Largest power of two <= the longest doc row: the first step of a branch-free lower-bound search.
    d_max = tl.max(d_hi - d_lo, axis=0)
    top = 1
    while top * 2 <= d_max:
        top *= 2
    re = tl.arange(0, BLOCK_E)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for e0 in range(0, tl.max(q_n, axis=0), BLOCK_E):
        e_ok = ((e0 + re)[:, None] < q_n[None, :]) & n_ok[None, :]
        at = q_lo[None, :] + e0 + re[:, None]
        key = tl.load(q_ids + at, mask=e_ok, other=-1)
        qv = tl.load(q_vals + at, mask=e_ok, other=0.0)
        pos = d_lo[None, :] + tl.zeros([BLOCK_E, BLOCK_N], tl.int64)
        step = top
        while step > 0:  # pos ends at the first doc entry with id >= key
            probe = pos + step - 1
            inside = e_ok & (probe < d_hi[None, :])
            below = tl.load(d_ids + probe, mask=inside, other=0) < key
            pos = tl.where(inside & below, pos + step, pos)
            step = step // 2
        found = e_ok & (pos < d_hi[None, :])
        found = found & (tl.load(d_ids + pos, mask=found, other=-1) == key)
        dv = tl.load(d_vals + pos, mask=found, other=0.0)
        acc += tl.sum(tl.where(found, qv * dv, 0.0), axis=0)
    out_at = rn if PAIRWISE else qi.to(tl.int64) * n_rows + rn
    tl.store(out_ptr + out_at, acc, mask=n_ok)


def scores(
    q_indptr: Tensor,
    q_ids: Tensor,
    q_vals: Tensor,
    d_indptr: Tensor,
    d_ids: Tensor,
    d_vals: Tensor,
    pairwise: bool,
) -> Tensor:
    """s(i, j) = sum over ids in both rows of q_vals * d_vals: fp32 [Nq, Nd] (or [N] pairwise).

    CSR inputs: indptr int64 [N+1], ids int64 (ascending per row), vals fp32."""
    q_indptr, q_ids, q_vals = q_indptr.contiguous(), q_ids.contiguous(), q_vals.contiguous()
    d_indptr, d_ids, d_vals = d_indptr.contiguous(), d_ids.contiguous(), d_vals.contiguous()
    nq, nd = q_indptr.shape[0] - 1, d_indptr.shape[0] - 1
    out = new_scores(q_vals, nq, nd, pairwise)
    grid = ((1 if pairwise else nq) * triton.cdiv(nd, _SCORES_BLOCK_N),)
    if grid[0] >= 2**31:
        raise ValueError(f"{nq} queries x {nd} docs exceed the 2^31 - 1 programs of one launch; split the docs")
    with _triton_compat.device_context(q_vals):
        _lexical_scores_kernel[grid](
            q_indptr,
            q_ids,
            q_vals,
            d_indptr,
            d_ids,
            d_vals,
            out,
            max(nq, 1),
            nd,
            PAIRWISE=pairwise,
            BLOCK_E=_SCORES_BLOCK_E,
            BLOCK_N=_SCORES_BLOCK_N,
        )
    return out


pool_op, pool_eager_op, scores_op = define_backend("triton", pool, scores)
