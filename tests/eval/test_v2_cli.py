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
