"""Exact resume: a fit killed with SIGKILL mid-epoch and resumed sees the uninterrupted run's batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mme5.data import DataError, ShardDataModule, ShardSet
from tests.helpers import repo_env
from tests.helpers.resume_fit import make_datamodule
from tests.helpers.shard_fixtures import list_collate, write_set


def _mixture(tmp_path: Path) -> list[ShardSet]:
    a = write_set(tmp_path / "a", "a", 6, 7, image_every=2)
    b = write_set(tmp_path / "b", "b", 4, 5)
    return [ShardSet(a), ShardSet(b, 2.0)]


def _module(sets, **kw) -> ShardDataModule:
    kw = {
        "batch_size": 3,
        "num_workers": 2,
        "collate_fn": list_collate,
        "shuffle_buffer": 4,
        "shuffle_shards": 2,
        "seed": 3,
        **kw,
    }
    return ShardDataModule(train=sets, **kw)


def test_state_dict_resumes_at_every_position(tmp_path):
    """In process, two workers, a weighted mixture: stop after k batches, restore, compare."""
    sets = _mixture(tmp_path)
    full = list(_module(sets).loader(rank=0, world_size=1))
    assert len(full) == 20
    for k in [0, 1, 2, 5, 8, 13, 19, 20]:
        first = _module(sets)
        it = iter(first.loader(rank=0, world_size=1))
        head = [next(it) for _ in range(k)]
        state = first.state_dict()
        del it
        assert [r["batches"] for r in state["ranks"]] == [k]
        again = _module(sets)
        again.load_state_dict(state)
        assert head + list(again.loader(rank=0, world_size=1)) == full, k


def test_resume_with_other_settings_is_refused(tmp_path):
    sets = _mixture(tmp_path)
    first = _module(sets)
    it = iter(first.loader(rank=0, world_size=1))
    next(it)
    state = first.state_dict()
    del it
    with pytest.raises(DataError, match=r"other data settings \(num_workers 2 -> 1\)"):
        _module(sets, num_workers=1).load_state_dict(state)


def _fit(tmp_path: Path, sets: list[ShardSet], out: str, *extra: str) -> subprocess.CompletedProcess:
    specs = [f"{s.shards}:{s.weight}" for s in sets]
    cmd = [
        sys.executable,
        "-m",
        "tests.helpers.resume_fit",
        "--shards",
        *specs,
        "--out",
        str(tmp_path / out),
        *extra,
    ]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        check=False,
        env=repo_env(dict(os.environ)),
    )


def _ids(path: Path) -> list[tuple[int, int, str]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(int(step), int(epoch), ids) for step, epoch, ids in rows]


def test_sigkill_mid_epoch_then_resume_sees_the_same_batches(tmp_path):
    """Real processes: a Lightning fit (2 workers, shuffling, a mixture) SIGKILLed at step 10 of a
    20-step epoch, resumed from its step-8 checkpoint; its batches, and those before the kill, equal
    the uninterrupted order (the same loader iterated in this process, two epochs)."""
    sets = _mixture(tmp_path)
    dm = make_datamodule(sets)
    loader = dm.loader(rank=0, world_size=1)
    reference = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            reference.append((len(reference), epoch, ",".join(batch)))
    assert len(reference) == 40

    killed = _fit(tmp_path, sets, "killed.txt", "--ckpt-dir", str(tmp_path / "ck"), "--kill-at-step", "10")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "ck" / "epoch=0-step=8.ckpt").exists()
    assert not (tmp_path / "ck" / "epoch=0-step=12.ckpt").exists()
    resumed = _fit(
        tmp_path,
        sets,
        "resumed.txt",
        "--ckpt-dir",
        str(tmp_path / "ck"),
        "--resume",
        str(tmp_path / "ck" / "last.ckpt"),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr

    before, after = _ids(tmp_path / "killed.txt"), _ids(tmp_path / "resumed.txt")
    assert before == reference[:10]  # the killed run got as far as step 10
    assert after[0][0] == 8  # resumed from the step-8 checkpoint, mid-epoch 0 ...
    assert after == reference[8:]  # ... and saw exactly the same batches, across the epoch end


@pytest.mark.slow
def test_ddp_ranks_match_single_process_and_resume(tmp_path):
    """Two CPU ranks (DDP, gloo): each rank's batches equal the single-process loader for that rank; the
    checkpoint holds both ranks' positions (gathered); a DDP fit resumed from a mid-epoch checkpoint
    continues every rank exactly."""
    sets = _mixture(tmp_path)
    dm = make_datamodule(sets)
    reference = {}
    for rank in range(2):
        loader = dm.loader(rank=rank, world_size=2)
        rows = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            for batch in loader:
                rows.append((len(rows), epoch, ",".join(batch)))
        reference[rank] = rows
    assert len(reference[0]) == len(reference[1]) == 20  # 62 samples // (2 ranks x 3) = 10 per epoch

    full = _fit(tmp_path, sets, "ddp.txt", "--ckpt-dir", str(tmp_path / "ck"), "--devices", "2")
    assert full.returncode == 0, full.stderr[-3000:]
    for rank in range(2):
        assert _ids(tmp_path / f"ddp.txt.rank{rank}") == reference[rank], rank
    import torch

    state = torch.load(tmp_path / "ck" / "epoch=0-step=4.ckpt", weights_only=False)["ShardDataModule"]
    assert state["world_size"] == 2 and [r["batches"] for r in state["ranks"]] == [4, 4]

    resumed = _fit(
        tmp_path,
        sets,
        "ddp_resumed.txt",
        "--ckpt-dir",
        str(tmp_path / "ck2"),
        "--devices",
        "2",
        "--resume",
        str(tmp_path / "ck" / "epoch=0-step=4.ckpt"),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for rank in range(2):
        assert _ids(tmp_path / f"ddp_resumed.txt.rank{rank}") == reference[rank][4:], rank


@pytest.mark.slow
def test_resume_from_the_checkpoint_at_the_end_of_an_epoch(tmp_path):
    """A checkpoint written after the last batch of epoch 0 resumes into a fresh epoch 1, as uninterrupted."""
    sets = _mixture(tmp_path)
    dm = make_datamodule(sets)
    loader = dm.loader(rank=0, world_size=1)
    loader.set_epoch(1)
    epoch1 = [(20 + i, 1, ",".join(batch)) for i, batch in enumerate(loader)]
    first = _fit(
        tmp_path, sets, "first.txt", "--ckpt-dir", str(tmp_path / "ck"), "--every", "20", "--epochs", "1"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _fit(
        tmp_path,
        sets,
        "resumed.txt",
        "--ckpt-dir",
        str(tmp_path / "ck"),
        "--resume",
        str(tmp_path / "ck" / "epoch=0-step=20.ckpt"),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _ids(tmp_path / "resumed.txt") == epoch1


def test_resume_to_train_longer_in_process(tmp_path):
    """A fit stopped by ``max_steps`` at step 10 of a 20-step epoch (Lightning's loop state: epoch 0
    completed; data state: batch 10), resumed from its end-of-fit checkpoint with a higher
    ``max_steps``, sees the rest of epoch 0 and then epoch 1, exactly as an uninterrupted 30-step fit.
    In one process; ``tests/cli/test_resume.py`` runs the same through `mme5 fit` with a loader worker
    and compares the weights."""
    import lightning as L

    from mme5.training.checkpoints import AtomicCheckpointIO
    from tests.helpers.resume_fit import RecordingModule

    sets = _mixture(tmp_path)
    loader = make_datamodule(sets, workers=0).loader(rank=0, world_size=1)
    reference = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        reference += [",".join(batch) for batch in loader]

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
            RecordingModule(str(tmp_path / out), None), make_datamodule(sets, workers=0), ckpt_path=ckpt_path
        )
        return trainer

    fit("first.txt", 10).save_checkpoint(tmp_path / "first.ckpt")
    longer = fit("longer.txt", 30, tmp_path / "first.ckpt")
    assert longer.global_step == 30
    assert [ids for _, _, ids in _ids(tmp_path / "first.txt")] == reference[:10]
    assert [ids for _, _, ids in _ids(tmp_path / "longer.txt")] == reference[10:30]
