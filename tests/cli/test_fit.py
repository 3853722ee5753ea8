"""A short fit through the real `mme5 fit` CLI: demo corpus, tiny Mllama twin, checkpoints, evaluation."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from mme5.cli.main import main


def _short_demo_config(
    tmp_path: Path, demo_root: Path, max_steps: int, max_rows: int, train_samples: int
) -> Path:
    """configs/demo.yaml shortened; where its outputs go is left to the defaults (the root dir)."""
    config = yaml.safe_load(Path("configs/demo.yaml").read_text())
    trainer = config["trainer"]
    trainer.update(max_steps=max_steps, log_every_n_steps=1)
    _, mmeb, xtd, v2 = trainer["callbacks"]
    images = str(demo_root / "images")
    mmeb["init_args"].update(mmeb_dir=str(demo_root / "mmeb"), image_root=images, max_rows=max_rows)
    xtd["init_args"].update(xtd_dir=str(demo_root / "xtd"), image_root=images, max_rows=max_rows)
    v2["init_args"].update(
        root=str(demo_root / "mmeb_v2"),
        image_dir=str(demo_root / "mmeb"),
        image_root=images,
        max_rows=max_rows,
    )
    config["data"].update(batch_size=4, num_workers=0)
    config["data"]["demo"].update(root=str(demo_root), train_samples=train_samples)
    path = tmp_path / "demo-short.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_demo_fit_runs_a_few_steps_and_evaluates(tmp_path, monkeypatch, capsys):
    """Every path relative to the working folder, as configs/demo.yaml has them."""
    monkeypatch.setattr("sys.argv", ["mme5"])
    demo_root, run = Path("demo"), Path("run")
    config_path = _short_demo_config(tmp_path, demo_root, max_steps=3, max_rows=4, train_samples=64)
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(config_path), "--trainer.default_root_dir", str(run)]
    assert main(args) == 0
    version = run / "lightning_logs" / "version_0"  # Lightning's default logger (CSV without tensorboard)
    last = torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 3  # the end-of-training state, not the last step-interval save
    mmeb = json.loads((version / "eval" / "mmeb_step3.json").read_text())["mmeb"]
    xtd = json.loads((version / "eval" / "xtd_step3.json").read_text())["xtd"]
    assert mmeb["step"] == 3 and not mmeb["missing"]
    assert set(mmeb["summary"]) >= {"Classification", "VQA", "Retrieval", "Grounding", "Overall"}
    assert mmeb["rows"] == 13 * 4 and all(0 <= v <= 100 for v in mmeb["summary"].values())
    assert {f"{lang}/R@10" for lang in ("it", "es", "ru", "zh", "pl", "tr", "ko")} <= set(xtd["summary"])
    assert xtd["rows"] == 7 * 4 and 0 <= xtd["summary"]["mean_R@10"] <= 100
    v2 = json.loads((version / "eval" / "mmeb_v2_step3.json").read_text())
    assert v2["step"] == 3 and {"image", "video", "visdoc", "Overall"} <= set(v2["summary"])
    by_name = {t["name"]: t for t in v2["tasks"]}
    assert {"MSR-VTT", "K700", "SmthSmthV2", "ViDoRe_arxivqa"} <= set(by_name) and not v2["missing_frames"]
    for d in mmeb["datasets"]:  # the demo's image tasks, as the MMEB run of the same step scored them
        assert by_name[d["name"]]["metrics"]["hit@1"] == pytest.approx(d["metrics"]["precision@1"])
    printed = capsys.readouterr().out
    assert "MMEB-V2 after step 3" in printed and "| image (13/36) |" in printed
    metrics = (run / "lightning_logs").rglob("metrics.csv")
    header = next(iter(metrics)).read_text().splitlines()[0]
    assert "train/loss" in header


@pytest.mark.slow
def test_two_runs_with_their_own_root_dirs_keep_everything_apart(tmp_path, monkeypatch):
    """Two fits of one config that differ only in --trainer.default_root_dir leave two complete run
    folders (logs, checkpoints, evaluation reports, resolved config) and write nothing anywhere else."""
    monkeypatch.setattr("sys.argv", ["mme5"])
    demo_root = tmp_path / "demo"
    config_path = _short_demo_config(tmp_path, demo_root, max_steps=1, max_rows=2, train_samples=16)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for name in ("first", "second"):
        assert main(["fit", "--config", str(config_path), "--trainer.default_root_dir", name]) == 0
    assert sorted(p.name for p in work.iterdir()) == ["first", "second"]  # nothing in the working folder
    for name in ("first", "second"):
        version = work / name / "lightning_logs" / "version_0"
        assert sorted(p.name for p in version.iterdir()) == [
            "checkpoints",
            "config.yaml",
            "eval",
            "hparams.yaml",
            "metrics.csv",
        ]
        assert (version / "checkpoints" / "last.ckpt").is_file()
        assert {p.name for p in (version / "eval").glob("*_step1.json")} == {
            "mmeb_step1.json",
            "xtd_step1.json",
            "mmeb_v2_step1.json",
        }
        assert "train/loss" in (version / "metrics.csv").read_text().splitlines()[0]
        assert [p for p in (work / name).rglob("*") if p.is_file() and version not in p.parents] == []
