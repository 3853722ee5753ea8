"""``batch_from_one_source``: every batch of a rank holds one shard set's samples (VLM2Vec-V2's
homogeneous batches), the sets' batch counts follow the weights, each sample is drawn at most once per
epoch, and a stopped or resumed fit sees exactly the uninterrupted batches.

As in ``test_epoch_coverage.py``, each case iterates the real loader (real DataLoader workers) of every
rank of a simulated world in this process.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from mme5.data import DataError, ShardDataModule, ShardSet
from mme5.data.pipeline import apportion, one_source_capacity
from tests.helpers.shard_fixtures import list_collate, write_set

SIZES = {"a": [10, 6, 8, 7], "b": [3, 5, 2, 2, 4], "c": [9, 4]}  # 31, 16, 13 samples


def _sets(tmp_path: Path) -> list[ShardSet]:
    return [
        ShardSet(write_set(tmp_path / n, n, len(s), s), float(sum(s)), n) for n, s in SIZES.items()
    ]  # weights proportional to sizes: an epoch's share of each set is its size


def _module(sets: list[ShardSet], **kw) -> ShardDataModule:
    kw = {
        "batch_size": 3,
        "num_workers": 2,
        "collate_fn": list_collate,
        "shuffle_buffer": 4,
        "shuffle_shards": 2,
        "seed": 5,
        "batch_from_one_source": True,
        **kw,
    }
    dm = ShardDataModule(train=sets, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _epoch(dm: ShardDataModule, world: int, epoch: int = 0) -> list[list[list[str]]]:
    out = []
    for rank in range(world):
        loader = dm.loader(rank=rank, world_size=world)
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == dm.batches_per_rank(world)
        assert all(len(b) == dm.batch_size for b in batches)
        out.append(batches)
    return out


def _set_of(batch: list[str]) -> str:
    names = {i.split("-")[0] for i in batch}
    assert len(names) == 1, batch
    return names.pop()


def _all_ids() -> set[str]:
    return {f"{n}-{s}-{i}" for n, sizes in SIZES.items() for s, k in enumerate(sizes) for i in range(k)}


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("workers", [1, 2])
def test_every_batch_is_one_set_and_each_sample_at_most_once(tmp_path, workers, world):
    dm = _module(_sets(tmp_path), num_workers=workers)
    expected = _all_ids()
    orders = []
    for epoch in range(2):
        per_rank = _epoch(dm, world, epoch)
        orders.append([_set_of(b) for batches in per_rank for b in batches])  # asserts one set per batch
        ids = [i for batches in per_rank for b in batches for i in b]
        counts = Counter(ids)
        assert max(counts.values()) == 1, [i for i, c in counts.items() if c > 1]
        assert set(ids) <= expected
        assert len(ids) == world * dm.batches_per_rank(world) * 3
        assert len(expected - set(ids)) == dm.epoch_remainder(world)
        # each set's share is cut to whole batches: 31 -> 30, 16 -> 15, 13 -> 12; 19 batches in all
        assert dm.batches_per_rank(world) == 19 // world
        assert dm.epoch_remainder(world) == 60 - 3 * world * (19 // world)
    assert orders[0] != orders[1]  # the sets' batch order is drawn anew each epoch
    assert len(set(orders[0])) == 3 and orders[0] != sorted(orders[0])  # interleaved, not in blocks


@pytest.mark.parametrize("world", [1, 2])
def test_set_batch_counts_follow_the_weights(tmp_path, world):
    """Weights not proportional to sizes (a longer share than a set holds is further passes): each
    set's batches per epoch are its weight's share in whole batches, over all ranks."""
    sets = [
        ShardSet(write_set(tmp_path / n, n, len(s), s), w, n)
        for (n, s), w in zip(SIZES.items(), [1.0, 3.0, 2.0], strict=True)
    ]
    dm = _module(sets, epoch_samples=120, num_workers=2)
    per_rank = _epoch(dm, world)
    got = Counter(_set_of(b) for batches in per_rank for b in batches)
    capacity = one_source_capacity(120, [1.0, 3.0, 2.0], 3)
    assert capacity == [6, 20, 13]  # shares 20, 60, 40 samples
    total = world * dm.batches_per_rank(world)
    assert [got[n] for n in SIZES] == apportion(total, capacity)
    for n, w in zip(SIZES, [1.0, 3.0, 2.0], strict=True):
        assert abs(Fraction(got[n], total) - Fraction(w) / 6) <= Fraction(1, total) + Fraction(1, 20)


def test_a_set_too_small_for_a_batch_gets_no_batch(tmp_path):
    """A set whose share is less than one batch gives no batch (its samples are the remainder)."""
    big = ShardSet(write_set(tmp_path / "a", "a", 2, 12), 24.0, "a")
    tiny = ShardSet(write_set(tmp_path / "t", "t", 1, 2), 2.0, "t")
    dm = _module([big, tiny], batch_size=4, num_workers=1)
    (batches,) = _epoch(dm, 1)
    assert {_set_of(b) for b in batches} == {"a"} and len(batches) == 6
    assert dm.epoch_remainder(1) == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_sample_is_replaced_from_the_same_set(tmp_path, workers):
    """A sample that fails to decode is counted and replaced by the next sample of its set: the batch
    stays one set's and full."""
    from mme5.records import encode_sample
    from tests.helpers.shard_fixtures import make_example, write_raw_shard

    write_set(tmp_path / "a", "a", 3, 6, sizes_file=False)
    members = []
    for i in range(4):
        members.append((f"k{i}.json", encode_sample(make_example(f"a-3-{i}"))["json"]))
        if i == 1:
            members.append(("bad1.json", b"{not json"))
    members.append(("bad2.json", b"{not json"))
    write_raw_shard(tmp_path / "a" / "a-000003.tar", members)
    a = ShardSet(str(tmp_path / "a" / "a-{000000..000003}.tar"), 24.0, "a")
    b = ShardSet(write_set(tmp_path / "b", "b", 2, 6), 12.0, "b")
    dm = _module([a, b], num_workers=workers)
    (batches,) = _epoch(dm, 1)
    assert len(batches) == 12 and Counter(_set_of(x) for x in batches) == {"a": 8, "b": 4}
    assert dm.skip_counts().get("bad_json", 0) >= 2


def test_fewer_whole_batches_than_ranks_is_one_error(tmp_path):
    sets = [ShardSet(write_set(tmp_path / "a", "a", 1, 5), 1.0, "a")]
    with pytest.raises(DataError, match="fewer than one whole batch of 4 per rank for 2 rank"):
        _module(sets, batch_size=4).batches_per_rank(2)


def test_state_dict_resumes_at_every_position(tmp_path):
    """In process, two workers: stop after k batches, restore from the state, compare (and the option
    must match the checkpoint's)."""
    sets = _sets(tmp_path)
    full = list(_module(sets).loader(rank=0, world_size=1))
    assert len(full) == 19
    for k in [0, 1, 2, 5, 8, 13, 18, 19]:
        first = _module(sets)
        it = iter(first.loader(rank=0, world_size=1))
        head = [next(it) for _ in range(k)]
        state = first.state_dict()
        del it
        assert state["batch_from_one_source"] is True and [r["batches"] for r in state["ranks"]] == [k]
        again = _module(sets)
        again.load_state_dict(state)
        assert head + list(again.loader(rank=0, world_size=1)) == full, k
    with pytest.raises(DataError, match=r"batch_from_one_source True -> False"):
        _module(sets, batch_from_one_source=False).load_state_dict(state)


def test_checkpoints_from_before_the_option_resume_with_it_off(tmp_path):
    sets = _sets(tmp_path)
    first = _module(sets, batch_from_one_source=False)
    it = iter(first.loader(rank=0, world_size=1))
    next(it)
    state = first.state_dict()
    del it
    state.pop("batch_from_one_source")
    _module(sets, batch_from_one_source=False).load_state_dict(state)
    with pytest.raises(DataError, match=r"batch_from_one_source False -> True"):
        _module(sets).load_state_dict(state)


def test_resume_to_train_longer_in_process(tmp_path):
    """A Lightning fit stopped by ``max_steps`` at 10, resumed to 30 (no workers, one process): the
    batches of an uninterrupted run, across the epoch end, every one of one set."""
    import lightning as L

    from mme5.training.checkpoints import AtomicCheckpointIO
    from tests.helpers.resume_fit import RecordingModule

    sets = _sets(tmp_path)
    loader = _module(sets, num_workers=0).loader(rank=0, world_size=1)
    reference = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        reference += [",".join(batch) for batch in loader]
    assert len(reference) == 38

    def fit(out: str, max_steps: int, ckpt_path: Path | None = None) -> L.Trainer:
        trainer = L.Trainer(
            max_epochs=2,
            max_steps=max_steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],
        )
        trainer.fit(
            RecordingModule(str(tmp_path / out), None), _module(sets, num_workers=0), ckpt_path=ckpt_path
        )
        return trainer

    fit("first.txt", 10).save_checkpoint(tmp_path / "first.ckpt")
    longer = fit("longer.txt", 30, tmp_path / "first.ckpt")
    assert longer.global_step == 30

    def ids(name: str) -> list[str]:
        return [line.split()[2] for line in (tmp_path / name).read_text().splitlines()]

    assert ids("first.txt") == reference[:10]
    assert ids("longer.txt") == reference[10:30]
    assert all(_set_of(b.split(",")) for b in reference)
