"""The reference InfoNCE: materialises the B x N logits; the oracle the fast paths are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inputs import InfoNCEInputs


def infonce_reference(x: InfoNCEInputs) -> torch.Tensor:
    """Mean InfoNCE written the way the contract reads, with autograd through plain PyTorch ops.

    The score product runs in the input dtype (as an eager training loop would write it); everything
    after it is fp32.
    """
    B = x.q.shape[0]
    logits = (x.q @ x.c.T).float() / x.temperature
    rows = torch.arange(B, device=logits.device)
    # Row direction: duplicates of the positive (same content key, other index) are not negatives.
    duplicate = (x.candidate_keys[None, :] == x.candidate_keys[x.labels][:, None]) & (
        torch.arange(logits.shape[1], device=logits.device)[None, :] != x.labels[:, None]
    )
    row_logits = logits.masked_fill(duplicate, float("-inf"))
    if x.extra_logits is not None:
        row_logits = torch.cat([row_logits, x.extra_logits.float()], dim=1)
    loss = F.cross_entropy(row_logits, x.labels)
    if not x.symmetric:
        return loss
    # Column direction: for query i, the column of its positive, softmax over queries k; other queries
    # whose positive has the same content are duplicates and leave the denominator.
    col_logits = logits[:, x.labels].T  # [i, k] = logits[k, labels[i]]
    same_positive = (x.query_keys[None, :] == x.query_keys[:, None]) & (rows[None, :] != rows[:, None])
    col_loss = F.cross_entropy(col_logits.masked_fill(same_positive, float("-inf")), rows)
    return 0.5 * (loss + col_loss)
