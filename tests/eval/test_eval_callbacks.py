"""The MMEB / XTD callbacks inside a real Lightning fit on CPU."""

from __future__ import annotations

import csv
import json
import shutil

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from mme5.errors import ConfigError, MissingPathError
from mme5.eval import evaluate_mmeb
from mme5.eval.callbacks import MMEBEvaluation, XTDEvaluation
from tests.helpers.evalfixtures import HashEmbedder


class ProjectedHashModel(pl.LightningModule):
    """Hash features -> a trainable linear map: a small real module with ``embed_sides``."""

    def __init__(self, dim: int = 24):
        super().__init__()
        self.features = HashEmbedder()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(96 + 48, dim)
        self.embed_calls = 0
        self.lr = 0.5

    def embed_sides(self, sides, batch_size):
        assert not self.training and not torch.is_grad_enabled()
        self.embed_calls += 1
        return F.normalize(self.proj(self.features(sides)), dim=-1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return (self.proj(x) - 1.0).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _fit(tmp_path, callbacks, steps=4):
    data = DataLoader(TensorDataset(torch.randn(steps * 2, 96 + 48)), batch_size=2)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path, name="run"),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    model = ProjectedHashModel()
    trainer.fit(model, data)
    return trainer, model


def test_callbacks_evaluate_during_fit(fixture_folders, tmp_path):
    fx = fixture_folders
    mmeb = MMEBEvaluation(
        str(fx.mmeb_dir),
        str(fx.image_root),
        datasets=["ImageNet-1K", "OVEN", "CIRR"],
        every_n_steps=2,
        max_rows=8,
        batch_size=16,
    )
    xtd = XTDEvaluation(
        str(fx.xtd_dir),
        str(fx.image_root),
        languages=["it", "es"],
        on_fit_end=True,
        output_dir=str(tmp_path / "xtd_reports"),
    )
    trainer, model = _fit(tmp_path, [mmeb, xtd])
    assert [h["step"] for h in mmeb.history] == [2, 4]  # the end of training is step 4: not evaluated twice
    assert [h["step"] for h in xtd.history] == [4]
    assert mmeb.last_result is not None
    assert mmeb.last_result.missing == ["CIRR"] and mmeb.last_result.rows == 16
    # scores moved with training, and equal a standalone evaluation of the trained module
    model.eval()
    with torch.no_grad():
        standalone = evaluate_mmeb(
            lambda s: model.embed_sides(s, 16),
            fx.mmeb_dir,
            fx.image_root,
            datasets=["ImageNet-1K", "OVEN"],
            max_rows=8,
        )
    assert mmeb.last_result.summary == standalone.summary
    out = tmp_path / "run" / "version_0" / "eval"
    assert (out / "mmeb_scores.png").stat().st_size > 1000
    assert json.loads((out / "mmeb_history.json").read_text()) == mmeb.history
    saved = json.loads((out / "mmeb_step4.json").read_text())["mmeb"]
    assert saved["summary"] == mmeb.last_result.summary and saved["missing"] == ["CIRR"]
    assert "| Class |" in (out / "mmeb_step2.md").read_text()
    assert (tmp_path / "xtd_reports" / "xtd_scores.png").exists()
    assert "xtd/mean_R@10" in trainer.callback_metrics and "mmeb/Overall" in trainer.callback_metrics
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [(int(r["step"]), float(r["mmeb/Overall"])) for r in rows if r.get("mmeb/Overall")]
    assert [s for s, _ in logged] == [2, 4]
    assert logged[-1][1] == pytest.approx(mmeb.last_result.summary["Overall"])
    assert mmeb.state_dict()["history"] == mmeb.history


def test_callback_needs_embed_sides(fixture_folders, tmp_path):
    class Plain(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 2)

        def training_step(self, batch, batch_idx):
            return self.w(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        callbacks=[MMEBEvaluation(str(fixture_folders.mmeb_dir), str(fixture_folders.image_root))],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(ConfigError, match="embed_sides"):
        trainer.fit(Plain(), DataLoader(TensorDataset(torch.randn(2, 2)), batch_size=2))
    with pytest.raises(ConfigError, match="every_n_steps"):
        MMEBEvaluation("x", every_n_steps=0)


def test_wrong_image_root_fails_at_setup_before_the_first_step(fixture_folders, tmp_path):
    """#16 item 13: a wrong image_root used to surface only when the evaluation ran, after training.
    Setup checks the folder and a sample of the image paths: one line naming the path, no step run."""
    fx = fixture_folders
    wrong = tmp_path / "not-the-images"
    wrong.mkdir()
    model_steps: list[int] = []

    class Counting(ProjectedHashModel):
        def training_step(self, batch, batch_idx):
            model_steps.append(batch_idx)
            return super().training_step(batch, batch_idx)

    for root, pattern in (
        (wrong, r"XTDEvaluation: image '.*not-the-images/photos/"),
        (tmp_path / "nope", "nope"),
    ):
        xtd = XTDEvaluation(str(fx.xtd_dir), str(root), languages=["it"], every_n_steps=1)
        trainer = pl.Trainer(
            max_steps=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            callbacks=[xtd],
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        with pytest.raises(MissingPathError, match=pattern) as info:
            trainer.fit(Counting(), DataLoader(TensorDataset(torch.randn(4, 96 + 48)), batch_size=2))
        assert "\n" not in str(info.value)
        assert model_steps == [] and xtd.history == []


def test_each_benchmark_has_its_own_image_root(fixture_folders, tmp_path):
    """#11 item 6: MMEB's and XTD's official image folders differ (mmE5 scripts/prepare_images.sh
    lines 60-73: images.zip unpacked into images/eval_images/, XTD10_dataset.tar.gz into
    images/XTD10_dataset/; scripts/eval/eval_full.sh line 29 and eval_full_multi.sh line 29 pass those as
    --image_dir). Each callback takes its own root, checked at setup."""
    fx = fixture_folders
    xtd_images = tmp_path / "XTD10_dataset"
    shutil.copytree(fx.image_root, xtd_images)
    mmeb = MMEBEvaluation(str(fx.mmeb_dir), str(fx.image_root), datasets=["OVEN"], max_rows=4)
    xtd = XTDEvaluation(str(fx.xtd_dir), str(xtd_images), languages=["it"])
    _fit(tmp_path, [mmeb, xtd], steps=1)
    assert mmeb.last_result is not None and xtd.last_result is not None
