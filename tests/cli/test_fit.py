"""A short fit through the real `mme5 fit` CLI: demo corpus, tiny Mllama twin, checkpoints, evaluation."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from mme5.cli import main


@pytest.mark.slow
def test_demo_fit_runs_a_few_steps_and_evaluates(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mme5"])
    demo_root = tmp_path / "demo"
    run = tmp_path / "run"
    config = yaml.safe_load(Path("configs/demo.yaml").read_text())
    trainer = config["trainer"]
    trainer.update(max_steps=3, log_every_n_steps=1, default_root_dir=str(run))
    trainer["logger"]["init_args"]["save_dir"] = str(run)
    checkpoint, mmeb, xtd = trainer["callbacks"]
    checkpoint["init_args"]["dirpath"] = str(run / "checkpoints")
    mmeb["init_args"].update(mmeb_dir=str(demo_root / "mmeb"), image_root=str(demo_root / "images"),
                             output_dir=str(run / "eval"), max_rows=4)
    xtd["init_args"].update(xtd_dir=str(demo_root / "xtd"), image_root=str(demo_root / "images"),
                            output_dir=str(run / "eval"), max_rows=4)
    config["data"].update(batch_size=4, num_workers=0)
    config["data"]["demo"].update(root=str(demo_root), train_samples=64)
    config_path = tmp_path / "demo-short.yaml"
    config_path.write_text(yaml.safe_dump(config))
    args = ["fit", "--config", str(config_path)]
    assert main(args) == 0
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 3  # the end-of-training state, not the last step-interval save
    mmeb = json.loads((run / "eval" / "mmeb_step3.json").read_text())["mmeb"]
    xtd = json.loads((run / "eval" / "xtd_step3.json").read_text())["xtd"]
    assert mmeb["step"] == 3 and not mmeb["missing"]
    assert set(mmeb["summary"]) >= {"Classification", "VQA", "Retrieval", "Grounding", "Overall"}
    assert mmeb["rows"] == 13 * 4 and all(0 <= v <= 100 for v in mmeb["summary"].values())
    assert {f"{lang}/R@10" for lang in ("it", "es", "ru", "zh", "pl", "tr", "ko")} <= set(xtd["summary"])
    assert xtd["rows"] == 7 * 4 and 0 <= xtd["summary"]["mean_R@10"] <= 100
    metrics = (run / "logs").rglob("metrics.csv")
    header = next(iter(metrics)).read_text().splitlines()[0]
    assert "train/loss" in header
