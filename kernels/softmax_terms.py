"""The O(B + N) parts of InfoNCE shared by the chunked and Triton paths.

The fast paths produce, from tiles of the score matrix, the log-sum-exp of each row's negatives (and of
each column's negatives when symmetric). Everything else, the positive logits, the extra logits, the
loss value and the gradient terms that are vectors rather than matrices, lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import InfoNCEConfig


@dataclass
class ForwardStats:
    """What a fast forward pass hands over: positive logits and negatives' log-sum-exps (fp32)."""

    positive: torch.Tensor  # [B]
    row_negative_lse: torch.Tensor  # [B]
    col_negative_lse: torch.Tensor | None  # [N], symmetric only


def _row_blocks(num_rows: int, width: int):
    """Row ranges whose gathered [rows, width] fp32 copies stay near 4 MiB."""
    step = max(1, (1 << 20) // max(1, width))
    for r0 in range(0, num_rows, step):
        yield r0, min(num_rows, r0 + step)


def positive_logits(
    q: torch.Tensor, c: torch.Tensor, labels: torch.Tensor, inv_t: torch.Tensor
) -> torch.Tensor:
    """p_i = q_i . c_{labels_i} / T in fp32."""
    out = torch.empty(q.shape[0], device=q.device, dtype=torch.float32)
    for r0, r1 in _row_blocks(q.shape[0], q.shape[1]):
        out[r0:r1] = (q[r0:r1].float() * c[labels[r0:r1]].float()).sum(dim=1)
    return out * inv_t


def finish_forward(
    stats: ForwardStats,
    labels: torch.Tensor,
    extra_logits: torch.Tensor | None,
    symmetric: bool,
    num_candidates: int,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss value and the vectors backward needs (positive logits, row and column log-sum-exps)."""
    pos = stats.positive
    parts = [stats.row_negative_lse, pos]
    if extra_logits is not None:
        parts.append(torch.logsumexp(extra_logits.float(), dim=1))
    row_lse = torch.logsumexp(torch.stack(parts), dim=0)
    loss = (row_lse - pos).mean()
    if not symmetric:
        return loss, [pos, row_lse]
    assert stats.col_negative_lse is not None, "a symmetric loss needs the column log-sum-exps"
    col_lse = torch.logaddexp(stats.col_negative_lse[labels], pos)
    loss = 0.5 * (loss + (col_lse - pos).mean())
    return loss, [pos, row_lse, col_lse]


@dataclass
class BackwardTerms:
    """Per-row and per-column quantities that turn a recomputed logit tile into its gradient.

    For a negative entry (k, j): d loss / d logit = scale * (exp(logit - row_lse[k]) +
    exp(logit + col_log_weight[j])); the second term only when symmetric.
    """

    scale: torch.Tensor  # 0-d: grad_loss / B (halved when symmetric)
    row_lse: torch.Tensor  # [B]
    col_log_weight: torch.Tensor | None  # [N]
    positive: torch.Tensor  # [B]
    positive_grad: torch.Tensor  # [B], d loss / d positive logit, divided by scale
    extra_grad: torch.Tensor | None  # [B, K]

    def finish(
        self,
        q: torch.Tensor,
        c: torch.Tensor,
        labels: torch.Tensor,
        temperature: torch.Tensor,
        dq: torch.Tensor,
        dc: torch.Tensor,
        logit_grad_dot: torch.Tensor,
        inv_t: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Add the positives' terms to the negatives' products dq = dS c, dc = dS^T q (fp32, unscaled).

        ``logit_grad_dot`` is sum(dS * logits) over the negatives; it yields the temperature gradient
        (logits = scores / T, so d logits / d T = -logits / T).
        """
        g = self.positive_grad
        for r0, r1 in _row_blocks(q.shape[0], q.shape[1]):
            idx, g_rows = labels[r0:r1], g[r0:r1, None]
            dq[r0:r1].addcmul_(g_rows, c[idx].float())
            dc.index_add_(0, idx, g_rows * q[r0:r1].float())
        factor = self.scale * inv_t
        grad_q = dq.mul_(factor).to(q.dtype)
        grad_c = dc.mul_(factor).to(c.dtype)
        grad_t = -self.scale * (logit_grad_dot + (g * self.positive).sum()) * inv_t
        return grad_q, grad_c, grad_t.reshape(temperature.shape), self.extra_grad


def _log_scatter_sum(log_values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """log(sum over i with index[i] == j of exp(log_values[i])) for each j, without overflow."""
    peak = torch.full((size,), float("-inf"), device=log_values.device, dtype=log_values.dtype)
    peak.scatter_reduce_(0, index, log_values, reduce="amax")
    safe = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = torch.zeros(size, device=log_values.device, dtype=log_values.dtype)
    total.index_add_(0, index, torch.exp(log_values - safe[index]))
    return safe + torch.log(total)


def prepare_backward(
    saved: list[torch.Tensor],
    labels: torch.Tensor,
    extra_logits: torch.Tensor | None,
    symmetric: bool,
    num_candidates: int,
    grad_loss: torch.Tensor,
) -> BackwardTerms:
    """Turn the saved vectors and the incoming loss gradient into the tile-gradient terms."""
    pos, row_lse = saved[0], saved[1]
    B = pos.shape[0]
    scale = grad_loss.float() / B
    positive_grad = torch.exp(pos - row_lse) - 1.0
    col_log_weight = None
    if symmetric:
        scale = 0.5 * scale
        col_lse = saved[2]
        positive_grad = positive_grad + (torch.exp(pos - col_lse) - 1.0)
        col_log_weight = _log_scatter_sum(-col_lse, labels, num_candidates)
    extra_grad = None
    if extra_logits is not None:
        extra_grad = (scale * torch.exp(extra_logits.float() - row_lse[:, None])).to(extra_logits.dtype)
    return BackwardTerms(scale, row_lse, col_log_weight, pos, positive_grad, extra_grad)


def takes_one_pass(ctx, symmetric: bool, config: InfoNCEConfig, grad_enabled: bool) -> bool:
    """Which path a backend's autograd Function takes: one pass (gradients formed in forward) for the
    row-direction loss when ``config.one_pass`` allows it and the caller's autograd (``grad_enabled``:
    grad mode at the call, which forward itself cannot see) wants a gradient of q, c, the temperature or
    the extra logits (``ctx.needs_input_grad``, the Function's first four inputs); recompute otherwise."""
    return config.one_pass and grad_enabled and not symmetric and any(ctx.needs_input_grad[:4])


def hand_over_gradients(ctx, grad_loss: torch.Tensor, impl: str) -> tuple:
    """Backward of the one-pass path: the gradients its forward formed for a loss gradient of 1
    (``ctx.grads``: q, c, temperature, extra logits), scaled in place by ``grad_loss``, handed over once."""
    if ctx.grads is None:
        raise RuntimeError(
            f"infonce(impl={impl!r}): backward ran twice through the same graph; the one-pass "
            "gradient is handed over once (use config=InfoNCEConfig(one_pass=False), symmetric=True or "
            "impl='reference')"
        )
    grads, ctx.grads = ctx.grads, None
    if not (grad_loss.device.type == "cpu" and grad_loss.item() == 1.0):
        for g in grads:
            if g is not None:
                g.mul_(grad_loss)  # a 0-d fp32 factor: computed in fp32, rounded once
    return grads
