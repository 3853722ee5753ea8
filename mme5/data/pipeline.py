"""The streaming pipeline that runs in each DataLoader worker.

Per epoch, per reader (rank, worker) the sample order is a pure function of the seed, the epoch, the
rank, the worker and the data, so a position is a handful of integers and resuming is exact:

* the epoch's draws are fixed in advance: reader ``r`` yields ``batches_for_worker(...)`` batches, the
  draws of the epoch are split over the sets by weight and over the readers (:func:`epoch_quotas`),
  and in epoch mode each set's samples, in a seeded shard order shared by all readers, are cut into
  adjacent ranges, one per reader: one epoch draws every sample of a set at most once (exactly once
  when the set's share equals its size), disjoint across ranks and workers.
* a reader's range of a set is a stream of *windows*: ``shuffle_shards`` shard segments read
  interleaved (a seeded choice of which segment gives the next sample) through a seeded shuffle buffer
  that is drained at the end of the window. In resampled mode each window draws whole shards with
  replacement. A set position is ``(window, emitted)``; resuming re-reads at most one window's raw
  bytes (no decoding) to rebuild the buffer.
* draw ``d`` of a reader picks its set with probability proportional to the reader's quota left per
  set, from a hash of (seed, epoch, rank, worker, d): the position is the draw count and the draws
  taken per set.
* with ``batch_from_one_source`` (as VLM2Vec-V2's homogeneous batches) a batch is drawn whole from one
  set: each set's epoch draws are whole batches (:func:`one_source_capacity`), split over the readers
  in batches, and batch ``b`` of a reader picks its set in proportion to the reader's batches left
  per set, from a hash of (seed, epoch, rank, worker, b); the position is the same.
* a sample that fails to decode is counted and replaced by the next sample of the same set (the
  quotas hold); each batch carries the reader's position after it and the skip counts since the
  previous batch.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NamedTuple

import torch
from torch.utils.data import IterableDataset, get_worker_info

from mme5.data.shardsets import ResolvedSet, derive_seed
from mme5.data.skips import DataError, SkipCounter, format_counts
from mme5.records import SHARD_OPEN, TRUNCATED_TAR, Example, RecordError, decode_sample, iter_shard

RawSample = dict[str, Any]


class Segment(NamedTuple):
    """Samples ``start`` to ``stop`` (exclusive; None: to the end) of one shard, in shard order."""

    url: str
    start: int = 0
    stop: int | None = None


def read_segment(seg: Segment, skips: SkipCounter, expected: int | None = None) -> Iterator[RawSample]:
    """Raw samples of one shard segment (:func:`mme5.records.iter_shard`), its problems counted in ``skips``.

    Readers that share a shard each count only the problems within their own samples: a problem
    reported after ``n`` samples of the shard belongs to the segment that holds sample ``n`` (or to
    the shard's last segment at its end), a cut-short shard counts the samples lost from this
    segment only, and a shard that cannot be opened counts once for each reader that tried.
    """
    start, stop = seg.start, seg.stop
    end = stop if stop is not None else expected
    seen = 0

    def sink(reason: str, message: str, n: int = 1) -> None:
        if reason == TRUNCATED_TAR and end is not None:
            lost = end - max(seen, start)
            if lost > 0:
                skips.add(reason, message, lost)
            return
        if reason == SHARD_OPEN:  # the shard cannot be read: every reader of it loses its samples
            skips.add(reason, message, n)
            return
        if seen >= start and (stop is None or seen < stop or stop == expected):
            skips.add(reason, message, n)

    reader = iter_shard(seg.url, sink, expected)
    try:
        for item in reader:
            if stop is not None and seen >= stop:
                break
            seen += 1
            if seen > start:
                yield item
            if stop is not None and seen >= stop:
                break
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()  # the shard's file or pipe closes now, not when the generator is collected


def read_shard(url: str, skips: SkipCounter, expected: int | None = None) -> Iterator[RawSample]:
    """Raw samples of one shard (:func:`mme5.records.iter_shard`), every problem counted in ``skips``."""
    return read_segment(Segment(url), skips, expected)


def shuffled_window(
    segments: Sequence[Segment],
    rng: random.Random,
    buffer_size: int,
    skips: SkipCounter,
    expected: dict[str, int] | None = None,
) -> Iterator[RawSample]:
    """Samples of ``segments`` read interleaved, through a shuffle buffer drained at the end."""
    readers = [read_segment(s, skips, (expected or {}).get(s.url)) for s in segments]
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


def apportion(total: int, weights: Sequence[float | int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder, ties to the lower index).

    Every share is the floor or the ceiling of its exact proportion, so a share never exceeds an
    integer weight whose proportion it is (used for per-reader quotas out of what is left).
    """
    exact = [Fraction(total) * Fraction(w) / sum(Fraction(x) for x in weights) for w in weights]
    shares = [int(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def epoch_quotas(weights: Sequence[float], reader_draws: Sequence[int]) -> list[list[int]]:
    """``quotas[reader][set]``: how many samples each reader draws from each set in one epoch.

    The epoch's draws (the sum of ``reader_draws``) are split over the sets by weight, then each
    reader's draws over the sets in proportion to what each set has left, the last reader taking
    the rest, so rows sum to each reader's draws and columns to each set's share exactly.
    """
    left = apportion(sum(reader_draws), weights)
    out = []
    for r, draws in enumerate(reader_draws):
        row = (
            list(left) if r == len(reader_draws) - 1 else apportion(draws, left) if draws else [0] * len(left)
        )
        left = [a - b for a, b in zip(left, row, strict=True)]
        out.append(row)
    return out


def one_source_capacity(samples_per_epoch: int, weights: Sequence[float], batch_size: int) -> list[int]:
    """Whole batches each set can give one epoch when every batch comes from one set.

    The epoch's ``samples_per_epoch`` draws are split over the sets by weight (:func:`apportion`, as
    in per-draw mixing) and each set's share is cut down to whole batches, so a set never draws more
    than its share (at most once per sample when its share equals its size). The epoch then draws
    ``sum(...) // world_size`` batches per rank; the batches of each set are ``apportion(world_size x
    batches_per_rank, capacity)``, each at most its capacity (:meth:`MixtureDataset.quotas`).
    """
    return [share // batch_size for share in apportion(samples_per_epoch, weights)]


class SetStream:
    """The endless, resumable stream of raw samples one reader draws from one shard set.

    Epoch mode: the set's readable shards in a seeded order per pass (``pass_order``), concatenated
    over passes, form the set's sample sequence for the epoch; this reader owns samples
    ``[offset, offset + quota)`` of it (readers' ranges are disjoint and adjacent), cut into segments
    at shard boundaries. Its windows are ``shuffle_shards`` of its own segments; after them, samples
    to replace skipped ones continue from ``offset + quota`` (those belong to the next reader's range
    or the next pass). Resampled mode: each window draws ``shuffle_shards`` whole shards with
    replacement.

    ``seed_parts`` end with the reader's slot; the pass order uses them without it (one order for all
    readers). ``position`` is ``(window, emitted)``: ``emitted`` samples of window ``window`` are consumed.
    """

    def __init__(
        self,
        shards: Sequence[tuple[str, int]],
        resampled: bool,
        shuffle_shards: int,
        buffer_size: int,
        seed_parts: tuple,
        skips: SkipCounter,
        label: str,
        start: tuple[int, int] = (0, 0),
        offset: int = 0,
        quota: int = 0,
    ):
        self.shards = [(u, int(n)) for u, n in shards if n > 0]
        if not self.shards:
            raise DataError(f"shard set '{label}': this reader got no shard")
        self.urls = [u for u, _ in self.shards]
        self.expected = dict(self.shards)
        self.resampled = resampled
        self.shuffle_shards = max(1, shuffle_shards)
        self.buffer_size = buffer_size
        self.seed_parts = seed_parts
        self.skips = skips
        self.label = label
        self.position = tuple(start)
        self.windows_per_pass = -(-len(self.urls) // self.shuffle_shards)
        self.pass_samples = sum(n for _, n in self.shards)
        self._orders: dict[int, list[tuple[str, int]]] = {}
        self.own: list[Segment] = [] if resampled else list(self._segments(offset, quota))
        self.own_windows = -(-len(self.own) // self.shuffle_shards)
        self.after = offset + quota

    def pass_order(self, cycle: int) -> list[tuple[str, int]]:
        """The shards of pass ``cycle`` of this epoch, in their seeded order (the same for every reader)."""
        if cycle not in self._orders:
            order = list(self.shards)
            random.Random(derive_seed(*self.seed_parts[:-1], "pass", cycle)).shuffle(order)
            self._orders = {cycle: order}
        return self._orders[cycle]

    def _segments(self, offset: int, count: int | None) -> Iterator[Segment]:
        """Segments of the set's sample sequence from ``offset`` on (``count`` samples; None: endless)."""
        cycle, at = divmod(offset, self.pass_samples)
        left = count
        while left is None or left > 0:
            base = 0
            for url, n in self.pass_order(cycle):
                if base + n > at:
                    a = at - base
                    b = n if left is None else min(n, a + left)
                    yield Segment(url, a, b)
                    at = base + b
                    if left is not None:
                        left -= b - a
                        if left <= 0:
                            return
                base += n
            cycle, at = cycle + 1, 0

    def window_segments(self, window: int) -> list[Segment]:
        g = self.shuffle_shards
        if self.resampled:
            rng = random.Random(derive_seed(*self.seed_parts, "resample", window))
            return [Segment(rng.choice(self.urls)) for _ in range(g)]
        if window < self.own_windows:
            return self.own[window * g : (window + 1) * g]
        extra = window - self.own_windows
        return list(itertools.islice(self._segments(self.after, None), extra * g, (extra + 1) * g))

    def __iter__(self) -> Iterator[RawSample]:
        window, skip = self.position
        empty_windows = 0
        while True:
            rng = random.Random(derive_seed(*self.seed_parts, "window", window))
            emitted = 0
            for item in shuffled_window(
                self.window_segments(window), rng, self.buffer_size, self.skips, self.expected
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
    """Where one reader (rank, worker) stands within an epoch, as carried by its batches.

    ``draws``: samples drawn; ``taken``: of those, per set; ``sets``: per set, the stream position.
    """

    rank: int
    worker: int
    epoch: int
    batches: int = 0
    draws: int = 0
    sets: list[tuple[int, int]] = field(default_factory=list)
    taken: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "worker": self.worker,
            "epoch": self.epoch,
            "batches": self.batches,
            "draws": self.draws,
            "sets": [list(p) for p in self.sets],
            "taken": list(self.taken),
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
            [int(t) for t in d.get("taken", [])],
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

    ``batch_from_one_source``: every batch holds samples of one set only, the set of each batch drawn
    in proportion to the reader's batches left per set (whose epoch totals follow the weights). This
    is VLM2Vec-V2's homogeneous batching (TIGER-AI-Lab/VLM2Vec, commit 6e1e1d4):
    ``src/arguments.py:63`` ``homogeneous_batch_size_per_device``, "number of consecutive samples
    from the same dataset PER DEVICE"; ``src/data/loader/mixed_dataset.py:24-27,42`` turns it into an
    ``interleave_batch_size`` of that many times the world size; ``src/data/dataset/hf_datasets.py``
    lines 206-214 and 345 draw a source per chunk by the mixture probabilities and repeat it for the
    whole chunk, which ``split_dataset_by_node`` then deals to the ranks (``mixed_dataset.py:46-47``);
    ``experiments/public/train/train_v2-qwen2vl-2B.sh:28`` trains V2 with ``--interleave_batch_size
    64`` of 128 per device. Here the chunk is the whole per-rank batch, and the sets' batches per
    epoch are exact quotas rather than independent draws, so the coverage guarantee and exact resume
    hold.

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
        batch_from_one_source: bool = False,
        epoch_samples: int | None = None,
    ):
        self.sets = list(sets)
        self.batch_from_one_source = batch_from_one_source
        self.epoch_samples = epoch_samples  # one-source batches: None is the sum of the sets' sizes
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
        self.plan: EpochPlan | None = None

    def set_plan(self, plan: EpochPlan) -> None:
        self.plan = plan

    def quotas(self, plan: EpochPlan) -> list[list[int]]:
        """Draws of the epoch per reader (``rank * num_workers + worker``) and set: :func:`epoch_quotas`.

        With ``batch_from_one_source`` the split is made in whole batches (over the sets by their
        :func:`one_source_capacity`), so every quota is a multiple of ``batch_size``.
        """
        batches = [
            batches_for_worker(plan.batches_per_rank, plan.num_workers, w)
            for _ in range(plan.world_size)
            for w in range(plan.num_workers)
        ]
        weights = [s.weight for s in self.sets]
        if self.batch_from_one_source:
            samples = (
                self.epoch_samples if self.epoch_samples is not None else sum(s.samples for s in self.sets)
            )
            capacity = one_source_capacity(samples, weights, self.batch_size)
            if sum(capacity) < sum(batches):
                raise DataError(
                    f"one-source batches: the sets give {sum(capacity)} whole batches of {self.batch_size} "
                    f"per epoch, fewer than the {sum(batches)} planned"
                )
            return [[n * self.batch_size for n in row] for row in epoch_quotas(capacity, batches)]
        return epoch_quotas(weights, [n * self.batch_size for n in batches])

    def choose_set(
        self, epoch: int, rank: int, worker: int, draw: int, left: Sequence[int], tag: str = "mix"
    ) -> int:
        """The set of draw ``draw``: set ``i`` with probability ``left[i] / sum(left)`` (the reader's
        remaining quota per set), from a hash of (seed, epoch, rank, worker, tag, draw); one-source
        batches choose per batch (``tag`` "batch", ``draw`` the reader's batch number)."""
        u = derive_seed(self.seed, epoch, rank, worker, tag, draw) * sum(left) >> 64
        for i, n in enumerate(left):
            if u < n:
                return i
            u -= n
        raise RuntimeError("a reader drew beyond its epoch quota")

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
        slot = plan.rank * plan.num_workers + worker
        quotas = self.quotas(plan)
        offsets = [sum(q[i] for q in quotas[:slot]) for i in range(len(self.sets))]
        streams = [
            SetStream(
                list(zip(s.urls, s.sizes, strict=True)),
                self.resampled,
                self.shuffle_shards,
                self.shuffle_buffer,
                (self.seed, plan.epoch, i, slot),
                skips,
                s.label,
                start=pos.sets[i],
                offset=offsets[i],
                quota=quotas[slot][i],
            )
            for i, s in enumerate(self.sets)
        ]
        if len(pos.taken) != len(self.sets):
            pos.taken = [0] * len(self.sets)
        iters = [iter(s) for s in streams]
        failures = [0] * len(self.sets)
        examples: list[Example] = []
        produced = 0
        batch_set: int | None = None  # one-source batches: the set of the batch being filled
        while produced < todo:
            left = [q - t for q, t in zip(quotas[slot], pos.taken, strict=True)]
            if not self.batch_from_one_source:
                i = self.choose_set(plan.epoch, plan.rank, worker, pos.draws, left)
            else:
                if batch_set is None:  # quotas and positions are whole batches: left too
                    batch_set = self.choose_set(plan.epoch, plan.rank, worker, pos.batches, left, "batch")
                i = batch_set
            raw = next(iters[i])
            try:
                ex = decode_sample(raw)
                for side in (ex.query, ex.positive, *ex.negatives):
                    if side.has_visual:
                        side.load_visual(self.max_image_pixels, self.max_image_side)
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
            pos.draws += 1
            pos.taken[i] += 1
            examples.append(ex)
            if len(examples) == self.batch_size:
                batch = self.collate_fn(examples)
                examples = []
                batch_set = None
                produced += 1
                pos.batches += 1
                pos.sets = [(s.position[0], s.position[1]) for s in streams]
                yield batch, {"position": pos.to_dict(), "skipped": skips.take_delta()}


def worker_seed_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one torch thread per worker (decoding is the work, not BLAS)."""
    torch.set_num_threads(1)
