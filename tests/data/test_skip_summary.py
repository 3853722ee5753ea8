"""The skip counts of a fit (``skip_counts()``, the end-of-fit summary, the checkpoint) are exactly the
skips behind the batches trained on: not those behind a batch Lightning read ahead and never trained on
(a resumed fit produces that batch again and counts it then)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L

from mme5.data import ShardDataModule, ShardSet
from mme5.records import encode_sample, write_sizes
from tests.helpers.resume_fit import RecordingModule
from tests.helpers.shard_fixtures import list_collate, make_example, write_raw_shard


def _set_with_bad_samples(folder: Path) -> str:
    """4 shards of 12 samples, every third one a bad JSON (``bad_json``)."""
    folder.mkdir(parents=True)
    sizes = {}
    for s in range(4):
        members = []
        for i in range(12):
            key = f"k{s}-{i}"
            if i % 3 == 1:
                members.append((f"{key}.json", b"{not json"))
            else:
                meta = json.loads(encode_sample(make_example(f"s-{s}-{i}"))["json"])
                members.append((f"{key}.json", json.dumps(meta).encode()))
        write_raw_shard(folder / f"s-{s:06d}.tar", members)
        sizes[f"s-{s:06d}.tar"] = 12
    write_sizes(folder, sizes)
    return str(folder / "s-{000000..000003}.tar")


def _module(spec: str) -> ShardDataModule:
    return ShardDataModule(
        train=[ShardSet(spec)],
        batch_size=2,
        num_workers=2,
        collate_fn=list_collate,
        shuffle_buffer=3,
        shuffle_shards=2,
        seed=5,
        epoch_samples=32,
    )


def _skips_behind(spec: str, batches: int) -> int:
    """``bad_json`` skips behind the first ``batches`` batches (the loader alone: nothing read ahead)."""
    dm = _module(spec)
    it = iter(dm.loader(rank=0, world_size=1))
    for _ in range(batches):
        next(it)
    counts = dm.skip_counts()
    del it
    return counts.get("bad_json", 0)


def test_max_steps_stop_counts_the_skips_of_the_trained_batches(tmp_path, caplog):
    spec = _set_with_bad_samples(tmp_path / "s")
    expected = _skips_behind(spec, 3)
    assert _skips_behind(spec, 4) > expected  # the batch read ahead has skips of its own
    dm = _module(spec)
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with caplog.at_level(logging.INFO, logger="mme5.data"):
        trainer.fit(RecordingModule(str(tmp_path / "ids.txt"), None), datamodule=dm)
    assert dm.skip_counts() == {"bad_json": expected}
    assert dm.state_dict()["ranks"][0]["skips"] == {"bad_json": expected}
    summary = [r.getMessage() for r in caplog.records if "data summary" in r.getMessage()]
    assert summary and f"bad_json: {expected}" in summary[-1] and "3 batches trained on" in summary[-1]
