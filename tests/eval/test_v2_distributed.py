"""MMEB-V2 on 2 CPU processes (gloo) gives the same scores as 1 process, each item encoded once."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
from torch.multiprocessing.spawn import spawn

from mme5.demo.v2 import build_v2_demo
from mme5.eval.v2 import evaluate_mmeb_v2
from tests.eval.test_eval_distributed import _free_port
from tests.helpers.evalfixtures import HashEmbedder

TASKS = ["K700", "SmthSmthV2", "MSR-VTT", "ViDoRe_arxivqa"]


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = evaluate_mmeb_v2(HashEmbedder(), root, os.path.join(out, "work"), tasks=TASKS, batch_size=4)
        record = {
            "metrics": {t.name: t.metrics for t in result.tasks},
            "rows": {t.name: t.rows for t in result.tasks},
            "summary": result.summary,
            "encoded_here": result.encode.encoded_here,
        }
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump(record, f)
        dist.barrier()  # neither rank tears gloo down while the other is still in its last collective
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    root = build_v2_demo(tmp_path / "v2")
    single = evaluate_mmeb_v2(HashEmbedder(), root, tmp_path / "work", tasks=TASKS)
    torch.set_num_threads(1)
    spawn(_worker, args=(2, _free_port(), str(root), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rec in ranks:
        for t in single.tasks:
            assert rec["rows"][t.name] == t.rows
            assert rec["metrics"][t.name] == pytest.approx(t.metrics, abs=1e-9)
            assert rec["metrics"][t.name]["hit@1"] == t.metrics["hit@1"]
        assert rec["summary"] == pytest.approx(single.summary, abs=1e-9)
    halves = [rec["encoded_here"] for rec in ranks]
    assert sum(halves) == single.encode.distinct_items and min(halves) > 0
