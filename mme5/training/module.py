"""The LightningModule that trains an Encoder contrastively: loss, optimiser, schedule, GradCache.

Distributed strategies (DDP, FSDP2 as ``fsdp2``, FSDP, DeepSpeed) are chosen in the Trainer config; the
module is prepared for them in :meth:`EmbeddingModule.configure_model` (what each strategy needs is in
:mod:`mme5.training.strategies`) and needs ``gather`` in the loss settings to pool negatives across ranks.
With ``grad_cache_chunk`` set, each step encodes the batch in chunks twice (no-grad, then with autograd
under replayed RNG state), so the in-batch negative pool no longer costs activation memory; the module
then optimises manually (:meth:`EmbeddingModule.setup`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from mme5.errors import ConfigError
from mme5.model.encoder import Encoder
from mme5.model.settings import EncoderSettings
from mme5.records import Side
from mme5.training import strategies
from mme5.training.gradcache import grad_cache_step, split_rows
from mme5.training.losses import ContrastiveLoss, LossSettings


@dataclass
class OptimizerSettings:
    """AdamW (the ``model.optimizer`` group)."""

    lr: float = 1e-5
    """Peak learning rate (mmE5: 1e-5)."""
    weight_decay: float = 0.0
    """Decoupled weight decay, applied to matrices only (not to biases, norms or the temperature)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam moment decay rates."""
    eps: float = 1e-8
    """Adam epsilon."""


@dataclass
class ScheduleSettings:
    """Learning-rate schedule (the ``model.schedule`` group): linear warm-up, then decay to 0."""

    warmup: float = 0.05
    """Warm-up length: a fraction of all optimiser steps when < 1 (mmE5: 0.05), else a number of steps."""
    decay: Literal["linear", "constant"] = "linear"
    """After warm-up: ``linear`` decay to 0 at the last step, or ``constant``."""


def _as(cls: type, value: Any) -> Any:
    """Accept a settings dataclass or its dict form (as stored in a checkpoint's hyperparameters)."""
    if isinstance(value, cls) or value is None:
        return value
    if isinstance(value, dict):
        return cls(**value)  # EncoderSettings turns a nested lora dict into LoraSettings itself
    raise ConfigError(f"expected {cls.__name__} settings, got {type(value).__name__}")


def warmup_linear(step: int, total: int, warmup: int, decay: str = "linear") -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


class EmbeddingModule(L.LightningModule):
    """Contrastive training of a vision-language embedding model (mmE5 recipe by default).

    The distributed strategy is the Trainer's (``ddp``, ``fsdp2``, ``fsdp``, ``deepspeed_stage_2``; see
    :meth:`configure_model`); with ``loss.gather`` the negatives of all ranks are pooled. GradCache
    drives the backward passes itself and therefore runs on one device, under DDP or under FSDP2.

    Args:
        encoder: the backbone, pooling, adapters and precision of the Encoder.
        loss: the InfoNCE loss (temperature, hard negatives shared or own, cross-rank gathering).
        optimizer: AdamW settings.
        schedule: warm-up and decay of the learning rate.
        grad_cache_chunk: GradCache chunk size in rows per forward (queries and candidates are chunked
            separately); null turns GradCache off. Works on one device, with DDP and with FSDP2.
        log_every_n_steps_skips: how often (optimiser steps) to log the data module's skip counters.
    """

    def __init__(
        self,
        # settings instances as defaults: never mutated, and jsonargparse prints them in --help
        encoder: EncoderSettings = EncoderSettings(),  # noqa: B008
        loss: LossSettings = LossSettings(),  # noqa: B008
        optimizer: OptimizerSettings = OptimizerSettings(),  # noqa: B008
        schedule: ScheduleSettings = ScheduleSettings(),  # noqa: B008
        grad_cache_chunk: int | None = None,
        log_every_n_steps_skips: int = 50,
    ) -> None:
        super().__init__()
        encoder, loss = _as(EncoderSettings, encoder), _as(LossSettings, loss)
        optimizer, schedule = _as(OptimizerSettings, optimizer), _as(ScheduleSettings, schedule)
        if grad_cache_chunk is not None and grad_cache_chunk < 1:
            raise ConfigError(f"model.grad_cache_chunk must be >= 1 or null, got {grad_cache_chunk}")
        if schedule.warmup < 0:
            raise ConfigError(f"model.schedule.warmup must be >= 0, got {schedule.warmup}")
        self.save_hyperparameters(
            {
                "encoder": asdict(encoder),
                "loss": asdict(loss),
                "optimizer": asdict(optimizer),
                "schedule": asdict(schedule),
                "grad_cache_chunk": grad_cache_chunk,
                "log_every_n_steps_skips": log_every_n_steps_skips,
            }
        )
        self.encoder_settings, self.loss_settings = encoder, loss
        self.optimizer_settings, self.schedule_settings = optimizer, schedule
        self.grad_cache_chunk = grad_cache_chunk
        self.log_every_n_steps_skips = log_every_n_steps_skips
        self.encoder = Encoder(encoder)
        self.encoder.train()  # transformers loads models in eval mode; training wants dropout on
        self.loss = ContrastiveLoss.from_settings(loss)
        self._step_start: float | None = None

    # ---- evaluation entry point -------------------------------------------------------------------
    def embed_sides(self, sides: list[Side], batch_size: int = 32) -> Tensor:
        """L2-normalised embeddings [n, D] (float32, CPU) of ``sides``, without gradients (evaluation)."""
        return self.encoder.encode_sides(sides, batch_size=batch_size)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """Model inputs -> embeddings [n, D]."""
        return self.encoder(inputs)

    # ---- training ---------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Prepare the encoder for the Trainer's strategy: lockstep forwards under sharded strategies,
        ``fully_shard`` of each block under ``fsdp2`` (``strategies.prepare_for_strategy``)."""
        if self._trainer is not None:
            strategies.prepare_for_strategy(self.trainer.strategy, self.encoder, self.loss)

    def sharding_units(self) -> list[nn.Module]:
        """The encoder's transformer blocks, one FSDP unit each (read by the ``fsdp`` strategy)."""
        return self.encoder.sharding_units()

    def setup(self, stage: str) -> None:
        """With GradCache, switch to manual optimisation (:meth:`_grad_cache_step`).

        A GradCache step runs several backward passes of its own, which Lightning's automatic loop
        cannot express. Lightning refuses ``Trainer(gradient_clip_val, accumulate_grad_batches)`` for
        a module that optimises manually, as it would not apply them; this module applies exactly those
        trainer settings itself, so it switches here, after that check, and the trainer config keeps
        meaning the same with and without GradCache.
        """
        if self.grad_cache_chunk is not None and self._trainer is not None:
            strategies.check_grad_cache_support(self.trainer.strategy)
            self.automatic_optimization = False

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """One contrastive step on a :class:`~mme5.data.collate.Batch`; returns the loss (to backpropagate,
        unless GradCache has done so)."""
        k = int(batch["num_negatives"])
        ids = batch.get("candidate_ids")

        def loss_fn(q: Tensor, c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            return self.loss(q, c, k, ids)

        if self.automatic_optimization:
            q = self.encoder(batch["query"])
            c = self.encoder(batch["candidates"])
            loss, stats = loss_fn(q, c)
        else:
            loss, stats = self._grad_cache_step(batch, batch_idx, loss_fn)
        n = len(batch["ids"]) if "ids" in batch else batch["query"]["input_ids"].shape[0]
        self.log("train/loss", stats["loss"], prog_bar=True, batch_size=n)
        self.log("train/accuracy", stats["accuracy"], batch_size=n)
        self.log("train/temperature", stats["temperature"], batch_size=n)
        self.log("train/candidates", stats["candidates"], batch_size=n)
        for key in (k for k in stats if k.startswith("loss_dim")):  # Matryoshka: each dimension's term
            self.log(f"train/{key}", stats[key], batch_size=n)
        self._global_batch = float(stats["queries"])
        return loss

    def _grad_cache_step(
        self, batch: dict[str, Any], batch_idx: int, loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict]]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """GradCache backward passes, then, at the end of an accumulation window, the optimiser step.

        Lightning's rules for automatic optimisation, applied by hand: gradients of
        ``trainer.accumulate_grad_batches`` batches are summed (each loss divided by that number) and
        reduced across ranks in the window's last backward only; the window also ends at the epoch's
        last batch; clipping follows the trainer's settings (:meth:`on_before_optimizer_step`); the
        schedule steps with the optimiser; fp16 loss scaling is ``manual_backward``'s and the
        optimiser step's.
        """
        trainer, strategy = self.trainer, self.trainer.strategy
        accumulate = trainer.accumulate_grad_batches
        window_ends = (
            (batch_idx + 1) % accumulate == 0
            or trainer.is_last_batch
            or batch_idx + 1 == trainer.num_training_batches
        )
        chunk = int(self.grad_cache_chunk)  # type: ignore[arg-type]
        step = grad_cache_step(
            encode=self.encoder,
            loss_fn=loss_fn,
            query_chunks=split_rows(batch["query"], chunk, self.encoder.select_rows),
            candidate_chunks=split_rows(batch["candidates"], chunk, self.encoder.select_rows),
            loss_params=[p for p in self.loss.parameters() if p.requires_grad],
            backward=lambda loss: self.manual_backward(loss / accumulate),
            no_sync=lambda: strategies.gradient_sync_off(strategy, (self.encoder, self.loss)),
            sync=window_ends,
            touch=strategies.parameters_to_touch(strategy, self.encoder),
            device=self.encoder.device,
        )
        if window_ends:
            optimizer = self.optimizers()
            optimizer.step()  # type: ignore[union-attr]
            optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            scheduler = self.lr_schedulers()
            scheduler.step()  # type: ignore[union-attr]
        return step.loss, step.stats

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_start is not None:
            dt = time.perf_counter() - self._step_start
            if dt > 0:
                self.log("train/samples_per_sec", getattr(self, "_global_batch", 0.0) / dt, batch_size=1)
        every = max(1, self.log_every_n_steps_skips)
        if self.global_step % every == 0:
            self._log_skips(batch)

    def _log_skips(self, batch: Any) -> None:
        counts: dict[str, int] = {}
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "skip_counts"):
            counts.update(dm.skip_counts())
        if isinstance(batch, dict) and isinstance(batch.get("skipped"), dict):
            for k, v in batch["skipped"].items():
                counts[k] = counts.get(k, 0) + int(v)
        # counts of this rank (reasons can differ between ranks, so they are not all-reduced)
        for reason, value in counts.items():
            self.log(f"data/skipped_{reason}", float(value), batch_size=1, sync_dist=False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.log("train/grad_norm", norm, batch_size=1)
        if not self.automatic_optimization:  # after the norm is logged, as Lightning's automatic clipping
            self.clip_gradients(optimizer)  # the trainer's gradient_clip_val / _algorithm (none when unset)

    # ---- optimiser --------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() >= 2 else no_decay).append(p)
        if not decay and not no_decay:
            raise ConfigError("nothing to train: every parameter of the model is frozen")
        o = self.optimizer_settings
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=o.lr, betas=(o.betas[0], o.betas[1]), eps=o.eps
        )
        total = 1
        if self._trainer is not None:
            estimated = self.trainer.estimated_stepping_batches
            if not math.isfinite(estimated):
                raise ConfigError(
                    "the learning-rate schedule needs a known length: set trainer.max_steps "
                    "(the training data has no known number of batches)"
                )
            total = max(1, int(estimated))
        w = self.schedule_settings.warmup
        warmup = math.ceil(w * total) if w < 1 else int(w)
        decay_kind = self.schedule_settings.decay
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_linear(s, total, warmup, decay_kind))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
