"""Quantized evaluation of a tiny twin on CPU: the same evaluation at full precision, int8 and nf4
weights, and the reference's embeddings truncated and quantized (int8, binary)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mme5.errors import ConfigError
from mme5.eval.models import load_model
from mme5.eval.quantized import as_vectors, compare_quantized, embedding_variants
from mme5.eval.runner import evaluate_mmeb, evaluate_xtd


def test_quantized_comparison_reports_deltas(fixture_folders, tmp_path):
    pytest.importorskip("bitsandbytes")
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
        embedding_precisions=(),
        dims=(),
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
    assert (tmp_path / "quantized.csv").read_text().count("\n") == 3 * (7 + 3) + 1
    assert all(r.bytes_per_vector == 4 * 64 and r.embedding == "float32" for r in results)


def test_embedding_rows_score_the_transformed_reference_embeddings(fixture_folders, tmp_path):
    """Rows for int8 / binary embeddings and truncated dimensions, each with its bytes per vector; a
    truncated row scores exactly as the model's own embeddings cut and re-normalised by hand."""
    fx = fixture_folders
    kw = dict(
        mmeb_dir=str(fx.mmeb_dir),
        xtd_dir=str(fx.xtd_dir),
        image_root=str(fx.image_root),
        datasets=["ImageNet-1K", "OVEN"],
        languages=["it"],
        max_rows=4,
        batch_size=16,
        device="cpu",
    )
    results = compare_quantized("tiny-llava", ["full"], output_dir=str(tmp_path), dims=[24], **kw)
    names = [r.name for r in results]
    assert names == [
        "full",
        "full/emb-int8",
        "full/emb-ubinary",
        "full/dim24",
        "full/dim24/emb-int8",
        "full/dim24/emb-ubinary",
    ]
    assert [r.bytes_per_vector for r in results] == [256, 64, 8, 96, 24, 3]
    assert [r.dim for r in results] == [64, 64, 64, 24, 24, 24]
    for r in results:
        assert set(r.scores) == set(results[0].scores) and all(0 <= v <= 100 for v in r.scores.values())
    # the reference: evaluate the model's embeddings cut to 24 and re-normalised, encoded again
    loaded = load_model("tiny-llava", device="cpu", batch_size=16)

    def cut(sides):
        return F.normalize(loaded.embed(sides)[:, :24], dim=-1)

    mmeb = evaluate_mmeb(
        cut, kw["mmeb_dir"], kw["image_root"], datasets=kw["datasets"], max_rows=4, batch_size=16
    )
    xtd = evaluate_xtd(cut, kw["xtd_dir"], kw["image_root"], languages=["it"], max_rows=4, batch_size=16)
    dim24 = results[3]
    assert dim24.mmeb is not None and dim24.xtd is not None
    for got, want in zip(dim24.mmeb.datasets + dim24.xtd.datasets, mmeb.datasets + xtd.datasets, strict=True):
        assert got.metrics == pytest.approx(want.metrics, abs=1e-9), got.name
    table = (tmp_path / "quantized.md").read_text()
    assert "| full/dim24/emb-ubinary | ubinary | 24 | 3 |" in table and "bytes / vector" in table
    saved = json.loads((tmp_path / "quantized.json").read_text())
    assert [e["bytes_per_vector"] for e in saved["settings"]] == [256, 64, 8, 96, 24, 3]


def test_embedding_vectors_rank_as_their_precision_scores():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((23, 37)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    b = as_vectors(x, "ubinary")
    hamming = ((x[:, None, :] > 0) != (x[None, :, :] > 0)).sum(-1)
    np.testing.assert_allclose(b @ b.T, 1 - 2 * hamming / 37, rtol=1e-6, atol=1e-6)
    ranges = np.vstack([x.min(0), x.max(0)])
    q = as_vectors(x, "int8", ranges)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, rtol=1e-5)
    assert (q * x).sum(1).min() > 0.97  # int8 vectors stay close to the floats
    assert torch.is_tensor(torch.from_numpy(q))


def test_embedding_variants_and_their_errors():
    assert embedding_variants(["int8"], None, 64) == [
        (None, "int8"),
        (16, "float32"),
        (16, "int8"),
        (32, "float32"),
        (32, "int8"),
    ]
    assert embedding_variants([], [64, 8], 64) == [(8, "float32")]
    with pytest.raises(ConfigError, match="--dim 65 is not between 1"):
        embedding_variants([], [65], 64)
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        compare_quantized("tiny-llava", ["full"], mmeb_dir="x", embedding_precisions=["int4"])


def test_each_benchmark_reads_images_from_its_own_root(fixture_folders, tmp_path, capsys):
    """``mme5 eval-quantized --mmeb_image_root A --xtd_image_root B``: MMEB's images are read under A
    only and XTD's under B only (the official folders differ: eval_images/ vs XTD10_dataset/)."""
    from mme5.cli.main import main

    fx = fixture_folders
    empty = tmp_path / "empty"
    empty.mkdir()
    common = ["eval-quantized", "--model", "tiny-llava", "--settings", "[full]", "--device", "cpu"]
    common += ["--mmeb_dir", str(fx.mmeb_dir), "--xtd_dir", str(fx.xtd_dir), "--datasets", "[OVEN]"]
    common += ["--languages", "[it]", "--max_rows", "3", "--isolate", "false", "--dims", "[]"]
    common += ["--embedding_precisions", "[]"]
    out = ["--output_dir", str(tmp_path / "q")]
    assert main([*common, *out, "--mmeb_image_root", str(fx.image_root), "--xtd_image_root", str(empty)]) == 2
    assert f"image_root '{empty}'" in capsys.readouterr().err
    assert main([*common, *out, "--mmeb_image_root", str(empty), "--xtd_image_root", str(fx.image_root)]) == 2
    assert f"image_root '{empty}'" in capsys.readouterr().err
    both = ["--mmeb_image_root", str(fx.image_root), "--xtd_image_root", str(fx.image_root)]
    assert main([*common, *out, *both]) == 0
