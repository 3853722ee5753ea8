"""Row-chunked InfoNCE in pure PyTorch: never holds a B x N tensor; any device.

One autograd Function, ``ChunkedInfoNCE``, takes one of two paths (``softmax_terms.takes_one_pass``):

- *one pass* (row-direction loss with a gradient wanted, and ``InfoNCEConfig.one_pass``): each chunk
  of rows sees all N candidates, so its softmax, and hence its score gradient dS, is complete as soon
  as its scores are. The forward therefore forms dq = dS c / T and dc = dS^T q / T on the spot (3
  products in all, like eager) and keeps only those O((B + N) D) gradients; backward scales them by
  the incoming gradient (the loss is a scalar).
- *recompute* (symmetric loss, no gradient wanted, or ``one_pass=False``): forward keeps a
  log-sum-exp per row (and per column); backward recomputes the scores chunk by chunk (4 products of
  B x N x D in all).

Formulation shared with the Triton path (see ``docs/kernels.md``): with content keys ``qk`` (queries)
and ``ck`` (candidates), entry (i, j) of the score matrix is a *negative* when ``qk[i] != ck[j]``.
The positive logit ``p_i = q_i . c_{labels_i} / T`` is computed on its own and added back, so

    row_lse_i = logsumexp(negatives of row i, p_i, extra_logits_i)
    col_lse_i = logaddexp(colneg_lse[labels_i], p_i)        (symmetric only)

where ``colneg_lse[j]`` is the log-sum-exp of the negatives of column j.
"""

from __future__ import annotations

import torch

from .config import InfoNCEConfig, resolve_config
from .inputs import InfoNCEInputs
from .matmul import addmm_fp32_, matmul_fp32
from .softmax_terms import (
    BackwardTerms,
    ForwardStats,
    finish_forward,
    hand_over_gradients,
    positive_logits,
    prepare_backward,
    takes_one_pass,
)

DEFAULT_CHUNK_ELEMENTS = 1 << 22  # scores per row chunk on CPU (16 MiB in fp32)
CUDA_CHUNK_ELEMENTS = 1 << 26  # on CUDA (256 MiB in fp32): products of >= 2048 rows at N = 32K


def _rows_per_chunk(num_queries: int, num_candidates: int, chunk_rows: int | None, cuda: bool) -> int:
    """Rows per chunk: ``chunk_rows`` if given, else about DEFAULT_CHUNK_ELEMENTS scores (CPU) or
    CUDA_CHUNK_ELEMENTS (GPU, where small products waste the device), at most half of B."""
    if chunk_rows is not None:
        return max(1, int(chunk_rows))
    rows = max(16, (CUDA_CHUNK_ELEMENTS if cuda else DEFAULT_CHUNK_ELEMENTS) // num_candidates)
    return max(1, min(rows, (num_queries + 1) // 2))


def _mask_(
    logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, duplicate: torch.Tensor | None, value: float
) -> None:
    """Set the duplicates of each row's positive (and the positive itself) to ``value`` in place."""
    if duplicate is None:
        logits[rows, cols] = value
    else:
        logits.masked_fill_(duplicate, value)


class ChunkedInfoNCE(torch.autograd.Function):
    """Autograd Function of ``impl="chunked"``: the one-pass or the recompute path (module docstring),
    chosen in forward by ``takes_one_pass`` and kept on ``ctx.path`` with the configuration it ran with."""

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
        ctx.config = config
        ctx.step = _rows_per_chunk(q.shape[0], c.shape[0], config.chunk_rows, q.is_cuda)
        if takes_one_pass(ctx, symmetric, config, grad_enabled):
            ctx.path = "one-pass"
            return _one_pass_forward(ctx, q, c, temperature, extra_logits, labels, query_keys, candidate_keys)
        ctx.path = "recompute"
        return _recompute_forward(
            ctx, q, c, temperature, extra_logits, labels, query_keys, candidate_keys, symmetric
        )

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.path == "one-pass":
            grads = hand_over_gradients(ctx, grad_loss, "chunked")
        else:
            grads = _recompute_backward(ctx, grad_loss)
        return (*grads, *(None,) * 6)


def _recompute_forward(ctx, q, c, temperature, extra_logits, labels, query_keys, candidate_keys, symmetric):
    """Loss from a log-sum-exp per row (and per column); saves the O(B + N) vectors backward needs."""
    c_work = c if (c.dtype == torch.float32 or c.is_cuda) else c.float()
    inv_t = 1.0 / temperature
    pos = positive_logits(q, c, labels, inv_t)
    B, N = q.shape[0], c.shape[0]
    row_neg = torch.empty(B, device=q.device, dtype=torch.float32)
    col_neg = torch.full((N,), float("-inf"), device=q.device, dtype=torch.float32) if symmetric else None
    step = ctx.step
    for r0 in range(0, B, step):
        r1 = min(B, r0 + step)
        logits = matmul_fp32(q[r0:r1], c_work.T).mul_(inv_t)
        logits.masked_fill_(query_keys[r0:r1, None] == candidate_keys[None, :], float("-inf"))
        row_neg[r0:r1] = torch.logsumexp(logits, dim=1)
        if col_neg is not None:
            torch.logaddexp(col_neg, torch.logsumexp(logits, dim=0), out=col_neg)
    stats = ForwardStats(pos, row_neg, col_neg)
    loss, saved = finish_forward(stats, labels, extra_logits, symmetric, N)
    ctx.save_for_backward(q, c, temperature, extra_logits, labels, query_keys, candidate_keys, *saved)
    ctx.symmetric = symmetric
    return loss


def _recompute_backward(ctx, grad_loss) -> tuple:
    """Gradients of q, c, temperature and extra logits, recomputing the scores chunk by chunk."""
    q, c, temperature, extra_logits, labels, query_keys, candidate_keys, *saved = ctx.saved_tensors
    terms: BackwardTerms = prepare_backward(saved, labels, extra_logits, ctx.symmetric, c.shape[0], grad_loss)
    inv_t = 1.0 / temperature
    c_work = c if (c.dtype == torch.float32 or c.is_cuda) else c.float()
    q_work = q if (q.dtype == torch.float32 or q.is_cuda) else q.float()
    B = q.shape[0]
    dq = torch.empty(q.shape, device=q.device, dtype=torch.float32)
    dc = torch.zeros(c.shape, device=c.device, dtype=torch.float32)
    logit_grad_dot = torch.zeros((), device=q.device, dtype=torch.float32)
    for r0 in range(0, B, ctx.step):
        r1 = min(B, r0 + ctx.step)
        logits = matmul_fp32(q[r0:r1], c_work.T).mul_(inv_t)
        # d loss / d logits, divided by the row scale: softmax weights of row and column directions.
        dlogits = torch.sub(logits, terms.row_lse[r0:r1, None]).exp_()
        if terms.col_log_weight is not None:
            dlogits += torch.add(logits, terms.col_log_weight[None, :]).exp_()
        dlogits.masked_fill_(query_keys[r0:r1, None] == candidate_keys[None, :], 0.0)
        logit_grad_dot += torch.vdot(dlogits.view(-1), logits.view(-1))
        if q_work.dtype != torch.float32:
            dlogits = dlogits.to(q_work.dtype)
        dq[r0:r1] = matmul_fp32(dlogits, c_work)
        addmm_fp32_(dc, dlogits.T, q_work[r0:r1])
    return terms.finish(q, c, labels, temperature, dq, dc, logit_grad_dot, inv_t)


def _one_pass_forward(ctx, q, c, temperature, extra_logits, labels, query_keys, candidate_keys):
    """Row-direction loss with its gradients formed on the spot (3 products, no recompute).

    The gradients are kept on ``ctx.grads`` (not ``save_for_backward``) so that backward can hand them
    to autograd without a copy; they are O((B + N) D), the same size as the inputs.
    """
    work_dtype = torch.float32 if (q.dtype == torch.float32 or not q.is_cuda) else q.dtype
    c_work, q_work = c.to(work_dtype), q.to(work_dtype)
    inv_t = 1.0 / temperature
    need_t = ctx.needs_input_grad[2]
    extra_lse = torch.logsumexp(extra_logits.float(), dim=1) if extra_logits is not None else None
    B, N = q.shape[0], c.shape[0]
    # With distinct content keys a row's only duplicate is its positive: mask by index, not by a
    # chunk-sized comparison.
    unique_keys = torch.unique(candidate_keys).numel() == N
    pos = torch.empty(B, device=q.device, dtype=torch.float32)
    row_neg = torch.empty(B, device=q.device, dtype=torch.float32)
    dq = torch.empty(q.shape, device=q.device, dtype=torch.float32)
    dc = torch.zeros(c.shape, device=c.device, dtype=torch.float32)
    logit_grad_dot = torch.zeros((), device=q.device, dtype=torch.float32)
    step = ctx.step
    for r0 in range(0, B, step):
        r1 = min(B, r0 + step)
        logits = matmul_fp32(q[r0:r1], c_work.T).mul_(inv_t)
        rows, cols = torch.arange(r1 - r0, device=q.device), labels[r0:r1]
        pos[r0:r1] = logits[rows, cols]
        duplicate = None if unique_keys else query_keys[r0:r1, None] == candidate_keys[None, :]
        _mask_(logits, rows, cols, duplicate, float("-inf"))
        peak = logits.amax(dim=1)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        # The logits are only needed again for the temperature gradient; otherwise work in place.
        weights = torch.sub(logits, peak[:, None]) if need_t else logits.sub_(peak[:, None])
        weights.exp_()
        row_neg[r0:r1] = peak + weights.sum(dim=1).log()
        parts = [row_neg[r0:r1], pos[r0:r1]] + ([extra_lse[r0:r1]] if extra_lse is not None else [])
        row_lse = torch.logsumexp(torch.stack(parts), dim=0)
        weights.mul_(torch.exp(peak - row_lse)[:, None])  # softmax weights of the negatives
        if need_t:
            _mask_(logits, rows, cols, duplicate, 0.0)
            logit_grad_dot += torch.vdot(weights.view(-1), logits.view(-1))
        del logits, duplicate
        weights = weights.to(work_dtype)
        dq[r0:r1] = matmul_fp32(weights, c_work)
        addmm_fp32_(dc, weights.T, q_work[r0:r1])
        del weights
    del c_work, q_work
    loss, saved = finish_forward(ForwardStats(pos, row_neg, None), labels, extra_logits, False, N)
    terms = prepare_backward(saved, labels, extra_logits, False, N, torch.ones((), device=q.device))
    grad_q, grad_c, grad_t, grad_extra = terms.finish(
        q, c, labels, temperature, dq, dc, logit_grad_dot, inv_t
    )
    ctx.grads = (grad_q, grad_c, grad_t if need_t else None, grad_extra)
    return loss


def infonce_chunked(x: InfoNCEInputs, config: InfoNCEConfig | None = None) -> torch.Tensor:
    """Mean InfoNCE computed in row chunks (see the module docstring); any device.

    ``config`` (None: the defaults) gives the rows per chunk and whether the one-pass path may run.
    """
    return ChunkedInfoNCE.apply(
        x.q,
        x.c,
        x.temperature,
        x.extra_logits,
        x.labels,
        x.query_keys,
        x.candidate_keys,
        x.symmetric,
        resolve_config(config),
        torch.is_grad_enabled(),
    )
