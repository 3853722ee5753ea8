"""The streaming pipeline that runs in each DataLoader worker.

Per epoch, per reader (rank, worker) the sample order is a pure function of the seed, the epoch, the
rank, the worker and the data, so a position is a handful of integers and resuming is exact:

* every shard set is a stream of *windows*: ``shuffle_shards`` shards read interleaved (a seeded
  choice of which shard gives the next sample) through a seeded shuffle buffer that is drained at the
  end of the window. In epoch mode the windows walk the shards dealt to this reader (a new seeded
  order for each further pass); in resampled mode each window draws its shards with replacement.
  A set position is ``(window, samples emitted in it)``; resuming re-reads at most one window's raw
  bytes (no decoding) to rebuild the buffer.
* draw ``d`` of a reader picks its shard set from a hash of (seed, epoch, rank, worker, d), so the
  mixture needs no state beyond the draw count.
* a sample that fails to decode is counted and replaced by the next draw; each batch carries the
  reader's position after it and the skip counts since the previous batch.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from mme5.data.shardsets import ResolvedSet, deal_shards, derive_seed
from mme5.data.skips import DataError, SkipCounter, format_counts
from mme5.records import Example, RecordError, decode_sample, iter_shard

RawSample = dict[str, Any]


def read_shard(url: str, skips: SkipCounter, expected: int | None = None) -> Iterator[RawSample]:
    """Raw samples of one shard (:func:`mme5.records.iter_shard`), every problem counted in ``skips``."""
    return iter_shard(url, skips.add, expected)


def shuffled_window(
    urls: Sequence[str],
    rng: random.Random,
    buffer_size: int,
    skips: SkipCounter,
    expected: dict[str, int] | None = None,
) -> Iterator[RawSample]:
    """Samples of ``urls`` read interleaved, through a shuffle buffer drained at the end."""
    readers = [read_shard(u, skips, (expected or {}).get(u)) for u in urls]
    active = list(range(len(readers)))
    buf: list[RawSample] = []
    while active:
        j = rng.randrange(len(active))
        try:
            item = next(readers[active[j]])
        except StopIteration:
            active.pop(j)
            continue
        if buffer_size <= 1:
            yield item
        elif len(buf) < buffer_size:
            buf.append(item)
        else:
            k = rng.randrange(len(buf))
            buf[k], item = item, buf[k]
            yield item
    rng.shuffle(buf)
    yield from buf


class SetStream:
    """The endless, resumable stream of raw samples one reader draws from one shard set.

    ``position`` is ``(window, emitted)``: ``emitted`` samples of window ``window`` are consumed.
    """

    def __init__(
        self,
        urls: Sequence[str],
        resampled: bool,
        shuffle_shards: int,
        buffer_size: int,
        seed_parts: tuple,
        skips: SkipCounter,
        label: str,
        start: tuple[int, int] = (0, 0),
        expected: dict[str, int] | None = None,
    ):
        if not urls:
            raise DataError(f"shard set '{label}': this reader got no shard")
        self.urls = list(urls)
        self.resampled = resampled
        self.shuffle_shards = max(1, shuffle_shards)
        self.buffer_size = buffer_size
        self.seed_parts = seed_parts
        self.skips = skips
        self.label = label
        self.position = tuple(start)
        self.expected = expected or {}
        self.windows_per_pass = -(-len(self.urls) // self.shuffle_shards)

    def window_urls(self, window: int) -> list[str]:
        g = self.shuffle_shards
        if self.resampled:
            rng = random.Random(derive_seed(*self.seed_parts, "resample", window))
            return [rng.choice(self.urls) for _ in range(g)]
        cycle, k = divmod(window, self.windows_per_pass)
        order = list(self.urls)
        random.Random(derive_seed(*self.seed_parts, "pass", cycle)).shuffle(order)
        return order[k * g : (k + 1) * g]

    def __iter__(self) -> Iterator[RawSample]:
        window, skip = self.position
        empty_windows = 0
        while True:
            rng = random.Random(derive_seed(*self.seed_parts, "window", window))
            emitted = 0
            for item in shuffled_window(
                self.window_urls(window), rng, self.buffer_size, self.skips, self.expected
            ):
                emitted += 1
                if emitted <= skip:
                    continue
                self.position = (window, emitted)
                yield item
            skip = 0
            empty_windows = 0 if emitted else empty_windows + 1
            if empty_windows >= max(self.windows_per_pass, 1) * (2 if self.resampled else 1) + 1:
                raise DataError(
                    f"shard set '{self.label}': no readable sample in this reader's "
                    f"{len(self.urls)} shard(s) ({', '.join(self.urls[:3])}"
                    f"{', ...' if len(self.urls) > 3 else ''}); skipped so far: "
                    f"{format_counts(self.skips.total)}"
                )
            window += 1
            self.position = (window, 0)


@dataclass
class ReaderPosition:
    """Where one reader (rank, worker) stands within an epoch, as carried by its batches."""

    rank: int
    worker: int
    epoch: int
    batches: int = 0
    draws: int = 0
    sets: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "worker": self.worker,
            "epoch": self.epoch,
            "batches": self.batches,
            "draws": self.draws,
            "sets": [list(p) for p in self.sets],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReaderPosition:
        return cls(
            int(d["rank"]),
            int(d["worker"]),
            int(d["epoch"]),
            int(d["batches"]),
            int(d["draws"]),
            [(int(w), int(e)) for w, e in d["sets"]],
        )


def batches_for_worker(batches_per_rank: int, num_workers: int, worker: int) -> int:
    """Batches that worker ``worker`` yields when batch ``b`` of a rank comes from worker
    ``b % num_workers``."""
    return max(0, -(-(batches_per_rank - worker) // num_workers))


@dataclass
class EpochPlan:
    """Everything a worker needs to produce its part of one epoch on one rank (picklable)."""

    epoch: int
    rank: int
    world_size: int
    num_workers: int
    batches_per_rank: int
    start_batch: int = 0
    resume: dict[int, ReaderPosition] = field(default_factory=dict)  # logical worker -> position


class MixtureDataset(IterableDataset):
    """Yields ``(batch, info)`` pairs: a collated batch and its reader's position and skip counts.

    Batch ``b`` of a rank's epoch is produced by logical worker ``b % num_workers``; after a resume at
    batch ``k`` the DataLoader worker ``j`` plays logical worker ``(j + k) % num_workers``, so the
    DataLoader's round robin continues the uninterrupted order exactly.
    """

    def __init__(
        self,
        sets: Sequence[ResolvedSet],
        batch_size: int,
        collate_fn: Callable[[list[Example]], Any],
        seed: int = 0,
        resampled: bool = False,
        shuffle_buffer: int = 1000,
        shuffle_shards: int = 4,
        max_image_pixels: int | None = None,
        max_image_side: int | None = None,
        max_consecutive_skips: int = 1000,
        warn_interval_s: float = 30.0,
    ):
        self.sets = list(sets)
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.seed = seed
        self.resampled = resampled
        self.shuffle_buffer = shuffle_buffer
        self.shuffle_shards = shuffle_shards
        self.max_image_pixels = max_image_pixels
        self.max_image_side = max_image_side
        self.max_consecutive_skips = max_consecutive_skips
        self.warn_interval_s = warn_interval_s
        total = sum(s.weight for s in self.sets)
        self.cumulative = [sum(s.weight for s in self.sets[: i + 1]) / total for i in range(len(self.sets))]
        self.plan: EpochPlan | None = None

    def set_plan(self, plan: EpochPlan) -> None:
        self.plan = plan

    def choose_set(self, epoch: int, rank: int, worker: int, draw: int) -> int:
        u = derive_seed(self.seed, epoch, rank, worker, "mix", draw) / 2.0**64
        return min(bisect.bisect_right(self.cumulative, u), len(self.sets) - 1)

    def reader_urls(self, set_index: int, epoch: int, slot: int, slots: int) -> list[str]:
        rset = self.sets[set_index]
        if self.resampled:
            return rset.readable
        return deal_shards(rset, slots, self.seed, epoch, set_index)[slot]

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        plan = self.plan
        if plan is None:
            raise RuntimeError("MixtureDataset needs set_plan() before iteration")
        info = get_worker_info()
        dl_worker, dl_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if dl_workers != plan.num_workers:
            raise RuntimeError(f"plan made for {plan.num_workers} workers, DataLoader runs {dl_workers}")
        worker = (dl_worker + plan.start_batch) % plan.num_workers
        todo = batches_for_worker(plan.batches_per_rank - plan.start_batch, plan.num_workers, dl_worker)
        pos = plan.resume.get(worker) or ReaderPosition(
            plan.rank, worker, plan.epoch, sets=[(0, 0)] * len(self.sets)
        )
        yield from self._produce(plan, worker, todo, pos)

    def _produce(
        self, plan: EpochPlan, worker: int, todo: int, pos: ReaderPosition
    ) -> Iterator[tuple[Any, dict[str, Any]]]:
        if todo <= 0:
            return
        skips = SkipCounter(where=f"rank {plan.rank} worker {worker}", interval_s=self.warn_interval_s)
        slots = plan.world_size * plan.num_workers
        slot = plan.rank * plan.num_workers + worker
        streams = [
            SetStream(
                self.reader_urls(i, plan.epoch, slot, slots),
                self.resampled,
                self.shuffle_shards,
                self.shuffle_buffer,
                (self.seed, plan.epoch, i, slot),
                skips,
                s.label,
                start=pos.sets[i],
                expected=dict(zip(s.urls, s.sizes, strict=False)),
            )
            for i, s in enumerate(self.sets)
        ]
        iters = [iter(s) for s in streams]
        failures = [0] * len(self.sets)
        examples: list[Example] = []
        produced = 0
        while produced < todo:
            i = self.choose_set(plan.epoch, plan.rank, worker, pos.draws)
            pos.draws += 1
            raw = next(iters[i])
            try:
                ex = decode_sample(raw)
                for side in (ex.query, ex.positive, *ex.negatives):
                    if side.has_image:
                        side.load_image(self.max_image_pixels, self.max_image_side)
            except RecordError as exc:
                skips.add(
                    exc.reason, f"{str(exc).removeprefix(exc.reason + ': ')} (shard '{raw.get('__url__')}')"
                )
                failures[i] += 1
                if failures[i] > self.max_consecutive_skips:
                    raise DataError(
                        f"shard set '{self.sets[i].label}': {failures[i]} samples in a row could not be "
                        f"decoded (shards {', '.join(streams[i].urls[:3])}"
                        f"{', ...' if len(streams[i].urls) > 3 else ''});"
                        f" skipped so far: {format_counts(skips.total)}"
                    ) from None
                continue
            failures[i] = 0
            examples.append(ex)
            if len(examples) == self.batch_size:
                batch = self.collate_fn(examples)
                examples = []
                produced += 1
                pos.batches += 1
                pos.sets = [(s.position[0], s.position[1]) for s in streams]
                yield batch, {"position": pos.to_dict(), "skipped": skips.take_delta()}


def worker_seed_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker (decoding is the work, not BLAS)."""
    torch.set_num_threads(1)
