"""Mixtures, sizes, epoch length and the split of shards across ranks and workers."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mme5.data import DataError, ShardDataModule, ShardSet
from tests.helpers.shard_fixtures import list_collate, write_set


def _module(sets, **kw) -> ShardDataModule:
    kw = {
        "batch_size": 3,
        "num_workers": 2,
        "collate_fn": list_collate,
        "shuffle_buffer": 4,
        "shuffle_shards": 2,
        **kw,
    }
    dm = ShardDataModule(train=sets, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _epoch(dm: ShardDataModule, rank: int, world: int, epoch: int = 0) -> list[list[str]]:
    loader = dm.loader(rank=rank, world_size=world)
    loader.set_epoch(epoch)
    return list(loader)


def test_epoch_mode_split_is_disjoint_and_complete(tmp_path):
    spec = write_set(tmp_path / "a", "a", 8, 6, image_every=3)
    dm = _module([ShardSet(spec)])
    per_rank = [_epoch(dm, r, 2) for r in range(2)]
    assert [len(b) for b in per_rank] == [8, 8] == [len(dm.loader(rank=0, world_size=2))] * 2
    ids = [i for batches in per_rank for b in batches for i in b]
    assert sorted(ids) == sorted(f"a-{s}-{i}" for s in range(8) for i in range(6))
    # another epoch: same coverage, another order
    again = [i for r in range(2) for b in _epoch(dm, r, 2, epoch=1) for i in b]
    assert sorted(again) == sorted(ids) and again != ids


def test_ranks_get_equal_batch_counts_with_unequal_shards(tmp_path):
    spec = write_set(tmp_path / "u", "u", 5, [9, 3, 7, 2, 5])
    dm = _module([ShardSet(spec)], num_workers=1)
    counts = [len(_epoch(dm, r, 2)) for r in range(2)]
    assert counts == [26 // (2 * 3)] * 2
    assert all(len(b) == 3 for r in range(2) for b in _epoch(dm, r, 2))


def test_sizes_json_is_counted_and_written_when_missing(tmp_path):
    spec = write_set(tmp_path / "n", "n", 3, [4, 5, 6], sizes_file=False)
    assert not (tmp_path / "n" / "sizes.json").exists()
    dm = _module([ShardSet(spec)])
    assert json.loads((tmp_path / "n" / "sizes.json").read_text()) == {
        "n-000000.tar": 4,
        "n-000001.tar": 5,
        "n-000002.tar": 6,
    }
    assert dm.samples_per_epoch == 15 and len(dm.loader(rank=0, world_size=1)) == 5


def test_mixture_follows_weights(tmp_path):
    a = write_set(tmp_path / "a", "a", 2, 20)
    b = write_set(tmp_path / "b", "b", 2, 20)
    dm = _module(
        [ShardSet(a, 1.0), ShardSet(b, 3.0)], num_workers=0, resampled=True, epoch_samples=600, batch_size=10
    )
    ids = [i for batch in _epoch(dm, 0, 1) for i in batch]
    share_b = Counter(i[0] for i in ids)["b"] / len(ids)
    assert len(ids) == 600 and abs(share_b - 0.75) < 0.05, share_b


def test_fewer_shards_than_readers_share_shards(tmp_path):
    """3 shards for 2 ranks x 2 workers: epoch mode splits shards by sample ranges (each sample once);
    resampled mode draws whole shards with replacement."""
    spec = write_set(tmp_path / "f", "f", 3, 4)
    dm = _module([ShardSet(spec)])
    ids = [i for r in range(2) for b in _epoch(dm, r, 2) for i in b]
    assert sorted(ids) == sorted(f"f-{s}-{i}" for s in range(3) for i in range(4))
    dm = _module([ShardSet(spec)], resampled=True)
    assert len(_epoch(dm, 1, 2)) == 2


def test_pipe_and_folder_specs(tmp_path):
    write_set(tmp_path / "p", "p", 2, 4)
    pipe = f"pipe:cat {tmp_path}/p/p-{{000000..000001}}.tar"
    for spec in (pipe, str(tmp_path / "p")):
        dm = _module([ShardSet(spec)], num_workers=0, batch_size=2)
        ids = [i for b in _epoch(dm, 0, 1) for i in b]
        assert sorted(ids) == sorted(f"p-{s}-{i}" for s in range(2) for i in range(4)), spec


def test_bad_settings_fail_early(tmp_path):
    spec = write_set(tmp_path / "s", "s", 2, 2)
    with pytest.raises(DataError, match="weight must be > 0"):
        _module([ShardSet(spec, 0.0)])
    with pytest.raises(DataError, match="less than one batch"):
        _module([ShardSet(spec)], batch_size=8).loader(rank=0, world_size=1)
    with pytest.raises(DataError, match="no training shard set"):
        _module([])


def test_glob_and_joined_specs(tmp_path):
    write_set(tmp_path / "g" / "one", "one", 2, 3)
    write_set(tmp_path / "g" / "two", "two", 1, 3)
    dm = _module([ShardSet(f"{tmp_path}/g/*/*.tar")], num_workers=0, batch_size=3)
    assert len([i for b in _epoch(dm, 0, 1) for i in b]) == 9
    dm = _module(
        [ShardSet(f"{tmp_path}/g/one/one-000000.tar::{tmp_path}/g/two/two-000000.tar")], num_workers=0
    )
    assert sorted(i[:3] for b in _epoch(dm, 0, 1) for i in b) == ["one"] * 3 + ["two"] * 3
