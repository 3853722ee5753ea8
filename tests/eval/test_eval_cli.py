"""The standalone evaluation: `mme5 evaluate` on a backbone and on a Lightning checkpoint."""

from __future__ import annotations

import json
import shutil

import lightning
import pytest
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


def test_evaluate_takes_an_image_root_per_benchmark(fixture_folders, tmp_path, capsys):
    """#11 item 6: the official image folders of the two benchmarks differ. mmE5's
    scripts/prepare_images.sh unpacks MMEB-eval's images.zip into images/eval_images/ (lines 60-63) and
    XTD-10's XTD10_dataset.tar.gz into images/ (lines 69-72, giving images/XTD10_dataset/), and its eval
    scripts pass them as --image_dir "images/eval_images/" (scripts/eval/eval_full.sh line 29) and
    "images/XTD10_dataset/" (scripts/eval/eval_full_multi.sh line 29); image paths are joined to that
    folder (src/dataset.py line 173). VLM2Vec's README (commit 1640113, lines 55 and 67) does the same
    for MMEB: `unzip images.zip -d eval_images/`, `--image_dir eval_images/`."""
    fx = fixture_folders
    images = tmp_path / "images"
    shutil.copytree(fx.image_root, images / "eval_images")
    shutil.copytree(fx.image_root / "photos", images / "XTD10_dataset" / "photos")
    args = [
        "evaluate",
        "--model",
        "tiny-llava",
        "--mmeb_dir",
        str(fx.mmeb_dir),
        "--xtd_dir",
        str(fx.xtd_dir),
        "--mmeb_image_root",
        str(images / "eval_images"),
        "--xtd_image_root",
        str(images / "XTD10_dataset"),
        "--datasets",
        "[OVEN]",
        "--languages",
        "[it]",
        "--max_rows",
        "2",
        "--device",
        "cpu",
        "--cache_dir",
        "null",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    assert mme5_main(args) == 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["mmeb"]["datasets"][0]["rows"] == 2 and saved["xtd"]["datasets"][0]["rows"] == 2
    assert saved["xtd"]["tie_rule"] == "truth_loses" and saved["mmeb"]["tie_rule"] == "truth_wins"
    # XTD's root is XTD's alone: an empty one fails, naming it, though MMEB's images are fine
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong = list(args)
    wrong[wrong.index(str(images / "XTD10_dataset"))] = str(empty)
    capsys.readouterr()
    assert mme5_main(wrong) == 2
    assert "empty/photos/" in capsys.readouterr().err
    # the shared --image_root is the fallback of a benchmark without its own root
    shared = [a for a in args if a not in ("--xtd_image_root", str(images / "XTD10_dataset"))]
    shared[shared.index("--mmeb_image_root")] = "--image_root"
    assert mme5_main(shared) == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_load_model_on_cuda_without_cuda_is_one_line():
    """From Python, as from the command line, a device the machine lacks is one DeviceError line."""
    from mme5.devices import DeviceError
    from mme5.eval.models import pick_device

    with pytest.raises(DeviceError, match="no CUDA GPU is visible") as info:
        pick_device("cuda")
    assert "\n" not in str(info.value)
