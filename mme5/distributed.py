"""Cross-rank gathering for the contrastive loss.

All helpers are no-ops in a single process (or when ``torch.distributed`` is not initialised), so the
loss module runs unchanged on one device. Gathering with autograd uses PyTorch's functional
collectives: the backward of an all-gather is a reduce-scatter (sum), so the gradient that reaches a
rank's local rows is the sum of what every rank's loss sends back to them.

Ranks may hold different numbers of rows (the last, short batch of an epoch): sizes are exchanged
first, rows are padded to the largest size, gathered, and the padding is cut out again.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as fcol
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group is initialised and holds more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_sizes(n: int, device: torch.device) -> list[int]:
    """The row count ``n`` of every rank, in rank order."""
    if not is_distributed():
        return [n]
    local = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = fcol.all_gather_single(local, 0, dist.group.WORLD)
    return [int(s) for s in sizes.tolist()]


def _gather_rows(x: Tensor, sizes: list[int], autograd: bool) -> Tensor:
    top = max(sizes)
    if x.shape[0] < top:
        pad = x.new_zeros((top - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    if autograd:
        out = fcol.all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)
    else:
        out = fcol.all_gather_single(x.contiguous(), 0, dist.group.WORLD)
    out = fcol.wait_tensor(out) if isinstance(out, fcol.AsyncCollectiveTensor) else out
    if all(s == top for s in sizes):
        return out
    return torch.cat([out[r * top : r * top + s] for r, s in enumerate(sizes)], dim=0)


def gather_with_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``x`` (rows on dim 0) from all ranks in rank order, keeping autograd.

    The gradient of the result flows back to every rank's own rows (summed over ranks).
    ``sizes`` (from :func:`gather_sizes`) may be passed when already known.
    """
    if not is_distributed():
        return x
    sizes = sizes if sizes is not None else gather_sizes(x.shape[0], x.device)
    return _gather_rows(x, sizes, autograd=True)


def gather_no_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate ``x`` from all ranks in rank order, without autograd (ids, labels, counters)."""
    if not is_distributed():
        return x
    sizes = sizes if sizes is not None else gather_sizes(x.shape[0], x.device)
    return _gather_rows(x.detach(), sizes, autograd=False)


def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks (a new tensor, no autograd)."""
    if not is_distributed():
        return x.detach().clone()
    out = fcol.all_reduce(x.detach(), "sum", dist.group.WORLD)
    return fcol.wait_tensor(out) if isinstance(out, fcol.AsyncCollectiveTensor) else out
