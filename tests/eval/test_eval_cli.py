"""The standalone evaluation: `mme5 evaluate` on a backbone and on a Lightning checkpoint."""

from __future__ import annotations

import json

import lightning
import torch

from mme5.cli.main import main as mme5_main


def test_evaluate_prints_the_table_and_writes_json(fixture_folders, tmp_path, capsys):
    fx = fixture_folders
    args = [
        "--model",
        "tiny-llava",
        "--mmeb_dir",
        str(fx.mmeb_dir),
        "--xtd_dir",
        str(fx.xtd_dir),
        "--image_root",
        str(fx.image_root),
        "--max_rows",
        "3",
        "--languages",
        "[it]",
        "--device",
        "cpu",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    assert mme5_main(["evaluate", *args]) == 0
    out = capsys.readouterr().out
    assert "| Class | VQA | Retr | Ground | IND | OOD | Overall |" in out and "| R@10 |" in out
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["mmeb"]["encode"]["encoded"] == saved["mmeb"]["encode"]["distinct_items"]
    assert "CIRR" in saved["mmeb"]["missing"]
    # the same model again: everything comes from the cache, same numbers
    assert mme5_main(["evaluate", *args]) == 0
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["mmeb"]["encode"]["encoded"] == 0 and again["mmeb"]["summary"] == saved["mmeb"]["summary"]


def test_evaluate_a_checkpoint(fixture_folders, tmp_path, capsys):
    from mme5.training.module import EmbeddingModule, EncoderSettings

    module = EmbeddingModule(encoder=EncoderSettings(model="tiny-llava"))
    ckpt = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        ckpt,
    )
    fx = fixture_folders
    code = mme5_main(
        [
            "evaluate",
            "--model",
            str(ckpt),
            "--mmeb_dir",
            str(fx.mmeb_dir),
            "--image_root",
            str(fx.image_root),
            "--datasets",
            "[VisualNews_t2i]",
            "--max_rows",
            "4",
            "--cache_dir",
            "null",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert "| Retrieval | VisualNews_t2i | IND | 4 |" in capsys.readouterr().out


def test_user_errors_are_one_line(fixture_folders, tmp_path, capsys):
    assert (
        mme5_main(
            ["evaluate", "--model", str(tmp_path / "none.ckpt"), "--mmeb_dir", str(fixture_folders.mmeb_dir)]
        )
        == 2
    )
    assert "checkpoint" in capsys.readouterr().err
    assert mme5_main(["evaluate", "--model", "tiny-llava"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
