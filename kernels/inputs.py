"""Validation and normalisation of the arguments every InfoNCE implementation shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class InfoNCEInputs:
    """Checked arguments of one InfoNCE call.

    ``query_keys[i]`` and ``candidate_keys[j]`` are content keys: candidate ``j`` is left out of query
    ``i``'s negatives when the keys match (the positive itself is added back separately), and query
    ``k`` is left out of the column denominator of candidate ``j`` likewise. Without candidate ids the
    keys are the candidate indices, so only the positive (row) and queries sharing the same positive
    (column) match.
    """

    q: torch.Tensor
    c: torch.Tensor
    labels: torch.Tensor
    temperature: torch.Tensor
    query_keys: torch.Tensor
    candidate_keys: torch.Tensor
    extra_logits: torch.Tensor | None
    symmetric: bool


def check_inputs(
    q: torch.Tensor,
    c: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor,
    symmetric: bool,
    candidate_ids: torch.Tensor | None,
    extra_logits: torch.Tensor | None,
) -> InfoNCEInputs:
    """Check shapes, dtypes and devices; raise one clear ``ValueError`` naming what is wrong."""
    if q.dim() != 2 or c.dim() != 2:
        raise ValueError(
            f"infonce: q and c must be 2-D [B, D] and [N, D], got {tuple(q.shape)} and {tuple(c.shape)}"
        )
    if q.shape[1] != c.shape[1]:
        raise ValueError(
            f"infonce: q and c must share the embedding size D, got {q.shape[1]} and {c.shape[1]}"
        )
    if q.dtype not in SUPPORTED_DTYPES or c.dtype != q.dtype:
        raise ValueError(
            f"infonce: q and c must both be float32, float16 or bfloat16, got {q.dtype} and {c.dtype}"
        )
    if c.device != q.device:
        raise ValueError(f"infonce: q and c must be on one device, got {q.device} and {c.device}")
    B, N = q.shape[0], c.shape[0]
    if B == 0 or N == 0:
        raise ValueError(f"infonce: need at least one query and one candidate, got B={B}, N={N}")
    if labels.shape != (B,) or labels.dtype != torch.int64:
        raise ValueError(
            f"infonce: labels must be int64 of shape [{B}], got {labels.dtype} {tuple(labels.shape)}"
        )
    labels = labels.to(q.device)
    if bool(((labels < 0) | (labels >= N)).any()):
        raise ValueError(f"infonce: labels must index the {N} candidates (0 <= label < {N})")
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                f"infonce: temperature must be a float or a 0-d tensor, got shape {tuple(temperature.shape)}"
            )
        temp = temperature.reshape(()).to(device=q.device, dtype=torch.float32)
    else:
        if not float(temperature) > 0:
            raise ValueError(f"infonce: temperature must be > 0, got {temperature}")
        temp = torch.tensor(float(temperature), device=q.device, dtype=torch.float32)
    if candidate_ids is not None:
        if candidate_ids.shape != (N,) or candidate_ids.dtype != torch.int64:
            raise ValueError(
                f"infonce: candidate_ids must be int64 of shape [{N}], "
                f"got {candidate_ids.dtype} {tuple(candidate_ids.shape)}"
            )
        candidate_keys = candidate_ids.to(q.device)
        query_keys = candidate_keys[labels]
    else:
        candidate_keys = torch.arange(N, device=q.device)
        query_keys = labels
    if extra_logits is not None:
        if extra_logits.dim() != 2 or extra_logits.shape[0] != B or not extra_logits.is_floating_point():
            raise ValueError(
                f"infonce: extra_logits must be a float tensor [{B}, K], "
                f"got {extra_logits.dtype} {tuple(extra_logits.shape)}"
            )
        if extra_logits.shape[1] == 0:
            extra_logits = None
    return InfoNCEInputs(q, c, labels, temp, query_keys, candidate_keys, extra_logits, bool(symmetric))
