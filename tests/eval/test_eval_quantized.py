"""Quantized evaluation of a tiny twin on CPU: the same evaluation at full precision, int8 and nf4."""

from __future__ import annotations

import json
import math

import pytest

from mme5.eval.quantized import compare_quantized

pytest.importorskip("bitsandbytes")


def test_quantized_comparison_reports_deltas(fixture_folders, tmp_path):
    fx = fixture_folders
    results = compare_quantized(
        "tiny-llava",
        ["full", "int8", "nf4"],
        mmeb_dir=str(fx.mmeb_dir),
        xtd_dir=str(fx.xtd_dir),
        image_root=str(fx.image_root),
        datasets=["ImageNet-1K", "OVEN"],
        languages=["it"],
        max_rows=4,
        batch_size=16,
        device="cpu",
        output_dir=str(tmp_path),
    )
    assert [r.setting for r in results] == ["full", "int8", "nf4"]
    for r in results:
        assert set(r.scores) == {
            "MMEB Classification",
            "MMEB Retrieval",
            "MMEB IND",
            "MMEB OOD",
            "MMEB Overall",
            "XTD it R@10",
            "XTD mean R@10",
        }
        assert all(0.0 <= v <= 100.0 for v in r.scores.values())
        assert r.items_per_second > 0 and r.peak_memory_bytes >= 0 and r.memory_kind.startswith("cpu")
        # every item was really encoded in every setting (no cache across settings)
        assert r.mmeb.encode.encoded == r.mmeb.encode.distinct_items and r.mmeb.encode.from_cache == 0
    full, int8, nf4 = results
    # the quantized weights are smaller than the fp32 ones
    assert int8.weights_bytes < full.weights_bytes and nf4.weights_bytes < full.weights_bytes
    saved = json.loads((tmp_path / "quantized.json").read_text())
    for entry, r in zip(saved["settings"], results, strict=False):
        for key, delta in entry["deltas"].items():
            assert math.isclose(delta, r.scores[key] - full.scores[key], abs_tol=1e-9)
    table = (tmp_path / "quantized.md").read_text()
    assert "nf4 (Δ vs full)" in table and "| MMEB Overall |" in table and "items/s" in table
    assert (tmp_path / "quantized.png").stat().st_size > 1000
    assert (tmp_path / "quantized.csv").read_text().count("\n") == 3 * (7 + 2) + 1
