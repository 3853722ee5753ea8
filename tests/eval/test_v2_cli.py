"""``mme5 evaluate --mmeb_v2_root``: a tiny twin on the drawn V2 demo, the summary printed and written."""

from __future__ import annotations

import json

import pytest

from mme5.cli.main import main as mme5_main
from mme5.eval.v2 import V2_TASKS


@pytest.mark.slow  # ~20 s on 2 cores (a tiny twin encodes every side)
def test_evaluate_mmeb_v2_on_the_demo(fixture_folders, tmp_path, capsys):
    out_dir = tmp_path / "out"
    args = [
        "evaluate",
        "--model",
        "tiny-llava",
        "--mmeb_dir",
        str(fixture_folders.mmeb_dir),
        "--mmeb_image_root",
        str(fixture_folders.image_root),
        "--mmeb_v2_root",
        "demo",
        "--max_rows",
        "4",
        "--device",
        "cpu",
        "--cache_dir",
        str(tmp_path / "cache"),
        "--output_dir",
        str(out_dir),
    ]
    assert mme5_main(args) == 0
    printed = capsys.readouterr().out
    assert "MMEB-V2 (" in printed and "| video (3/18) | visdoc (1/24) | Overall (" in printed
    saved = json.loads((out_dir / "mmeb_v2.json").read_text())
    assert {t["name"] for t in saved["tasks"]} >= {"ImageNet-1K", "MSR-VTT", "K700", "ViDoRe_arxivqa"}
    official = [t for t in saved["tasks"] if t["name"] in V2_TASKS]  # beside the folder's custom ToyVQA
    assert len(saved["missing"]) == 78 - len(official) and len(saved["tasks"]) == len(official) + 1
    assert (out_dir / "mmeb_v2.md").is_file() and (out_dir / "results.json").is_file()
    # the image tasks were scored once, by the MMEB run, and reused
    mmeb = json.loads((out_dir / "results.json").read_text())["mmeb"]
    v1 = {d["name"]: d["metrics"]["precision@1"] for d in mmeb["datasets"]}
    assert all(t["metrics"]["hit@1"] == v1[t["name"]] for t in saved["tasks"] if t["kind"] == "image")


@pytest.mark.slow
def test_evaluate_an_export_on_the_official_v2_layouts(tmp_path, capsys):
    """The user's chain: an exported Qwen2-VL model (videos through its video input) scored by `mme5
    evaluate` on a root in VLM2Vec's layouts: image-query/ + image-tasks/ (V2 image rows) and the video
    tasks' hub snapshots with their frame folders, fixtures written from the official loaders' columns."""
    from mme5.model.encoder import Encoder, EncoderSettings
    from mme5.model.export import export
    from tests.eval.test_v2_convert import E2E, _official_root
    from tests.eval.test_v2_images import TASKS as IMAGE_TASKS
    from tests.eval.test_v2_images import build_v2_images

    root = tmp_path / "MMEB-V2"
    _official_root(root)
    build_v2_images(root)
    folder = export(Encoder(EncoderSettings("tiny-qwen2-vl", max_length=96)), tmp_path / "export")
    tasks = [*IMAGE_TASKS[:3], *E2E]
    out_dir = tmp_path / "out"
    args = ["evaluate", "--model", str(folder), "--mmeb_v2_root", str(root), "--v2_tasks", json.dumps(tasks)]
    args += ["--device", "cpu", "--cache_dir", "null", "--output_dir", str(out_dir)]
    assert mme5_main(args) == 0
    printed = capsys.readouterr().out
    assert "through the backbone's video input" in printed
    saved = json.loads((out_dir / "mmeb_v2.json").read_text())
    assert [t["name"] for t in saved["tasks"]] == tasks and saved["missing"] == []  # report order
    assert saved["video_input"] and {"image", "video", "Overall"} <= set(saved["summary"])
    by = {t["name"]: t for t in saved["tasks"]}
    assert by["MSR-VTT"]["skipped"] == 1 and any("video3 (absent)" in m for m in saved["missing_frames"])
    assert by["HMDB51"]["candidates"] == 51  # the official class list is the corpus
    assert all(0 <= t["metrics"][t["main"]] <= 100 and t["rows"] > 0 for t in saved["tasks"])
