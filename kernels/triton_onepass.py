"""One-pass InfoNCE on the GPU: cuBLAS for the three products, one fused Triton kernel per row chunk.

This is the path ``impl="triton"`` (``TritonInfoNCE`` in ``triton_infonce.py``) takes for the training
case: the row-direction loss (not symmetric) with a gradient wanted. A chunk of query rows sees all N
candidates, so its softmax, and so its score gradient dS, is final as soon as its scores are. Per chunk
of ``rows`` queries (``OnePassConfig``, passed in as ``InfoNCEConfig.onepass``):

1. ``S = q_chunk @ c^T`` by cuBLAS into a reused [rows, N] buffer (input dtype, fp32 accumulation,
   exactly the scores an eager ``q @ c.T`` produces; or fp32 scores with ``fp32_scores``);
2. ``_onepass_row_kernel`` reads each row of S twice: an online log-sum-exp over the row's
   candidates (1/T applied, duplicates of the positive left out, the extra logits' log-sum-exp merged
   in), then ``dS = softmax - onehot(label)`` written over S in place (or into an input-dtype buffer
   when the scores are fp32), plus per-row ``sum_j dS_ij * logit_ij`` for the temperature gradient;
3. ``grad_q[chunk] = alpha * dS @ c`` and ``grad_c += alpha * dS^T @ q_chunk`` by cuBLAS with
   ``alpha = 1 / (B T)``, accumulated in fp32 inside each product and written in the input dtype
   (or into an fp32 master for ``grad_c`` with ``fp32_grad_accumulator``).

3 products of B x N x D in all (6 BND FLOPs for the whole step, like eager), and besides one chunk
buffer nothing larger than the gradients themselves is ever allocated. The gradients, computed for a
loss gradient of 1, are held on the autograd node and scaled in place by the incoming gradient in
backward (the loss is a scalar); a second backward through the same graph raises. The forward reads
the temperature on the host (``alpha``) and checks the candidate keys for duplicates (``torch.unique``):
two host synchronisations per call, like the label range check in ``check_inputs``.

Under ``TRITON_INTERPRET=1`` (set before triton is imported) the row kernel runs on CPU tensors and
the products are PyTorch's CPU matmuls.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import OnePassConfig
from .matmul import addmm_fp32_, matmul_fp32_into

# Bytes per score that the eager reference allocates beyond its inputs in a full bf16 step
# (13313 MiB at B = N = 32768 on an H100, benchmarks/results/h100_bench.log); the chunk budget is a
# fraction of B * N times this.
EAGER_BYTES_PER_SCORE = 13


def chunk_rows(cfg: OnePassConfig, num_queries: int, num_candidates: int, bytes_per_score: int) -> int:
    """Rows per chunk for ``bytes_per_score`` bytes of chunk buffers per score (see OnePassConfig)."""
    budget = min(
        cfg.chunk_fraction * EAGER_BYTES_PER_SCORE * num_queries * num_candidates, cfg.max_chunk_bytes
    )
    rows = max(cfg.min_chunk_rows, int(budget // (num_candidates * bytes_per_score)))
    if rows >= 256:
        rows = rows // 128 * 128
    return max(1, min(rows, (num_queries + 1) // 2))


@triton.jit
def _row_tile(
    s_rows, ckey_ptr, n0, N, row_ok, label, qk, inv_t, HAS_DUPLICATES: tl.constexpr, BLOCK_N: tl.constexpr
):
    """Columns [n0, n0 + BLOCK_N) of the block's rows: the column ids, which entries exist, which is
    each row's positive, which are kept (not a duplicate of the positive), and the logits (fp32, 1/T)."""
    cols = n0 + tl.arange(0, BLOCK_N)
    inside = row_ok[:, None] & (cols < N)[None, :]
    is_pos = cols[None, :] == label[:, None]
    keep = inside
    if HAS_DUPLICATES:
        ck = tl.load(ckey_ptr + cols, mask=cols < N, other=0)
        keep = inside & ((qk[:, None] != ck[None, :]) | is_pos)
    logits = tl.load(s_rows + cols[None, :], mask=inside, other=0.0).to(tl.float32) * inv_t
    return cols, inside, is_pos, keep, logits


@triton.jit
def _onepass_row_kernel(
    s_ptr,
    ds_ptr,
    labels_ptr,
    qkey_ptr,
    ckey_ptr,
    inv_t_ptr,
    extra_lse_ptr,
    lse_ptr,
    pos_ptr,
    tdot_ptr,
    row_start,
    num_rows,
    N,
    stride_s,
    stride_ds,
    HAS_DUPLICATES: tl.constexpr,
    HAS_EXTRA: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Rows [row_start, row_start + num_rows) of the chunk S: log-sum-exp, positive logit, dS, T term.

    ``s_ptr`` points at the chunk's first row; ``ds_ptr`` may be the same memory (each element is read
    before it is overwritten, by the same program). Row i keeps column j unless j is a duplicate of
    its positive: ``qkey[i] == ckey[j]`` and ``j != labels[i]`` (only when HAS_DUPLICATES).
    """
    pid = tl.program_id(0)
    local = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = local < num_rows
    rows = row_start + local
    label = tl.load(labels_ptr + rows, mask=row_ok, other=0)
    inv_t = tl.load(inv_t_ptr)
    s_rows = s_ptr + local.to(tl.int64)[:, None] * stride_s
    ds_rows = ds_ptr + local.to(tl.int64)[:, None] * stride_ds
    qk = tl.load(qkey_ptr + rows, mask=row_ok, other=0) if HAS_DUPLICATES else label

    # Pass 1: online log-sum-exp over the kept columns, and the positive logit.
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    pos = tl.zeros((BLOCK_M,), tl.float32)
    for n0 in range(0, N, BLOCK_N):
        cols, inside, is_pos, keep, logits = _row_tile(
            s_rows, ckey_ptr, n0, N, row_ok, label, qk, inv_t, HAS_DUPLICATES, BLOCK_N
        )
        pos += tl.sum(tl.where(is_pos & inside, logits, 0.0), axis=1)
        x = tl.where(keep, logits, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(x, axis=1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp(m_i - m_ref) + tl.sum(tl.exp(x - m_ref[:, None]), axis=1)
        m_i = m_new
    # Every valid row keeps its positive, so l_i >= 1 there; padding rows get lse 0.
    lse = tl.where(row_ok, m_i + tl.log(tl.where(row_ok, l_i, 1.0)), 0.0)
    if HAS_EXTRA:
        extra = tl.load(extra_lse_ptr + rows, mask=row_ok, other=float("-inf"))
        top = tl.maximum(lse, extra)
        lse = top + tl.log(tl.exp(lse - top) + tl.exp(extra - top))
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    tl.store(pos_ptr + rows, pos, mask=row_ok)

    # Pass 2: dS = softmax - onehot(label) over the kept columns (0 at duplicates), in place.
    tdot = tl.zeros((BLOCK_M,), tl.float32)
    for n0 in range(0, N, BLOCK_N):
        cols, inside, is_pos, keep, logits = _row_tile(
            s_rows, ckey_ptr, n0, N, row_ok, label, qk, inv_t, HAS_DUPLICATES, BLOCK_N
        )
        w = tl.where(keep, tl.exp(logits - lse[:, None]), 0.0)
        w = tl.where(is_pos & inside, w - 1.0, w)
        tdot += tl.sum(w * logits, axis=1)
        tl.store(ds_rows + cols[None, :], w.to(ds_ptr.dtype.element_ty), mask=inside)
    tl.store(tdot_ptr + rows, tdot, mask=row_ok)


def _duplicate_keys(
    labels: torch.Tensor, candidate_keys: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Dense int32 content keys (query, candidate) when some candidates share one; None when all differ
    (then a row's only duplicate is its positive, and the kernel masks nothing)."""
    unique, inverse = torch.unique(candidate_keys, return_inverse=True)
    if unique.numel() == candidate_keys.numel():
        return None
    inverse = inverse.to(torch.int32).contiguous()
    return inverse[labels].contiguous(), inverse


def onepass_forward(ctx, q, c, temperature, extra_logits, labels, candidate_keys, cfg: OnePassConfig):
    """Row-direction loss; its gradients, for a loss gradient of 1, go to ``ctx.grads`` (q, c,
    temperature, extra logits; None where ``ctx.needs_input_grad`` says no), not ``save_for_backward``,
    so that backward (``softmax_terms.hand_over_gradients``) scales them in place without a copy."""
    want_q, want_c, want_t, want_extra = ctx.needs_input_grad[:4]
    B, N = q.shape[0], c.shape[0]
    dev, f32 = q.device, torch.float32
    alpha = 1.0 / (B * float(temperature))  # dS is unscaled in [-1, 1]; the products apply 1/(B T)
    inv_t = (1.0 / temperature).reshape(1).to(f32).contiguous()
    keys = _duplicate_keys(labels, candidate_keys)
    extra_lse = (
        torch.logsumexp(extra_logits.float(), dim=1).contiguous() if extra_logits is not None else None
    )

    fp32_scores = cfg.fp32_scores and q.dtype != f32
    bytes_per_score = (4 + q.element_size()) if fp32_scores else q.element_size()
    step = chunk_rows(cfg, B, N, bytes_per_score)
    scores = torch.empty((step, N), device=dev, dtype=f32 if fp32_scores else q.dtype)
    ds_buffer = torch.empty((step, N), device=dev, dtype=q.dtype) if fp32_scores else scores
    lse, pos, tdot = (torch.empty(B, device=dev, dtype=f32) for _ in range(3))
    grad_q = torch.empty_like(q) if want_q else None
    grad_c = torch.empty_like(c) if want_c else None
    dc_master = (
        torch.zeros(c.shape, device=dev, dtype=f32)
        if want_c and cfg.fp32_grad_accumulator and c.dtype != f32
        else None
    )
    c_t = c.T
    for r0 in range(0, B, step):
        r1 = min(B, r0 + step)
        q_chunk, s, ds = q[r0:r1], scores[: r1 - r0], ds_buffer[: r1 - r0]
        if fp32_scores:
            matmul_fp32_into(s, q_chunk, c_t)
        else:
            torch.mm(q_chunk, c_t, out=s)
        _onepass_row_kernel[(triton.cdiv(r1 - r0, cfg.block_m),)](
            s,
            ds,
            labels,
            keys[0] if keys else labels,
            keys[1] if keys else labels,
            inv_t,
            extra_lse if extra_lse is not None else lse,
            lse,
            pos,
            tdot,
            r0,
            r1 - r0,
            N,
            s.stride(0),
            ds.stride(0),
            HAS_DUPLICATES=keys is not None,
            HAS_EXTRA=extra_lse is not None,
            BLOCK_M=cfg.block_m,
            BLOCK_N=cfg.block_n,
            num_warps=cfg.num_warps,  # pyright: ignore[reportCallIssue] (a launch option)
        )
        if grad_q is not None:
            rows_out = grad_q[r0:r1]
            torch.addmm(rows_out, ds, c, beta=0, alpha=alpha, out=rows_out)
        if dc_master is not None:
            addmm_fp32_(dc_master, ds.T, q_chunk)
        elif grad_c is not None:
            grad_c.addmm_(ds.T, q_chunk, beta=0 if r0 == 0 else 1, alpha=alpha)
    del scores, ds_buffer, s, ds
    if dc_master is not None and grad_c is not None:
        grad_c.copy_(dc_master.mul_(alpha))
        del dc_master

    loss = (lse - pos).mean()
    grad_t = (-(tdot.sum() * inv_t[0]) / B).reshape(temperature.shape) if want_t else None
    grad_extra = None
    if want_extra and extra_logits is not None:
        grad_extra = (torch.exp(extra_logits.float() - lse[:, None]) / B).to(extra_logits.dtype)
    ctx.grads = (grad_q, grad_c, grad_t, grad_extra)
    return loss
