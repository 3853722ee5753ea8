"""`mme5 fit` with `trainer.strategy: fsdp2` on 2 CPU processes, end to end: it trains, evaluates in
lockstep (the ranks' shares of items differ in size), writes a full-state checkpoint that exports and
scores standalone exactly as the callback scored it, and a fit resumed from its mid-run checkpoint
ends with the weights of the uninterrupted one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).parents[2]
STEPS, MAX_ROWS = 6, 11  # 11 rows per dataset: an odd number of distinct items, so the ranks' shares differ


def _config(tmp_path: Path, name: str, demo_root: Path) -> Path:
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    run = tmp_path / name
    trainer = config["trainer"]
    trainer.update(
        devices=2,
        strategy="fsdp2",
        max_steps=STEPS,
        max_epochs=-1,
        default_root_dir=str(run),
        enable_progress_bar=False,
        logger=False,
    )
    trainer["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(run / "checkpoints"),
                "save_last": True,
                "every_n_train_steps": 3,
                "save_top_k": -1,
            },
        },
        {
            "class_path": "mme5.eval.MMEBEvaluation",
            "init_args": {
                "mmeb_dir": str(demo_root / "mmeb"),
                "image_root": str(demo_root / "images"),
                "output_dir": str(run / "eval"),
                "max_rows": MAX_ROWS,
                "batch_size": 16,
                "cache_dir": str(run / "cache"),
            },
        },  # fingerprints the sharded weights
    ]
    config["data"].update(batch_size=8, num_workers=0)
    config["data"]["demo"].update(root=str(demo_root), train_samples=64)  # 4 steps of 2 x 8: crosses an epoch
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(*args: str) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mme5.cli", *args],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def _p1(result: dict) -> dict[str, float]:
    return {d["name"]: d["metrics"]["precision@1"] for d in result["datasets"]}


@pytest.mark.slow
def test_fsdp2_fit_evaluates_checkpoints_exports_and_resumes(tmp_path):
    demo_root = tmp_path / "demo"
    straight = _config(tmp_path, "straight", demo_root)
    _run("fit", "--config", str(straight))
    run = tmp_path / "straight"
    final = _state(run / "checkpoints" / "last.ckpt")
    assert final["global_step"] == STEPS
    weights = final["state_dict"]
    assert all(not hasattr(t, "full_tensor") for t in weights.values())  # full tensors, not shards
    assert any("vision_model" in name for name in weights)

    # the callback's end-of-fit scores (2 ranks, sharded model) = a standalone single-process evaluation
    during = json.loads((run / "eval" / f"mmeb_step{STEPS}.json").read_text())["mmeb"]
    assert during["rows"] == MAX_ROWS * len(during["datasets"])
    assert during["encode"]["distinct_items"] % 2 == 1 and during["encode"]["from_cache"] == 0
    _run("export", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "exported"))
    _run(
        "evaluate",
        "--model",
        str(tmp_path / "exported"),
        "--mmeb_dir",
        str(demo_root / "mmeb"),
        "--image_root",
        str(demo_root / "images"),
        "--max_rows",
        str(MAX_ROWS),
        "--cache_dir",
        "null",
        "--output_dir",
        str(tmp_path / "standalone"),
    )
    standalone = json.loads((tmp_path / "standalone" / "results.json").read_text())["mmeb"]
    assert _p1(standalone) == pytest.approx(_p1(during), abs=1e-9)

    # resumed from the step-3 checkpoint of another run: same weights as straight through
    resumed = _config(tmp_path, "resumed", demo_root)
    mid = run / "checkpoints" / "epoch=0-step=3.ckpt"
    _run("fit", "--config", str(resumed), "--ckpt_path", str(mid))
    again = _state(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert again["global_step"] == STEPS and again["state_dict"].keys() == weights.keys()
    for name, t in weights.items():
        torch.testing.assert_close(again["state_dict"][name], t, rtol=0, atol=1e-6, msg=name)
