"""What each distributed strategy needs from an embedding model, in one place.

* ``trainer.strategy: fsdp2`` (:class:`FSDP2Strategy`): FSDP2 data parallelism over every device
  through Lightning's ``ModelParallelStrategy``; :func:`prepare_for_strategy` shards each transformer
  block with ``fully_shard``. Full-state single-file checkpoints by default, so ``mme5 export`` and
  ``--ckpt_path`` take them as they take DDP's.
* ``trainer.strategy: fsdp`` (:class:`BlockwiseFSDPStrategy`): Lightning's FSDP with one unit per
  transformer block when no ``auto_wrap_policy`` is given.
* Lockstep forwards (:func:`needs_lockstep`) under FSDP, FSDP2 and DeepSpeed ZeRO-3, which gather a
  block's weights when it runs and so need the same module calls on every rank.
* GradCache's gradient synchronisation (:func:`check_grad_cache_support`, :func:`gradient_sync_off`,
  :func:`parameters_to_touch`).

Importing this module registers ``fsdp2`` and points ``fsdp`` / ``fsdp_cpu_offload`` at
:class:`BlockwiseFSDPStrategy`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
    Strategy,
    StrategyRegistry,
)
from torch import Tensor, nn

from mme5.errors import ConfigError


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 over every process (data-parallel size = world size, no tensor parallelism).

    Lightning's ``"auto"`` sizes make a (nodes x processes per node) mesh; this strategy's
    :attr:`device_mesh` is instead one data-parallel dimension over all processes, which is what the
    model is sharded over and what the distributed sampler splits the data by.

    Args:
        save_distributed_checkpoint: write one checkpoint folder of shards per save (faster for large
            models; consolidate with ``python -m lightning.fabric.utilities.consolidate_checkpoint``)
            instead of one full-state file.
        **kwargs: the other arguments of ``ModelParallelStrategy`` (process group backend, timeout).
    """

    strategy_name = "fsdp2"

    def __init__(self, save_distributed_checkpoint: bool = False, **kwargs: Any) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size="auto",
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )
        self._world_mesh: Any = None

    @property
    def device_mesh(self) -> Any:
        """A one-dimensional ``("data_parallel",)`` mesh over every process (built on first use)."""
        if self._world_mesh is None:
            from torch.distributed.device_mesh import init_device_mesh

            self._world_mesh = init_device_mesh(
                self.root_device.type, (self.world_size,), mesh_dim_names=("data_parallel",)
            )
        return self._world_mesh


class BlockwiseFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP; without an ``auto_wrap_policy`` each transformer block becomes one FSDP unit.

    FSDP without a policy would make the whole model one unit, gathered whole in every forward. The
    block classes are the model's :meth:`sharding_units` (``EmbeddingModule.sharding_units``), known
    only once the model exists, so the policy is chosen in :meth:`setup`.
    """

    def wrap_policy(self, module: nn.Module) -> Any:
        """The policy FSDP wraps ``module`` with: the user's, else one unit per block class, else None."""
        given = self.kwargs.get("auto_wrap_policy")
        sharding_units: Any = getattr(module, "sharding_units", None)
        units = sharding_units() if given is None and sharding_units is not None else []
        if not units:
            return given
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        return ModuleWrapPolicy({type(u) for u in units})

    def setup(self, trainer: Any) -> None:
        """Choose the wrap policy for the trainer's model, then set up as Lightning's FSDP does."""
        policy = self.wrap_policy(trainer.lightning_module)
        if policy is not None:
            self.kwargs["auto_wrap_policy"] = policy
        super().setup(trainer)


def needs_lockstep(strategy: Strategy) -> bool:
    """Whether ``strategy`` gathers a block's weights when the block runs (FSDP, FSDP2, ZeRO-3), so
    that every rank has to run the same blocks in the same order."""
    if isinstance(strategy, DeepSpeedStrategy):
        return (strategy.config or {}).get("zero_optimization", {}).get("stage") == 3
    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


def prepare_for_strategy(strategy: Strategy, encoder: Any, loss: nn.Module) -> None:
    """Ready the encoder (an :class:`mme5.model.encoder.Encoder`) and the loss for ``strategy``.

    Switches the encoder to lockstep forwards where :func:`needs_lockstep`; under
    ``ModelParallelStrategy`` (``fsdp2``) shards, once, with ``fully_shard`` over the data-parallel
    mesh: each transformer block, then the encoder's remaining weights, then the loss when its
    temperature learns (FSDP2 cannot shard a 0-d parameter, hence its ``log_temperature`` of shape [1]).
    Other strategies wrap the model themselves.
    """
    encoder.lockstep = needs_lockstep(strategy)
    if not isinstance(strategy, ModelParallelStrategy):
        return
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(encoder, FSDPModule):  # configure_model runs again for each trainer stage
        return
    mesh = strategy.device_mesh
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise ConfigError(
            "ModelParallelStrategy: mme5 shards data-parallel only (FSDP2); set "
            "tensor_parallel_size: 1 or use trainer.strategy: fsdp2"
        )
    if encoder.quantization is not None:
        raise ConfigError(
            "ModelParallelStrategy: a quantized backbone cannot be sharded; set "
            "model.encoder.quantization: null or use ddp"
        )
    dp = mesh["data_parallel"] if "data_parallel" in names else mesh
    for unit in encoder.sharding_units():
        fully_shard(unit, mesh=dp)
    fully_shard(encoder, mesh=dp)
    if any(p.requires_grad for p in loss.parameters()):
        fully_shard(loss, mesh=dp)


def check_grad_cache_support(strategy: Strategy) -> None:
    """Raise :class:`ConfigError` unless GradCache can drive its backward passes under ``strategy``
    (one device, DDP, FSDP2; DeepSpeed's engine owns the backward and FSDP1 cannot skip a sync)."""
    if not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy, ModelParallelStrategy)):
        raise ConfigError(
            f"model.grad_cache_chunk works with single-device, DDP and FSDP2 strategies, not "
            f"{type(strategy).__name__}; set grad_cache_chunk: null or trainer.strategy: ddp or fsdp2"
        )


@contextmanager
def gradient_sync_off(strategy: Strategy, modules: Sequence[nn.Module]) -> Iterator[None]:
    """Backward passes in the body accumulate gradients locally, without reducing them across ranks.

    DDP: Lightning's ``block_backward_sync`` (DDP's ``no_sync``), read by each ``manual_backward``.
    FSDP2: ``set_requires_gradient_sync(False)`` on each of ``modules`` that is sharded, on again after;
    the next backward with sync on reduces everything accumulated. One device: nothing to do.
    """
    from torch.distributed.fsdp import FSDPModule

    sharded = [m for m in modules if isinstance(m, FSDPModule)]
    for m in sharded:
        m.set_requires_gradient_sync(False)
    try:
        if isinstance(strategy, DDPStrategy):
            with strategy.block_backward_sync():
                yield
        else:
            yield
    finally:
        for m in sharded:
            m.set_requires_gradient_sync(True)


def parameters_to_touch(strategy: Strategy, module: nn.Module) -> list[Tensor]:
    """Trainable parameters that GradCache's last backward must reach: DDP's reducer reduces (and
    treats as ready) only what the synchronising backward's graph reaches, even when an earlier,
    unsynchronised backward gave a parameter its gradient; other strategies need none."""
    if not isinstance(strategy, DDPStrategy):
        return []
    return [p for p in module.parameters() if p.requires_grad]


def _register() -> None:
    if "fsdp2" not in StrategyRegistry:
        StrategyRegistry.register(
            "fsdp2", FSDP2Strategy, description="FSDP2 data parallelism, full-state checkpoints"
        )
    for name in FSDPStrategy.get_registered_strategies():
        entry = StrategyRegistry[name]
        if entry["strategy"] is FSDPStrategy:
            StrategyRegistry.register(
                name,
                BlockwiseFSDPStrategy,
                description=entry["description"],
                override=True,
                **entry["init_params"],
            )


_register()
