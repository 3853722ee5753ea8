"""The public ``infonce`` entry point and the choice of implementation."""

from __future__ import annotations

import torch

from mme5.errors import ConfigError

from .config import InfoNCEConfig, resolve_config
from .inputs import check_inputs
from .reference import infonce_reference

IMPLS = ("auto", "reference", "chunked", "triton")


def infonce(
    q: torch.Tensor,
    c: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor = 0.02,
    *,
    symmetric: bool = False,
    candidate_ids: torch.Tensor | None = None,
    extra_logits: torch.Tensor | None = None,
    impl: str = "auto",
    config: InfoNCEConfig | None = None,
) -> torch.Tensor:
    """Mean InfoNCE loss of B queries against N candidates (fp32 scalar).

    Args:
        q: query embeddings [B, D] (float32, float16 or bfloat16).
        c: candidate embeddings [N, D], same dtype and device as ``q``.
        labels: int64 [B]; the positive of query i is ``c[labels[i]]`` (any index in c).
        temperature: float or 0-d tensor (gradient flows to it); logits = q c^T / temperature.
        symmetric: also the candidate -> query direction for each query's positive; the result is the
            mean of both directions. Queries whose positive has the same content are left out of each
            other's column denominators.
        candidate_ids: int64 [N] content ids; a candidate with the same id as a query's positive (but a
            different index) is not a negative of that query.
        extra_logits: [B, K] extra negative logits per query, already divided by the temperature; they
            join that query's log-sum-exp and receive gradients.
        impl: "reference" (materialises B x N logits), "chunked" (pure PyTorch, row chunks, recompute
            in backward), "triton" (fused GPU kernels), or "auto" (triton on CUDA, chunked elsewhere).
        config: how chunked and triton run (``mme5.kernels.InfoNCEConfig``: the one-pass switch, chunk
            rows, Triton tiles and one-pass settings); None, or any field left None, takes the defaults
            of where the kernels run. The reference ignores it.
    """
    if impl not in IMPLS:
        raise ConfigError(f"infonce: unknown impl {impl!r}; expected one of {', '.join(IMPLS)}")
    config = resolve_config(config)
    x = check_inputs(q, c, labels, temperature, symmetric, candidate_ids, extra_logits)
    if impl == "auto":
        impl = "triton" if q.is_cuda else "chunked"
    if impl == "reference":
        return infonce_reference(x)
    if impl == "chunked":
        from .chunked import infonce_chunked

        return infonce_chunked(x, config)
    from .triton_infonce import infonce_triton

    return infonce_triton(x, config)
