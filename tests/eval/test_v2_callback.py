"""MMEBV2Evaluation inside a real Lightning fit on CPU, on the drawn V2 demo."""

from __future__ import annotations

import json

import pytest

from mme5.demo.v2 import build_v2_demo
from mme5.errors import ConfigError
from mme5.eval.callbacks import MMEBV2Evaluation
from mme5.eval.v2 import V2_TASKS
from tests.eval.test_eval_callbacks import _fit


def test_v2_callback_evaluates_during_fit(tmp_path, fixture_folders):
    root = build_v2_demo(tmp_path / "v2")
    cb = MMEBV2Evaluation(
        str(root),
        image_dir=str(fixture_folders.mmeb_dir),
        image_root=str(fixture_folders.image_root),
        every_n_steps=2,
        output_dir=str(tmp_path / "eval"),
    )
    trainer, _ = _fit(tmp_path, [cb], steps=4)
    assert [h["step"] for h in cb.history] == [2, 4]
    assert "mmeb_v2/Overall" in trainer.callback_metrics and "mmeb_v2/video" in cb.history[-1]
    saved = json.loads((tmp_path / "eval" / "mmeb_v2_step4.json").read_text())
    assert {"MSR-VTT", "ViDoRe_arxivqa", "ImageNet-1K"} <= {t["name"] for t in saved["tasks"]}
    official = [t for t in saved["tasks"] if t["name"] in V2_TASKS]  # beside the folder's custom ToyVQA
    assert len(saved["missing"]) + len(official) == 78 and len(saved["tasks"]) == len(official) + 1
    assert (tmp_path / "eval" / "mmeb_v2_step4.md").is_file()


def test_v2_callback_refuses_an_unknown_task():
    with pytest.raises(ConfigError, match="not one of the 78"):
        MMEBV2Evaluation("x", tasks=["NoSuchTask"])
    with pytest.raises(ConfigError, match="frame_input"):
        MMEBV2Evaluation("x", frame_input="video")
