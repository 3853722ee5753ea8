"""Where this process stands among the ranks, and the collectives training and evaluation use.

:func:`rank_and_world` is the one place that asks ``torch.distributed`` for rank and world size.
Training gathers embeddings for the contrastive loss with :func:`gather_with_grad` and friends;
evaluation uses a :class:`DistContext` (rank, world size and the device its collectives run on).

All helpers are no-ops in a single process (or when ``torch.distributed`` is not initialised), so the
loss module runs unchanged on one device. Gathering with autograd uses PyTorch's functional
collectives: the backward of an all-gather is a reduce-scatter (sum), so the gradient that reaches a
rank's local rows is the sum of what every rank's loss sends back to them.

Ranks may hold different numbers of rows (the last, short batch of an epoch): sizes are exchanged
first, rows are padded to the largest size, gathered, and the padding is cut out again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as fcol
from torch import Tensor

T = TypeVar("T")


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
    sizes = fcol.all_gather_single(local, 0, _world())
    return [int(s) for s in sizes.tolist()]


def _gather_rows(x: Tensor, sizes: list[int], autograd: bool) -> Tensor:
    top = max(sizes)
    if x.shape[0] < top:
        pad = x.new_zeros((top - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    if autograd:
        out = fcol.all_gather_single_autograd(x.contiguous(), 0, _world())
    else:
        out = fcol.all_gather_single(x.contiguous(), 0, _world())
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
    out = fcol.all_reduce(x.detach(), "sum", _world())
    return fcol.wait_tensor(out) if isinstance(out, fcol.AsyncCollectiveTensor) else out


@dataclass(frozen=True)
class DistContext:
    """This process's place in the evaluation: rank, world size and the device collectives use."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def current(cls) -> DistContext:
        """The default process group if one is initialised, else a single process."""
        if not is_distributed():
            return cls()
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        return cls(*rank_and_world(), device)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def broadcast_tensor(self, t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """Rank 0's tensor ``t`` (of the agreed ``shape``) on every rank, on this context's device."""
        if not self.distributed:
            assert t is not None
            return t
        buf = (
            t.to(self.device, dtype)
            if self.rank == 0 and t is not None
            else torch.empty(shape, dtype=dtype, device=self.device)
        )
        dist.broadcast(buf, src=0)
        return buf

    def max_int(self, value: int) -> int:
        """The maximum of ``value`` over ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def all_gather_rows(self, local: Tensor, counts: list[int]) -> Tensor:
        """Concatenate every rank's ``local`` rows in rank order (``counts[r]`` rows on rank r).

        Ranks may hold different numbers of rows (even none): rows are padded to the largest count.
        """
        if not self.distributed:
            return local
        width = local.shape[1]
        most = max(counts)
        padded = torch.zeros(most, width, dtype=local.dtype, device=self.device)
        padded[: local.shape[0]] = local.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])


def _world() -> dist.ProcessGroup:
    """The default process group (only called once a group is initialised)."""
    group = dist.group.WORLD
    assert group is not None, "torch.distributed is not initialised"
    return group
