"""The few collectives evaluation needs, working alone or inside an initialised process group."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistContext:
    """This process's place in the evaluation: rank, world size and the device collectives use."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def current(cls) -> DistContext:
        """The default process group if one is initialised, else a single process."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        return cls(dist.get_rank(), dist.get_world_size(), device)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast_object(self, obj: object) -> object:
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
        buf = t.to(self.device, dtype) if self.rank == 0 and t is not None else torch.empty(shape, dtype=dtype,
                                                                                            device=self.device)
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
        return torch.cat([p[:n] for p, n in zip(parts, counts)])
