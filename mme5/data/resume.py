"""Exact mid-epoch resume: what the main process records about the batches training consumed.

Each batch arrives with its reader's position after it. The tracker keeps, per batch index of the
epoch, a snapshot of every worker's latest position, so that when a checkpoint is written after
``k`` batches were trained on (Lightning's fetcher may already hold a prefetched batch ``k``) the
state names exactly the positions after batch ``k - 1``.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader

from mme5.data.pipeline import EpochPlan, MixtureDataset, ReaderPosition, worker_seed_init
from mme5.data.skips import DataError

STATE_VERSION = 2


class PositionTracker:
    """Per-rank record of consumed positions and skip counts (main process).

    Skips travel with the batches, so the counts behind the first ``k`` batches of an epoch are known
    exactly: :meth:`skips_after` gives them, and the checkpoint and the end-of-fit summary count the
    skips behind the batches trained on (those behind batches read ahead and never trained on are
    produced again, and counted then, by a resumed run).
    """

    def __init__(self, keep: int = 64):
        self.keep = keep
        self.epoch = 0
        self.start_batch = 0
        self.yielded = 0  # batches handed out in the current epoch, counting those before a resume
        self.latest: dict[int, dict[str, Any]] = {}
        self.snapshots: dict[int, dict[int, dict[str, Any]]] = {0: {}}
        self.skips: Counter[str] = Counter()  # behind every batch handed out (also the read-ahead ones)
        self.skip_snapshots: dict[int, Counter[str]] = {0: Counter()}

    def begin(self, epoch: int, start_batch: int, resume: dict[int, ReaderPosition]) -> None:
        self.epoch = epoch
        self.start_batch = self.yielded = start_batch
        self.latest = {w: p.to_dict() for w, p in resume.items()}
        self.snapshots = {start_batch: copy.deepcopy(self.latest)}
        self.skip_snapshots = {start_batch: Counter(self.skips)}

    def record(self, info: dict[str, Any]) -> None:
        pos = info["position"]
        self.latest[int(pos["worker"])] = pos
        self.skips.update(info.get("skipped", {}))
        self.yielded += 1
        self.snapshots[self.yielded] = copy.deepcopy(self.latest)
        self.skip_snapshots[self.yielded] = Counter(self.skips)
        for b in [b for b in self.snapshots if b < self.yielded - self.keep]:
            del self.snapshots[b]
            self.skip_snapshots.pop(b, None)

    def skips_after(self, batches: int) -> dict[str, int]:
        """Skips (this rank, all epochs so far) behind the first ``batches`` batches of the current epoch."""
        snap = self.skip_snapshots.get(min(batches, self.yielded))
        return dict(snap if snap is not None else self.skips)

    def position_after(self, batches: int) -> dict[str, Any]:
        """This rank's state after ``batches`` batches of the current epoch were consumed."""
        if batches not in self.snapshots:
            raise RuntimeError(
                f"no data position recorded after batch {batches} of epoch {self.epoch} "
                f"(recorded: {sorted(self.snapshots)[:3]}...)"
            )
        return {
            "epoch": self.epoch,
            "batches": batches,
            "workers": copy.deepcopy(self.snapshots[batches]),
            "skips": self.skips_after(batches),
        }


class ResumableLoader:
    """The train loader: a fresh DataLoader per epoch whose workers start where the plan says.

    ``plan_fn()`` is asked at every ``iter()`` for the epoch's :class:`EpochPlan` (the DataModule
    decides the epoch, the rank and any resume position); batches come out in the same order as an
    uninterrupted run would produce them.
    """

    def __init__(
        self,
        dataset: MixtureDataset,
        plan_fn: Callable[[int | None], EpochPlan],
        tracker: PositionTracker,
        batches_per_rank: int,
        num_workers: int,
        prefetch_factor: int | None = 2,
        pin_memory: bool = False,
    ):
        self.mixture = dataset  # not named `dataset`: Lightning would warn about an IterableDataset's len
        self.plan_fn = plan_fn
        self.tracker = tracker
        self.batches_per_rank = batches_per_rank
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Pin the epoch of the next ``iter()`` (without a trainer, epochs otherwise count iterations)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches_per_rank

    def state_dict(self) -> dict[str, Any]:
        """Lightning's loader-state hook: the position lives in the DataModule's state (one place)."""
        return {"position_saved_by": "ShardDataModule.state_dict"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to do: ``ShardDataModule.load_state_dict`` restores the position."""

    def __iter__(self) -> Iterator[Any]:
        plan = self.plan_fn(self.epoch)
        self.epoch = None
        self.mixture.set_plan(plan)
        self.tracker.begin(plan.epoch, plan.start_batch, plan.resume)
        if plan.start_batch >= plan.batches_per_rank:
            return
        workers = plan.num_workers if self.num_workers > 0 else 0
        loader = DataLoader(
            self.mixture,
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
            worker_init_fn=worker_seed_init if workers else None,
            persistent_workers=False,
            prefetch_factor=self.prefetch_factor if workers else None,
            pin_memory=self.pin_memory,
        )
        try:
            for batch, info in loader:
                self.tracker.record(info)
                yield batch
        except DataError as exc:
            raise DataError(_worker_message(str(exc))) from None


def _worker_message(text: str) -> str:
    """The original message of a DataError re-raised by a DataLoader worker (without its traceback)."""
    marker = f"{DataError.__module__}.{DataError.__qualname__}: "
    return text.rsplit(marker, 1)[1].strip() if marker in text else text


def _identity(x: Any) -> Any:
    return x
