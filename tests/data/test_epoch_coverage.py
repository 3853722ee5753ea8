"""Epoch coverage: in epoch mode every sample is drawn exactly once per epoch, whatever the split.

Each case iterates the real loader (real DataLoader workers) of every rank of a simulated world in
this process (``loader(rank, world_size)``), which is exactly what each DDP process runs: the
coverage of the union of all ranks' batches is the coverage of a DDP epoch.
"""

from __future__ import annotations

from collections import Counter

import pytest

from mme5.data import ShardDataModule, ShardSet
from tests.helpers.shard_fixtures import list_collate, write_set


def _module(sets: list[ShardSet], **kw) -> ShardDataModule:
    kw = {"batch_size": 4, "num_workers": 2, "collate_fn": list_collate, "shuffle_buffer": 5, **kw}
    dm = ShardDataModule(train=sets, shuffle_shards=2, seed=11, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _epoch_ids(dm: ShardDataModule, world: int, epoch: int = 0) -> list[str]:
    ids = []
    for rank in range(world):
        loader = dm.loader(rank=rank, world_size=world)
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == dm.batches_per_rank(world)
        assert all(len(b) == dm.batch_size for b in batches)
        ids += [i for b in batches for i in b]
    return ids


def _all_ids(name: str, sizes: list[int]) -> set[str]:
    return {f"{name}-{s}-{i}" for s, n in enumerate(sizes) for i in range(n)}


def test_the_reported_case_two_workers_two_shards_of_ten(tmp_path):
    """The issue's case: 2 x 10 samples, 2 workers, batches of 4: 20 draws were 18 distinct samples."""
    spec = write_set(tmp_path / "a", "a", 2, 10)
    dm = _module([ShardSet(spec)], batch_size=4, num_workers=2)
    ids = _epoch_ids(dm, 1)
    assert len(ids) == 20 and set(ids) == _all_ids("a", [10, 10])


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_sample_once_per_epoch(tmp_path, workers, world):
    """Unequal shards (the round robin of batches over workers cannot match them): each epoch draws
    every sample at most once, and exactly ``epoch_remainder`` samples (fewer than one global batch)
    are left out because batches are full and equal on every rank."""
    sizes = [9, 3, 7, 2, 5, 11, 6, 4]  # 47 samples
    spec = write_set(tmp_path / "u", "u", len(sizes), sizes)
    dm = _module([ShardSet(spec)], batch_size=3, num_workers=workers)
    expected = _all_ids("u", sizes)
    for epoch in range(2):
        ids = _epoch_ids(dm, world, epoch)
        counts = Counter(ids)
        assert max(counts.values()) == 1, [i for i, c in counts.items() if c > 1]
        assert set(ids) <= expected
        assert len(ids) == world * dm.batches_per_rank(world) * 3
        assert len(expected - set(ids)) == dm.epoch_remainder(world) == 47 % (world * 3)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_exact_cover_when_the_epoch_divides(tmp_path, workers):
    """48 samples, batches of 4 on 2 ranks: nothing left over, every sample exactly once."""
    sizes = [13, 5, 9, 7, 14]
    spec = write_set(tmp_path / "d", "d", len(sizes), sizes)
    dm = _module([ShardSet(spec)], batch_size=4, num_workers=workers)
    ids = _epoch_ids(dm, 2)
    assert sorted(ids) == sorted(_all_ids("d", sizes)) and dm.epoch_remainder(2) == 0


@pytest.mark.parametrize("workers", [1, 3])
def test_weighted_mixture_covers_each_set_once(tmp_path, workers):
    """Two sets with weights proportional to their sizes: one epoch is each sample of each set once."""
    a = write_set(tmp_path / "a", "a", 3, [10, 6, 8])  # 24
    b = write_set(tmp_path / "b", "b", 4, [3, 5, 2, 2])  # 12
    dm = _module([ShardSet(a, 2.0), ShardSet(b, 1.0)], batch_size=3, num_workers=workers)
    ids = _epoch_ids(dm, 2)
    assert sorted(ids) == sorted(_all_ids("a", [10, 6, 8]) | _all_ids("b", [3, 5, 2, 2]))


def test_fewer_shards_than_readers(tmp_path):
    """Readers share shards by sample ranges: 2 shards, 2 ranks x 3 workers, still each sample once."""
    spec = write_set(tmp_path / "f", "f", 2, [12, 12])
    dm = _module([ShardSet(spec)], batch_size=2, num_workers=3)
    ids = _epoch_ids(dm, 2)
    assert sorted(ids) == sorted(_all_ids("f", [12, 12]))


def test_longer_epoch_draws_every_sample_equally_often(tmp_path):
    """``epoch_samples`` above the set's size: further passes in a new order, each sample drawn
    ``floor`` or ``ceil`` of draws / samples times."""
    spec = write_set(tmp_path / "p", "p", 3, [5, 4, 6])  # 15
    dm = _module([ShardSet(spec)], batch_size=4, num_workers=2, epoch_samples=40)
    counts = Counter(_epoch_ids(dm, 1))
    assert sum(counts.values()) == 40 and set(counts) == _all_ids("p", [5, 4, 6])
    assert set(counts.values()) <= {2, 3}
