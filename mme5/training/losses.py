"""The contrastive (InfoNCE) loss module, with candidates gathered from every rank.

Inputs per rank: ``q [B, D]`` query embeddings and ``c [B + B*K, D]`` candidate embeddings laid out
as the :class:`~mme5.data.collate.Collator` builds them: the B positives (positive of query i at row i),
then the K hard negatives of query 0, of query 1, ... With ``gather=True`` under
``torch.distributed`` the module

* gathers the candidates (and the queries when ``symmetric``) of all ranks with autograd, arranged
  exactly as one process holding the whole global batch would see them (all positives, then all
  negatives, in global query order);
* scores only the local queries against the global candidates (no rank recomputes another's rows),
  with labels offset by the number of queries on lower ranks;
* scales the local loss by ``B_local * world / B_global``, so that after DDP averages gradients over
  ranks the update equals the single-process update on the whole global batch.

Hard negatives are either ``shared`` (every query sees every global positive and every global hard
negative, like sentence-transformers' MultipleNegativesRankingLoss) or ``own`` (mmE5: every global
positive plus only the query's own K negatives).

Matryoshka (``matryoshka_dims``, as jina-embeddings-v4 and Qwen3-VL-Embedding train): the loss is the
weighted sum of the InfoNCE at the full dimension and at each listed dimension ``d``, where queries and
candidates are cut to their first ``d`` components and L2-normalised again. The candidates are
gathered once, at the full dimension (normalising rows commutes with gathering them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mme5.distributed import all_reduce_sum, gather_no_grad, gather_sizes, gather_with_grad, rank_and_world
from mme5.errors import ConfigError

HardNegatives = Literal["shared", "own"]
Impl = Literal["auto", "reference", "chunked", "triton"]


@dataclass
class LossSettings:
    """Settings of the contrastive loss (the ``loss`` group of the training config)."""

    temperature: float = 0.02
    """Softmax temperature: logits are cosine similarities divided by it (mmE5: 0.02)."""
    learnable_temperature: bool = False
    """Learn the temperature (as its logarithm) together with the model."""
    symmetric: bool = False
    """Add the candidate -> query direction for the positives and average the two directions."""
    hard_negatives: HardNegatives = "shared"
    """``shared``: every query sees all hard negatives of the global batch; ``own`` (mmE5): only its own."""
    gather: bool = True
    """Gather candidates (and queries when symmetric) from all ranks, so negatives grow with world size."""
    impl: Impl = "auto"
    """InfoNCE implementation in ``mme5.kernels.infonce``: auto | reference | chunked | triton."""
    mask_duplicates: bool = True
    """Do not count a candidate with the same content id as the query's positive as a negative."""
    matryoshka_dims: list[int] | None = None
    """Matryoshka: also the InfoNCE at each of these leading dimensions (truncated, re-normalised), e.g.
    ``[64, 256, 1024]``; the full dimension is always a term (list it to give it a weight)."""
    matryoshka_weights: list[float] | None = None
    """Weight of each ``matryoshka_dims`` term (default 1 each); the full dimension weighs 1 unless listed."""


def matryoshka_terms(
    dims: list[int] | None, weights: list[float] | None, full: int | None = None
) -> list[tuple[int | None, float]]:
    """The ``(dimension, weight)`` terms of the loss; ``None`` stands for the full dimension.

    Validates the settings (``ConfigError`` naming the field); with ``full`` given, a listed dimension
    equal to it is the full term and one larger than it is an error.
    """
    if weights is not None and dims is None:
        raise ConfigError("loss.matryoshka_weights needs loss.matryoshka_dims")
    dims = list(dims or [])
    if weights is not None and len(weights) != len(dims):
        raise ConfigError(
            f"loss.matryoshka_weights has {len(weights)} entries for {len(dims)} matryoshka_dims"
        )
    ws = [float(w) for w in weights] if weights is not None else [1.0] * len(dims)
    if any(int(d) != d or d < 1 for d in dims):
        raise ConfigError(f"loss.matryoshka_dims must be positive integers, got {dims}")
    if len(set(dims)) != len(dims):
        raise ConfigError(f"loss.matryoshka_dims has a repeated dimension: {dims}")
    if any(not (math.isfinite(w) and w >= 0) for w in ws):
        raise ConfigError(f"loss.matryoshka_weights must be finite and >= 0, got {ws}")
    if full is not None and dims and max(dims) > full:
        raise ConfigError(f"loss.matryoshka_dims has {max(dims)}, larger than the embedding dimension {full}")
    full_weight = 1.0
    terms: list[tuple[int | None, float]] = []
    for d, w in sorted(zip(dims, ws, strict=True)):
        if full is not None and d == full:
            full_weight = w
        else:
            terms.append((int(d), w))
    return [(None, full_weight), *terms]


def truncate(x: Tensor, dim: int | None) -> Tensor:
    """The first ``dim`` components of each row, L2-normalised again (``x`` itself for None)."""
    return x if dim is None else F.normalize(x[..., :dim], dim=-1)


def _infonce():
    # imported late: the kernels package is optional at import time (and pyright cannot follow the
    # package-dir mapping that installs kernels/ as mme5.kernels)
    from mme5.kernels import infonce  # pyright: ignore[reportMissingImports]

    return infonce


class ContrastiveLoss(nn.Module):
    """InfoNCE over in-batch, cross-rank and hard negatives.

    Args:
        temperature: logits = cosine similarity / temperature.
        learnable_temperature: learn ``log(temperature)`` as a parameter.
        symmetric: also score each positive against all (global) queries; the loss is the mean of
            the two directions.
        hard_negatives: ``shared`` or ``own`` (see module docstring).
        gather: gather across ranks when ``torch.distributed`` is initialised with >1 rank.
        impl: the ``mme5.kernels.infonce`` implementation.
        mask_duplicates: use ``candidate_ids`` to exclude false negatives (same content as the positive).
        matryoshka_dims: also the loss at these truncated, re-normalised dimensions (module docstring).
        matryoshka_weights: one weight per ``matryoshka_dims`` entry (default 1).

    ``forward(q, c, num_negatives, candidate_ids) -> (loss, stats)``; ``stats`` holds detached
    global values: ``loss`` (mean over the global batch), ``accuracy`` (top-1 of the query -> candidate
    direction), ``temperature``, ``queries`` and ``candidates`` (per query, global); with Matryoshka
    also ``loss_dim<d>`` (each term's unweighted global mean, ``d`` the full dimension for the full one)
    and ``loss`` is the weighted sum.
    """

    def __init__(
        self,
        temperature: float = 0.02,
        learnable_temperature: bool = False,
        symmetric: bool = False,
        hard_negatives: HardNegatives = "shared",
        gather: bool = True,
        impl: Impl = "auto",
        mask_duplicates: bool = True,
        matryoshka_dims: list[int] | None = None,
        matryoshka_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        matryoshka_terms(matryoshka_dims, matryoshka_weights)  # validates
        if not temperature > 0:
            raise ConfigError(f"loss.temperature must be > 0, got {temperature}")
        if hard_negatives not in ("shared", "own"):
            raise ConfigError(f"loss.hard_negatives must be 'shared' or 'own', got {hard_negatives!r}")
        if impl not in ("auto", "reference", "chunked", "triton"):
            raise ConfigError(f"loss.impl must be one of auto|reference|chunked|triton, got {impl!r}")
        # shape [1], not 0-d: FSDP2 shards parameters along their first dimension
        log_t = torch.full((1,), math.log(temperature), dtype=torch.float32)
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t, persistent=False)
        self.learnable_temperature = learnable_temperature
        self.symmetric = symmetric
        self.hard_negatives = hard_negatives
        self.gather = gather
        self.impl = impl
        self.mask_duplicates = mask_duplicates
        self.matryoshka_dims = list(matryoshka_dims) if matryoshka_dims is not None else None
        self.matryoshka_weights = list(matryoshka_weights) if matryoshka_weights is not None else None

    @classmethod
    def from_settings(cls, settings: LossSettings) -> ContrastiveLoss:
        return cls(**asdict(settings))

    @property
    def temperature(self) -> Tensor:
        """The current temperature (a 0-d tensor; carries autograd when learnable)."""
        return self.log_temperature.exp().reshape(())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "log_temperature"
        if key in state_dict and state_dict[key].dim() == 0:  # checkpoints written before the [1] shape
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self, q: Tensor, c: Tensor, num_negatives: int = 0, candidate_ids: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of the local queries against the (gathered) candidates.

        Args:
            q: ``[B, D]`` query embeddings of this rank.
            c: ``[B + B*K, D]`` candidates: B positives, then K negatives per query in query order.
            num_negatives: K.
            candidate_ids: ``[B + B*K]`` int64 content ids (equal ids = equal content), or None.
        """
        B, K = q.shape[0], int(num_negatives)
        if c.dim() != 2 or q.dim() != 2 or c.shape[1] != q.shape[1]:
            raise ValueError(
                f"expected q [B, D] and c [N, D] with equal D, got {tuple(q.shape)} and {tuple(c.shape)}"
            )
        if c.shape[0] != B * (1 + K):
            raise ValueError(
                f"expected {B} positives + {B}x{K} negatives = {B * (1 + K)} candidates, got {c.shape[0]}"
            )
        if candidate_ids is not None and candidate_ids.shape != (c.shape[0],):
            raise ValueError(
                f"candidate_ids must have shape [{c.shape[0]}], got {tuple(candidate_ids.shape)}"
            )
        ids = candidate_ids.to(c.device) if (self.mask_duplicates and candidate_ids is not None) else None
        tau = self.temperature.to(q.device)
        infonce = _infonce()

        distributed = self.gather and rank_and_world()[1] > 1
        rank, world = rank_and_world() if distributed else (0, 1)
        sizes = gather_sizes(B, q.device) if distributed else [B]
        b_global, offset = sum(sizes), sum(sizes[:rank])

        def gather(x: Tensor, rows: list[int]) -> Tensor:
            return gather_with_grad(x, rows) if distributed else x

        def gather_ids(x: Tensor, rows: list[int]) -> Tensor:
            return gather_no_grad(x, rows) if distributed else x

        pos, neg = c[:B], c[B:]
        pos_g = gather(pos, sizes)
        pos_ids_g = gather_ids(ids[:B], sizes) if ids is not None else None
        labels = torch.arange(offset, offset + B, device=q.device)
        neg_g: Tensor | None = None
        cand_ids = pos_ids_g
        own = K > 0 and self.hard_negatives == "own"
        if self.hard_negatives == "shared" and K > 0:
            neg_sizes = [s * K for s in sizes]
            neg_g = gather(neg, neg_sizes)
            if ids is not None and pos_ids_g is not None:
                cand_ids = torch.cat([pos_ids_g, gather_ids(ids[B:], neg_sizes)])
        own_mask = ids[B:].view(B, K) == ids[:B, None] if own and ids is not None else None
        q_g = gather(q, sizes) if self.symmetric else None
        terms = matryoshka_terms(self.matryoshka_dims, self.matryoshka_weights, q.shape[1])

        def term(dim: int | None) -> tuple[Tensor, Tensor, Tensor | None]:
            """The loss at one dimension, with the candidates and own-negative logits it used."""
            qd, pos_d, pos_gd = truncate(q, dim), truncate(pos, dim), truncate(pos_g, dim)
            cand = pos_gd if neg_g is None else torch.cat([pos_gd, truncate(neg_g, dim)], dim=0)
            extra: Tensor | None = None
            if own:  # own hard negatives: [B, K] extra logits of each query against its K negatives
                negd = truncate(neg, dim)
                extra = torch.bmm(negd.reshape(B, K, -1), qd.unsqueeze(-1)).squeeze(-1) / tau
                if own_mask is not None:
                    extra = extra.masked_fill(own_mask, float("-inf"))
            loss = infonce(qd, cand, labels, tau, candidate_ids=cand_ids, extra_logits=extra, impl=self.impl)
            if q_g is not None:
                # candidate -> query direction: this rank's positives against every global query; a
                # query whose positive has the positive's content id is not a negative.
                back = infonce(
                    pos_d, truncate(q_g, dim), labels, tau, candidate_ids=pos_ids_g, impl=self.impl
                )
                loss = (loss + back) / 2
            return loss, cand, extra

        loss, cand, extra = term(None)
        parts = [loss]
        if terms[0][1] != 1.0:
            loss = loss * terms[0][1]
        for dim, weight in terms[1:]:
            part = term(dim)[0]
            parts.append(part)
            loss = loss + weight * part

        with torch.no_grad():
            correct = self._correct(q, cand, labels, tau, cand_ids, extra)
            b_local = torch.tensor(float(B), device=q.device)
            totals = torch.stack(
                [loss.detach().float() * B, correct.float(), b_local]
                + [p.detach().float() * B for p in parts]
            )
            totals = all_reduce_sum(totals) if distributed else totals
        n = totals[2].clamp_min(1)
        stats = {
            "loss": totals[0] / n,
            "accuracy": totals[1] / n,
            "temperature": tau.detach(),
            "queries": torch.tensor(float(b_global)),
            "candidates": torch.tensor(float(cand.shape[0] + (K if extra is not None else 0))),
        }
        if len(terms) > 1:
            for (dim, _), total in zip(terms, totals[3:], strict=True):
                stats[f"loss_dim{dim if dim is not None else q.shape[1]}"] = total / n
        if distributed:
            loss = loss * (B * world / b_global)
        return loss, stats

    @staticmethod
    def _correct(
        q: Tensor,
        cand: Tensor,
        labels: Tensor,
        tau: Tensor,
        cand_ids: Tensor | None,
        extra: Tensor | None,
        rows: int = 1024,
    ) -> Tensor:
        """Number of local queries whose positive has the highest logit (false negatives excluded)."""
        hits = torch.zeros((), dtype=torch.int64, device=q.device)
        for start in range(0, q.shape[0], rows):
            sl = slice(start, start + rows)
            s = (q[sl].float() @ cand.float().T) / tau.float()
            lab = labels[sl]
            if cand_ids is not None:
                dup = cand_ids[None, :] == cand_ids[lab][:, None]
                dup[torch.arange(s.shape[0], device=s.device), lab] = False
                s = s.masked_fill(dup, float("-inf"))
            if extra is not None:
                s = torch.cat([s, extra[sl].float()], dim=1)
            hits += (s.argmax(dim=1) == lab).sum()
        return hits
