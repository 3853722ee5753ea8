"""Fused InfoNCE on the GPU with Triton.

Forward: one kernel walks row blocks of q against all of c in (BLOCK_M x BLOCK_N) score tiles (each a
K-loop of ``tl.dot``), masks duplicates of the positive by content key, and keeps an online
log-sum-exp per row. When symmetric, the same tiles also update per-column running (max, sum) pairs,
one row of partials per program (no atomics), merged on the host.

Backward: rows in chunks; one kernel recomputes each score tile and writes the chunk's softmax
weights dS (input dtype, fp32 for fp32 inputs) plus per-tile sums of dS * logits (for the
temperature gradient); cuBLAS then does dq = dS c and dc += dS^T q. dS is never larger than one
chunk (a few hundred MB at most), and nothing B x N is saved.

``TritonInfoNCE``, the one autograd Function of ``impl="triton"``, sends the training case (row-direction
loss with a gradient wanted, ``softmax_terms.takes_one_pass``) to the one-pass path in
``triton_onepass.py`` instead (3 cuBLAS products, no recompute); the kernels here serve the symmetric
loss, calls without gradients and ``InfoNCEConfig(one_pass=False)``. The configuration
(``InfoNCEConfig.tiles`` here, ``.onepass`` there) is an argument, kept on ``ctx`` for backward.

Under ``TRITON_INTERPRET=1`` (set before this module is imported) the kernels run on CPU tensors;
bf16 tiles are then upcast to fp32 before ``tl.dot``, which the interpreter gets wrong for bf16.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mme5.errors import ConfigError

from .config import INTERPRETER, InfoNCEConfig, TileConfig, resolve_config
from .inputs import InfoNCEInputs
from .matmul import addmm_fp32_, matmul_fp32
from .softmax_terms import (
    ForwardStats,
    finish_forward,
    hand_over_gradients,
    positive_logits,
    prepare_backward,
    takes_one_pass,
)
from .triton_onepass import onepass_forward


@triton.jit
def _score_tile(
    q_ptr,
    c_ptr,
    offs_m,
    offs_n,
    row_ok,
    col_ok,
    D,
    stride_qb,
    stride_qd,
    stride_cn,
    stride_cd,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """fp32 tile q[offs_m] . c[offs_n]^T, accumulated over D in BLOCK_K steps."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    q_rows = q_ptr + offs_m.to(tl.int64)[:, None] * stride_qb
    c_cols = c_ptr + offs_n.to(tl.int64)[None, :] * stride_cn
    for k0 in range(0, D, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < D
        a = tl.load(q_rows + offs_k[None, :] * stride_qd, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(c_cols + offs_k[:, None] * stride_cd, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def _infonce_forward_kernel(
    q_ptr,
    c_ptr,
    qkey_ptr,
    ckey_ptr,
    inv_t_ptr,
    row_max_ptr,
    row_sum_ptr,
    col_max_ptr,
    col_sum_ptr,
    B,
    N,
    D,
    stride_qb,
    stride_qd,
    stride_cn,
    stride_cd,
    SYMMETRIC: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Online log-sum-exp of each row's negatives; per-program column partials when symmetric."""
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    inv_t = tl.load(inv_t_ptr)
    for rb in range(pid, tl.cdiv(B, BLOCK_M), programs):
        offs_m = rb * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_m < B
        qk = tl.load(qkey_ptr + offs_m, mask=row_ok, other=0)
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        for n0 in range(0, N, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            col_ok = offs_n < N
            ck = tl.load(ckey_ptr + offs_n, mask=col_ok, other=0)
            s = _score_tile(
                q_ptr,
                c_ptr,
                offs_m,
                offs_n,
                row_ok,
                col_ok,
                D,
                stride_qb,
                stride_qd,
                stride_cn,
                stride_cd,
                UPCAST,
                PRECISION,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
            negative = row_ok[:, None] & col_ok[None, :] & (qk[:, None] != ck[None, :])
            logits = tl.where(negative, s * inv_t, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(logits, axis=1))
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.exp(m_i - m_ref) + tl.sum(tl.exp(logits - m_ref[:, None]), axis=1)
            m_i = m_new
            if SYMMETRIC:
                part = pid * N + offs_n
                cm_old = tl.load(col_max_ptr + part, mask=col_ok, other=float("-inf"))
                cl_old = tl.load(col_sum_ptr + part, mask=col_ok, other=0.0)
                cm_new = tl.maximum(cm_old, tl.max(logits, axis=0))
                cm_ref = tl.where(cm_new == float("-inf"), 0.0, cm_new)
                cl_new = cl_old * tl.exp(cm_old - cm_ref) + tl.sum(tl.exp(logits - cm_ref[None, :]), axis=0)
                tl.store(col_max_ptr + part, cm_new, mask=col_ok)
                tl.store(col_sum_ptr + part, cl_new, mask=col_ok)
        tl.store(row_max_ptr + offs_m, m_i, mask=row_ok)
        tl.store(row_sum_ptr + offs_m, l_i, mask=row_ok)


@triton.jit
def _infonce_score_grad_kernel(
    q_ptr,
    c_ptr,
    qkey_ptr,
    ckey_ptr,
    inv_t_ptr,
    row_lse_ptr,
    col_logw_ptr,
    ds_ptr,
    dot_ptr,
    row_start,
    row_end,
    N,
    D,
    stride_qb,
    stride_qd,
    stride_cn,
    stride_cd,
    stride_dsm,
    SYMMETRIC: tl.constexpr,
    UPCAST: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """dS tile for rows [row_start, row_end): softmax weights of the negatives (0 elsewhere)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    inv_t = tl.load(inv_t_ptr)
    local_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_m = row_start + local_m
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = offs_m < row_end
    col_ok = offs_n < N
    s = _score_tile(
        q_ptr,
        c_ptr,
        offs_m,
        offs_n,
        row_ok,
        col_ok,
        D,
        stride_qb,
        stride_qd,
        stride_cn,
        stride_cd,
        UPCAST,
        PRECISION,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
    )
    logits = s * inv_t
    qk = tl.load(qkey_ptr + offs_m, mask=row_ok, other=0)
    ck = tl.load(ckey_ptr + offs_n, mask=col_ok, other=0)
    row_lse = tl.load(row_lse_ptr + offs_m, mask=row_ok, other=0.0)
    g = tl.exp(logits - row_lse[:, None])
    if SYMMETRIC:
        col_logw = tl.load(col_logw_ptr + offs_n, mask=col_ok, other=float("-inf"))
        g += tl.exp(logits + col_logw[None, :])
    negative = row_ok[:, None] & col_ok[None, :] & (qk[:, None] != ck[None, :])
    g = tl.where(negative, g, 0.0)
    out = ds_ptr + local_m.to(tl.int64)[:, None] * stride_dsm + offs_n[None, :]
    tl.store(out, g.to(ds_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
    tl.store(dot_ptr + pid_m * tl.num_programs(1) + pid_n, tl.sum(tl.sum(g * logits, axis=1), axis=0))


def _kernel_flags(dtype: torch.dtype) -> dict:
    return {
        "UPCAST": INTERPRETER and dtype == torch.bfloat16,
        "PRECISION": "ieee" if dtype == torch.float32 else "tf32",
    }


def _launch_options(cfg: TileConfig, dtype: torch.dtype) -> dict:
    # fp32 tiles take twice the shared memory per stage: halve the K step on the GPU.
    block_k = cfg.block_k if (INTERPRETER or dtype != torch.float32) else min(cfg.block_k, 32)
    return {
        "BLOCK_M": cfg.block_m,
        "BLOCK_N": cfg.block_n,
        "BLOCK_K": block_k,
        "num_warps": cfg.num_warps,
        "num_stages": cfg.num_stages,
    }


def _forward_programs(cfg: TileConfig, q: torch.Tensor, row_blocks: int, symmetric: bool) -> int:
    if not symmetric:
        return row_blocks
    if cfg.forward_programs > 0 or not q.is_cuda:
        return min(row_blocks, cfg.forward_programs or row_blocks)
    # Column partials cost programs x N floats; a few waves of programs keep every SM busy.
    return min(row_blocks, 4 * torch.cuda.get_device_properties(q.device).multi_processor_count)


def triton_forward_stats(x: InfoNCEInputs, inv_t: torch.Tensor, cfg: TileConfig) -> ForwardStats:
    """Positive logits and negatives' log-sum-exps from the fused forward kernel."""
    q, c = x.q, x.c
    B, N, D = q.shape[0], c.shape[0], q.shape[1]
    row_blocks = triton.cdiv(B, cfg.block_m)
    programs = _forward_programs(cfg, q, row_blocks, x.symmetric)
    f32 = {"device": q.device, "dtype": torch.float32}
    row_max, row_sum = torch.empty(B, **f32), torch.empty(B, **f32)
    if x.symmetric:
        col_max = torch.full((programs, N), float("-inf"), **f32)
        col_sum = torch.zeros((programs, N), **f32)
    else:
        col_max = col_sum = row_max  # unused by the kernel
    _infonce_forward_kernel[(programs,)](
        q,
        c,
        x.query_keys,
        x.candidate_keys,
        inv_t,
        row_max,
        row_sum,
        col_max,
        col_sum,
        B,
        N,
        D,
        q.stride(0),
        q.stride(1),
        c.stride(0),
        c.stride(1),
        SYMMETRIC=x.symmetric,  # pyright: ignore[reportArgumentType] (a constexpr takes a Python value)
        **_kernel_flags(q.dtype),
        **_launch_options(cfg, q.dtype),
    )
    row_neg = row_max + torch.log(row_sum)
    col_neg = None
    if x.symmetric:
        peak = col_max.amax(dim=0)
        ref = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        col_neg = ref + torch.log((col_sum * torch.exp(col_max - ref)).sum(dim=0))
    return ForwardStats(positive_logits(q, c, x.labels, inv_t), row_neg, col_neg)


def _chunk_rows(cfg: TileConfig, B: int, N: int, element_size: int) -> int:
    """Rows of dS per backward chunk: within the byte budget, at least ``min_chunk_rows`` (so that
    dS^T q stays a compute-bound product), and never more than half of B (so dS is never B x N)."""
    rows = max(cfg.min_chunk_rows, cfg.chunk_bytes // (N * element_size))
    rows = min(rows, triton.cdiv(triton.cdiv(B, 2), cfg.block_m) * cfg.block_m)
    return min(B, max(cfg.block_m, rows // cfg.block_m * cfg.block_m))


class TritonInfoNCE(torch.autograd.Function):
    """Autograd Function of ``impl="triton"``: the one-pass path (``triton_onepass.py``) or the fused
    forward / recompute-backward kernels here, chosen in forward by ``takes_one_pass`` and kept on
    ``ctx.path`` with the configuration it ran with. Either way it keeps O((B + N) D) tensors only."""

    @staticmethod
    def forward(
        ctx,
        q,
        c,
        temperature,
        extra_logits,
        labels,
        query_keys,
        candidate_keys,
        symmetric,
        config: InfoNCEConfig,
        grad_enabled: bool,
    ):
        assert config.tiles is not None and config.onepass is not None, "infonce_triton resolves the config"
        ctx.config = config
        if takes_one_pass(ctx, symmetric, config, grad_enabled):
            ctx.path = "one-pass"
            return onepass_forward(
                ctx, q, c, temperature, extra_logits, labels, candidate_keys, config.onepass
            )
        ctx.path = "recompute"
        x = InfoNCEInputs(q, c, labels, temperature, query_keys, candidate_keys, extra_logits, symmetric)
        inv_t = (1.0 / temperature).reshape(1).contiguous()
        stats = triton_forward_stats(x, inv_t, config.tiles)
        loss, saved = finish_forward(stats, labels, extra_logits, symmetric, c.shape[0])
        ctx.save_for_backward(q, c, temperature, extra_logits, labels, query_keys, candidate_keys, *saved)
        ctx.symmetric = symmetric
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.path == "one-pass":
            grads = hand_over_gradients(ctx, grad_loss, "triton")
        else:
            grads = _recompute_backward(ctx, grad_loss)
        return (*grads, *(None,) * 6)


def _recompute_backward(ctx, grad_loss) -> tuple:
    """Gradients of q, c, temperature and extra logits: dS recomputed by the kernel, chunk by chunk."""
    q, c, temperature, extra_logits, labels, query_keys, candidate_keys, *saved = ctx.saved_tensors
    B, N, D = q.shape[0], c.shape[0], q.shape[1]
    terms = prepare_backward(saved, labels, extra_logits, ctx.symmetric, N, grad_loss)
    cfg: TileConfig = ctx.config.tiles
    inv_t = (1.0 / temperature).reshape(1).contiguous()
    row_lse = terms.row_lse.contiguous()
    col_logw = terms.col_log_weight.contiguous() if terms.col_log_weight is not None else row_lse
    step = _chunk_rows(cfg, B, N, q.element_size())
    ds_buffer = torch.empty((step, N), device=q.device, dtype=q.dtype)
    col_tiles = triton.cdiv(N, cfg.block_n)
    dots = torch.empty((triton.cdiv(step, cfg.block_m) * col_tiles,), device=q.device, dtype=torch.float32)
    dq = torch.empty((B, D), device=q.device, dtype=torch.float32)
    dc = torch.zeros((N, D), device=q.device, dtype=torch.float32)
    logit_grad_dot = torch.zeros((), device=q.device, dtype=torch.float32)
    for r0 in range(0, B, step):
        r1 = min(B, r0 + step)
        row_tiles = triton.cdiv(r1 - r0, cfg.block_m)
        ds = ds_buffer[: r1 - r0]
        _infonce_score_grad_kernel[(row_tiles, col_tiles)](
            q,
            c,
            query_keys,
            candidate_keys,
            inv_t,
            row_lse,
            col_logw,
            ds,
            dots,
            r0,
            r1,
            N,
            D,
            q.stride(0),
            q.stride(1),
            c.stride(0),
            c.stride(1),
            ds.stride(0),
            SYMMETRIC=ctx.symmetric,
            **_kernel_flags(q.dtype),
            **_launch_options(cfg, q.dtype),
        )
        logit_grad_dot += dots[: row_tiles * col_tiles].sum()
        dq[r0:r1] = matmul_fp32(ds, c)
        addmm_fp32_(dc, ds.T, q[r0:r1])
    return terms.finish(q, c, labels, temperature, dq, dc, logit_grad_dot, inv_t.reshape(()))


def infonce_triton(x: InfoNCEInputs, config: InfoNCEConfig | None = None) -> torch.Tensor:
    """Mean InfoNCE through the Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1).

    ``config`` (None: the defaults) holds the tiles of the fused kernels and the one-pass settings;
    ``one_pass=False`` in it keeps the training case on the fused forward / recompute-backward kernels.
    """
    if not (x.q.is_cuda or INTERPRETER):
        raise ConfigError(
            f"infonce: impl='triton' needs CUDA tensors (got {x.q.device}); use impl='chunked' or 'auto' "
            "on CPU, or set TRITON_INTERPRET=1 before importing triton to run the kernels in the interpreter"
        )
    return TritonInfoNCE.apply(
        x.q.contiguous(),
        x.c.contiguous(),
        x.temperature,
        x.extra_logits,
        x.labels.contiguous(),
        x.query_keys.contiguous(),
        x.candidate_keys.contiguous(),
        x.symmetric,
        resolve_config(config),
        torch.is_grad_enabled(),
    )
