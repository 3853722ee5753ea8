"""``ShardDataModule``: weighted shard-set mixtures streamed into contrastive batches, resumable."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch.distributed as dist

from mme5.data.collate import MAX_IMAGE_PIXELS
from mme5.data.pipeline import EpochPlan, MixtureDataset, ReaderPosition, one_source_capacity
from mme5.data.resume import STATE_VERSION, PositionTracker, ResumableLoader
from mme5.data.shardsets import ResolvedSet, ShardSet, fingerprint, resolve
from mme5.data.skips import DataError, format_counts
from mme5.distributed import is_distributed, rank_and_world
from mme5.records import Example

log = logging.getLogger("mme5.data")


@dataclass
class DemoSettings:
    """The generated demo corpus (``mme5.demo``) to train on when no ``train`` set is given.

    Args:
        root: folder the demo corpus is generated into (once; later runs reuse it).
        seed: seed of the generated corpus.
        train_samples: training samples to generate (None: the demo's default).
    """

    root: str = ".mme5-demo"
    seed: int = 0
    train_samples: int | None = None


class ShardDataModule(L.LightningDataModule):
    """Streams WebDataset shards of mme5 Examples as contrastive batches.

    Several shard sets are mixed by weight; every rank yields the same, known number of batches per
    epoch (``epoch_samples`` or the sum of the sets' sizes, over world size x batch size); the data
    position of every rank and worker is saved in the Lightning checkpoint, so a resumed fit sees
    exactly the batches an uninterrupted one would; bad samples and shards are skipped and counted
    (``skip_counts()``), and a data set with nothing readable stops with one error naming it.

    Args:
        model: backbone for the default Collator (model folder, hub id, or ``tiny-<family>``).
        train: the shard sets to mix (spec, weight, name); empty with ``demo`` set: the demo shards.
        batch_size: examples per batch on each rank.
        num_workers: DataLoader worker processes per rank (0: read in the training process).
        max_length: maximum text tokens per side (Collator).
        max_negatives: hard negatives kept per query (None: all).
        shuffle_buffer: samples in each shard set's shuffle buffer per worker.
        shuffle_shards: shards read interleaved per shuffle window; resuming re-reads at most one window.
        seed: seed of shard dealing, mixing and shuffling (epoch e uses a new order derived from it).
        resampled: draw shards with replacement (no shard-count requirement, no exact coverage).
        epoch_samples: samples per epoch over all ranks (None: the sum of the sets' sizes).
        max_image_pixels: images with more pixels are refused before decoding (skipped, counted).
        max_image_side: images are downscaled so that their longest side is at most this.
        demo: generate and use the demo corpus when ``train`` is empty.
        collate_fn: override of the Collator (tests); receives a list of Examples.
        prefetch_factor: batches each worker prepares ahead.
        pin_memory: copy batches into pinned memory (faster host-to-GPU transfer).
        max_consecutive_skips: undecodable samples in a row from one set before the run stops.
        warn_interval_s: at most one warning per skip reason and worker in this many seconds.
        batch_from_one_source: every batch a rank yields holds samples of one shard set only (harder
            in-batch negatives; video / document sides never mixed with image sides), the set of each
            batch drawn in proportion to what is left of the sets' epoch quotas, whose totals follow
            the weights in whole batches. VLM2Vec-V2's ``homogeneous_batch_size_per_device`` (see
            :class:`mme5.data.pipeline.MixtureDataset`). Each set's share is cut to whole batches, so
            ``epoch_remainder()`` grows by up to ``batch_size - 1`` per set (plus up to
            ``world_size - 1`` batches); resume stays exact.
    """

    def __init__(
        self,
        model: str = "tiny-mllama",
        train: list[ShardSet] | None = None,
        batch_size: int = 32,
        num_workers: int = 2,
        max_length: int = 256,
        max_negatives: int | None = 16,
        shuffle_buffer: int = 1000,
        shuffle_shards: int = 4,
        seed: int = 0,
        resampled: bool = False,
        epoch_samples: int | None = None,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        max_image_side: int = 1024,
        demo: DemoSettings | None = None,
        collate_fn: Callable[[list[Example]], Any] | None = None,
        prefetch_factor: int = 2,
        pin_memory: bool = False,
        max_consecutive_skips: int = 1000,
        warn_interval_s: float = 30.0,
        batch_from_one_source: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise DataError(f"num_workers must be >= 0, got {num_workers}")
        if epoch_samples is not None and epoch_samples < 1:
            raise DataError(f"epoch_samples must be >= 1 or None, got {epoch_samples}")
        self.model = model
        self.train_sets = list(train or [])
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.max_length = max_length
        self.max_negatives = max_negatives
        self.shuffle_buffer = shuffle_buffer
        self.shuffle_shards = shuffle_shards
        self.seed = seed
        self.resampled = resampled
        self.epoch_samples = epoch_samples
        self.max_image_pixels = max_image_pixels
        self.max_image_side = max_image_side
        self.demo = demo
        self.collate_fn = collate_fn
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.max_consecutive_skips = max_consecutive_skips
        self.warn_interval_s = warn_interval_s
        self.batch_from_one_source = batch_from_one_source
        self.sets: list[ResolvedSet] = []
        self.tracker = PositionTracker()
        self._resume_state: dict[str, Any] | None = None
        self._epochs_started = 0
        self._epoch_offset = 0  # Lightning's epoch minus the data epoch (see _resumed_epoch)
        self._batch_shift = 0  # data batches of the current epoch before Lightning's batch 0
        self._setup_skips: dict[str, int] = {}

    # ---- data preparation -------------------------------------------------------------------------

    def _demo_sets(self) -> list[ShardSet]:
        from mme5.demo import ensure_demo_corpus  # lazy: the demo generator is not needed for real data

        assert self.demo is not None
        if self.demo.train_samples is not None:
            paths = ensure_demo_corpus(self.demo.root, self.demo.seed, train_samples=self.demo.train_samples)
        else:
            paths = ensure_demo_corpus(self.demo.root, self.demo.seed)
        return [ShardSet(paths.train_pattern, 1.0, "demo")]

    def prepare_data(self) -> None:
        """Once per node: generate the demo corpus if configured, and write missing ``sizes.json``."""
        sets = self.train_sets or (self._demo_sets() if self.demo is not None else [])
        resolve(sets, write_sizes_files=True)

    def setup(self, stage: str | None = None) -> None:
        """Resolve shard lists and sizes (every rank) and build the collate function."""
        if self.sets:
            return
        if not self.train_sets and self.demo is not None:
            self.train_sets = self._demo_sets()
        self.sets = resolve(self.train_sets, write_sizes_files=False)
        for rset in self.sets:
            for reason, url in rset.problems:
                self._setup_skips[reason] = self._setup_skips.get(reason, 0) + 1
                log.warning("data: shard set '%s': skipping shard '%s' (%s)", rset.label, url, reason)
        if self.collate_fn is None:
            from mme5.data.collate import Collator

            self.collate_fn = Collator(
                self.model,
                self.max_length,
                self.max_negatives,
                max_pixels=self.max_image_pixels,
                max_side=self.max_image_side,
            )
        log.info("data: %s", self.describe())

    # ---- sizes --------------------------------------------------------------------------------------

    def _distributed(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return rank_and_world()

    @property
    def samples_per_epoch(self) -> int:
        """Samples drawn per epoch over all ranks."""
        return self.epoch_samples if self.epoch_samples is not None else sum(s.samples for s in self.sets)

    def batches_per_rank(self, world_size: int | None = None) -> int:
        """Batches each rank yields per epoch (equal on every rank; the progress bar's total)."""
        world = world_size or self._distributed()[1]
        if self.batch_from_one_source:
            weights = [s.weight for s in self.sets]
            n = sum(one_source_capacity(self.samples_per_epoch, weights, self.batch_size)) // world
            if n < 1:
                raise DataError(
                    f"with batch_from_one_source, the sets' shares of an epoch of {self.samples_per_epoch} "
                    f"samples hold fewer than one whole batch of {self.batch_size} per rank for {world} "
                    "rank(s): lower batch_size or raise epoch_samples"
                )
            return n
        n = self.samples_per_epoch // (world * self.batch_size)
        if n < 1:
            raise DataError(
                f"an epoch of {self.samples_per_epoch} samples is less than one batch of "
                f"{self.batch_size} on each of {world} rank(s): lower batch_size or raise epoch_samples"
            )
        return n

    def epoch_remainder(self, world_size: int | None = None) -> int:
        """Samples of ``samples_per_epoch`` that an epoch does not draw: fewer than one batch per rank.

        An epoch draws ``world_size x batches_per_rank x batch_size`` samples; in epoch mode the rest of
        each set's shuffled order for the epoch (a different remainder every epoch) is left out. With
        ``batch_from_one_source`` each set's share is whole batches, so up to ``batch_size - 1`` more per
        set (and up to ``world_size - 1`` more batches) are left out.
        """
        world = world_size or self._distributed()[1]
        return self.samples_per_epoch - world * self.batches_per_rank(world) * self.batch_size

    def describe(self) -> str:
        parts = [
            f"'{s.label}' {len(s.urls)} shards {s.samples} samples weight {s.weight:g}" for s in self.sets
        ]
        return (
            f"{'; '.join(parts)}; {'resampled' if self.resampled else 'epoch'} mode, "
            f"{self.samples_per_epoch} samples per epoch"
            f"{', one set per batch' if self.batch_from_one_source else ''}"
        )

    # ---- loaders ----------------------------------------------------------------------------------

    def make_dataset(self) -> MixtureDataset:
        if not self.sets:
            self.setup("fit")
        assert self.collate_fn is not None
        return MixtureDataset(
            self.sets,
            self.batch_size,
            self.collate_fn,
            seed=self.seed,
            resampled=self.resampled,
            shuffle_buffer=self.shuffle_buffer,
            shuffle_shards=self.shuffle_shards,
            max_image_pixels=self.max_image_pixels,
            max_image_side=self.max_image_side,
            max_consecutive_skips=self.max_consecutive_skips,
            warn_interval_s=self.warn_interval_s,
            batch_from_one_source=self.batch_from_one_source,
            epoch_samples=self.samples_per_epoch,
        )

    def loader(self, rank: int | None = None, world_size: int | None = None) -> ResumableLoader:
        """The train loader for one rank (``rank``/``world_size`` override the trainer's, for tests)."""
        if rank is not None or world_size is not None:
            rank, world = rank or 0, world_size or 1
        else:
            rank, world = self._distributed()
        dataset = self.make_dataset()
        left = self.epoch_remainder(world)
        if left:
            log.info(
                "data: %d of the %d samples per epoch are not drawn in each epoch (batches are full and "
                "equal on every rank: %d x %d x %d)",
                left,
                self.samples_per_epoch,
                world,
                self.batches_per_rank(world),
                self.batch_size,
            )
        return ResumableLoader(
            dataset,
            functools.partial(self._next_plan, rank=rank, world=world),
            self.tracker,
            self.batches_per_rank(world),
            self.num_workers,
            self.prefetch_factor,
            self.pin_memory,
        )

    def train_dataloader(self) -> ResumableLoader:
        return self.loader()

    def _current_epoch(self, rank: int) -> int:
        trainer = self.trainer
        if trainer is not None:
            return trainer.current_epoch - self._epoch_offset
        if self._resume_state is not None:
            return int(self._resume_state["ranks"][rank]["epoch"])
        return self._epochs_started

    def _next_plan(self, epoch: int | None = None, rank: int = 0, world: int = 1) -> EpochPlan:
        workers = max(1, self.num_workers)
        batches = self.batches_per_rank(world)
        state, self._resume_state = self._resume_state, None
        self._batch_shift = 0
        if state is not None and epoch is None and self.trainer is not None:
            epoch = self._resumed_epoch(state, rank, batches)
        if epoch is None:
            epoch = self._current_epoch(rank)
        self._epochs_started = epoch + 1
        plan = EpochPlan(epoch, rank, world, workers, batches)
        if state is not None:
            mine = state["ranks"][rank]
            self.tracker.skips.clear()
            self.tracker.skips.update(mine.get("skips", {}))
            if mine["epoch"] == epoch:
                plan.start_batch = int(mine["batches"])
                plan.resume = {int(w): ReaderPosition.from_dict(p) for w, p in mine["workers"].items()}
                log.info("data: resuming epoch %d of rank %d at batch %d", epoch, rank, plan.start_batch)
        return plan

    def _resumed_epoch(self, state: dict[str, Any], rank: int, batches: int) -> int:
        """The data epoch a resumed fit continues, and the offset of Lightning's epochs to the data's.

        A fit stopped by ``max_steps`` in the middle of an epoch ends that epoch for Lightning (its loop
        state says the epoch completed), while the data state says how far the epoch got. Resuming it
        (to train longer) continues the same data epoch, so the resumed fit sees exactly the batches an
        uninterrupted one would: Lightning counts the continued epoch as a new one (its epoch numbers
        are one higher from then on, ``max_epochs`` is raised by as much), and the offset is kept in
        later checkpoints.
        """
        trainer: Any = self.trainer
        mine = state["ranks"][rank]
        saved, done = int(mine["epoch"]), int(mine["batches"])
        offset = int(state.get("epoch_offset", 0))
        lightning_epoch = int(trainer.current_epoch)
        if lightning_epoch - offset == saved + 1 and done < batches:
            offset += 1
            self._batch_shift = done  # Lightning counts this epoch's batches from 0, the data from `done`
            log.info(
                "data: the checkpoint's fit stopped after batch %d of the %d of data epoch %d; training "
                "continues that epoch (Lightning's epoch %d)",
                done,
                batches,
                saved,
                lightning_epoch,
            )
        if offset != self._epoch_offset:
            fit_loop = trainer.fit_loop
            if isinstance(fit_loop.max_epochs, int) and fit_loop.max_epochs >= 0:
                fit_loop.max_epochs += offset - self._epoch_offset
            self._epoch_offset = offset
        return lightning_epoch - offset

    # ---- checkpoint state ---------------------------------------------------------------------------

    def _consumed_batches(self) -> int:
        trainer = self.trainer
        if trainer is not None:
            progress: Any = trainer.fit_loop.epoch_loop.batch_progress.current
            return int(progress.processed) + self._batch_shift
        return self.tracker.yielded

    def state_dict(self) -> dict[str, Any]:
        """The data position of every rank and worker (collective under DDP: all ranks call it)."""
        if not self.sets:
            return {}
        local = self.tracker.position_after(min(self._consumed_batches(), self.tracker.yielded))
        world = self._distributed()[1]
        ranks: list[Any] = [local]
        if world > 1 and is_distributed():
            ranks = [None] * world
            dist.all_gather_object(ranks, local)
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "num_workers": max(1, self.num_workers),
            "world_size": world,
            "batch_size": self.batch_size,
            "resampled": self.resampled,
            "samples_per_epoch": self.samples_per_epoch,
            "batch_from_one_source": self.batch_from_one_source,
            "fingerprint": fingerprint(self.sets),
            "epoch_offset": self._epoch_offset,
            "ranks": ranks,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the data position saved by :meth:`state_dict`; the next epoch started resumes from it."""
        if not state_dict:
            return
        if state_dict.get("version") != STATE_VERSION:
            raise DataError(
                f"checkpoint data state has version {state_dict.get('version')}, expected {STATE_VERSION}: "
                "it was written by another mme5 whose epochs draw samples in another order, so its data "
                "position cannot be continued exactly (start a new fit, or export its weights)"
            )
        if not self.sets:
            self.setup("fit")
        _, world = self._distributed()
        now = {
            "num_workers": max(1, self.num_workers),
            "world_size": world,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "resampled": self.resampled,
            "samples_per_epoch": self.samples_per_epoch,
            "batch_from_one_source": self.batch_from_one_source,
        }
        saved = {"batch_from_one_source": False, **state_dict}  # checkpoints from before the option
        diff = [f"{k} {saved.get(k)} -> {v}" for k, v in now.items() if saved.get(k) != v]
        if diff:
            raise DataError(
                "cannot resume the data position exactly: the checkpoint was written with other data "
                f"settings ({', '.join(diff)}); use the same settings, or resume from an end-of-epoch "
                "checkpoint"
            )
        if state_dict.get("fingerprint") != fingerprint(self.sets):
            log.warning(
                "data: the shard lists or sizes changed since the checkpoint; the resumed order is not "
                "the uninterrupted one"
            )
        self._resume_state = state_dict

    # ---- skips ------------------------------------------------------------------------------------

    def skip_counts(self) -> dict[str, int]:
        """Skipped samples/shards by reason on this rank: found while sizing, plus those the workers
        skipped while producing the batches trained on so far (every epoch of the fit, and the fit
        this one resumed; not the batches read ahead and never trained on)."""
        out = dict(self._setup_skips)
        consumed = min(self._consumed_batches(), self.tracker.yielded)
        for k, v in self.tracker.skips_after(consumed).items():
            out[k] = out.get(k, 0) + v
        return out

    def teardown(self, stage: str) -> None:
        counts = self.skip_counts()
        if self.sets:
            log.log(
                logging.WARNING if any(counts.values()) else logging.INFO,
                "data summary (rank %d): %d batches trained on in the last epoch; skipped while sizing "
                "shards and producing the batches trained on: %s",
                self._distributed()[0],
                min(self._consumed_batches(), self.tracker.yielded),
                format_counts(counts),
            )
