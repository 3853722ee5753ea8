"""Distributed evaluation on 2 CPU processes (gloo) gives the same scores as 1 process."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mme5.eval import DistContext, evaluate_mmeb, evaluate_xtd
from tests.helpers.evalfixtures import HashEmbedder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, paths: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ctx = DistContext.current()
        assert ctx.world_size == world and ctx.rank == rank
        model = HashEmbedder()
        mmeb = evaluate_mmeb(
            model, paths["mmeb"], paths["images"], batch_size=4, cache_dir=paths["cache"], fingerprint="m"
        )
        xtd = evaluate_xtd(model, paths["xtd"], paths["images"], batch_size=4)
        # a second run: rank 0 reads the cache and broadcasts it
        again = evaluate_mmeb(
            HashEmbedder(), paths["mmeb"], paths["images"], cache_dir=paths["cache"], fingerprint="m"
        )
        record = {
            "mmeb": [d.metrics for d in mmeb.datasets],
            "xtd": xtd.summary,
            "again": again.summary,
            "mmeb_summary": mmeb.summary,
            "encoded_here": mmeb.encode.encoded_here,
            "sides_seen": model.sides_seen,
            "from_cache": again.encode.from_cache,
        }
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(record, f)
        dist.barrier()  # neither rank tears gloo down while the other is still in its last collective
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(fixture_folders, tmp_path):
    fx = fixture_folders
    single = evaluate_mmeb(HashEmbedder(), fx.mmeb_dir, fx.image_root)
    single_xtd = evaluate_xtd(HashEmbedder(), fx.xtd_dir, fx.image_root)
    paths = {
        "mmeb": str(fx.mmeb_dir),
        "xtd": str(fx.xtd_dir),
        "images": str(fx.image_root),
        "cache": str(tmp_path / "cache"),
    }
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(2, _free_port(), paths, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rec in ranks:
        # hit counts are exact; MRR / nDCG sums differ only in float64 summation order
        for got, want in zip(rec["mmeb"], single.datasets, strict=False):
            assert got == pytest.approx(want.metrics, abs=1e-9)
            assert got["precision@1"] == want.metrics["precision@1"]
        assert rec["mmeb_summary"] == single.summary and rec["again"] == single.summary
        assert rec["xtd"] == single_xtd.summary
        assert rec["from_cache"] == single.encode.distinct_items
    # the items were split: each rank encoded about half, together all of them once
    halves = [rec["encoded_here"] for rec in ranks]
    assert sum(halves) == single.encode.distinct_items and min(halves) > 0


@pytest.mark.slow
def test_callback_under_lightning_ddp_equals_one_process(fixture_folders, tmp_path):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from mme5.eval import MMEBEvaluation
    from tests.eval.test_eval_callbacks import ProjectedHashModel

    fx = fixture_folders
    model = ProjectedHashModel()
    model.lr = 0.0  # the weights stay as they are: the main process can evaluate the same model
    callback = MMEBEvaluation(
        str(fx.mmeb_dir), str(fx.image_root), on_fit_end=True, batch_size=8, output_dir=str(tmp_path / "eval")
    )
    from torch.multiprocessing.spawn import ProcessExitedException

    # On a loaded 2-core machine a spawned gloo child occasionally aborts while tearing down its
    # process group ("terminate called without an active exception"), after the work is done; that is
    # torch's teardown, not the evaluation, so such a run is repeated once. Wrong scores still fail.
    for attempt in range(2):
        trainer = pl.Trainer(
            max_steps=2,
            accelerator="cpu",
            devices=2,
            strategy="ddp_spawn",
            logger=False,
            callbacks=[callback],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        try:
            trainer.fit(model, DataLoader(TensorDataset(torch.randn(8, 96 + 48)), batch_size=2))
            break
        except ProcessExitedException:
            if attempt == 1:
                raise
    saved = json.loads((tmp_path / "eval" / "mmeb_step2.json").read_text())["mmeb"]
    model.eval()
    with torch.no_grad():
        single = evaluate_mmeb(lambda s: model.embed_sides(s, 8), fx.mmeb_dir, fx.image_root)
    assert saved["summary"] == pytest.approx(single.summary, abs=1e-9)
    assert 0 < saved["encode"]["encoded_here"] < single.encode.distinct_items  # rank 0 encoded its share only
