"""``trainer.strategy: fsdp2``: FSDP2 data parallelism over every device, through Lightning.

Lightning's ``ModelParallelStrategy`` builds a (data-parallel x tensor-parallel) device mesh and
leaves the sharding to the module's ``configure_model`` (``EmbeddingModule`` shards each transformer
block with ``fully_shard``). :class:`FSDP2Strategy` fixes the mesh to all devices x 1 and writes
single-file, full-state checkpoints by default, so ``mme5 export`` and ``--ckpt_path`` take them as
they take DDP's. Importing this module registers the name ``fsdp2``.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 over every process (data-parallel size = world size, no tensor parallelism).

    Args:
        save_distributed_checkpoint: write one checkpoint folder of shards per save (faster for large
            models; consolidate with ``python -m lightning.fabric.utilities.consolidate_checkpoint``)
            instead of one full-state file.
        **kwargs: the other arguments of ``ModelParallelStrategy`` (process group backend, timeout).
    """

    strategy_name = "fsdp2"

    def __init__(self, save_distributed_checkpoint: bool = False, **kwargs: Any) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


if "fsdp2" not in StrategyRegistry:
    StrategyRegistry.register("fsdp2", FSDP2Strategy, description="FSDP2 data parallelism, full-state checkpoints")
