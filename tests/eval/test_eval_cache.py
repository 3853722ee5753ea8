"""The embedding cache: a re-run of the same model encodes nothing; another model misses it."""

from __future__ import annotations

import os

import pytest
import torch

from mme5.errors import ConfigError
from mme5.eval import EmbeddingCache, evaluate_mmeb, evaluate_xtd, model_fingerprint
from tests.helpers.evalfixtures import HashEmbedder


def test_rerun_hits_and_model_change_misses(fixture_folders, tmp_path):
    fx, cache = fixture_folders, tmp_path / "cache"
    model_a = HashEmbedder()
    first = evaluate_mmeb(model_a, fx.mmeb_dir, fx.image_root, cache_dir=cache, fingerprint="model-a")
    assert first.encode.encoded == first.encode.distinct_items > 0 and first.encode.from_cache == 0

    again = HashEmbedder()
    second = evaluate_mmeb(again, fx.mmeb_dir, fx.image_root, cache_dir=cache, fingerprint="model-a")
    assert again.sides_seen == 0 and second.encode.encoded == 0
    assert second.encode.from_cache == first.encode.distinct_items
    assert [d.metrics for d in second.datasets] == [d.metrics for d in first.datasets]

    # another model (different weights -> different fingerprint) must not see model A's vectors
    model_b = HashEmbedder(salt="b", image_weight=0.2)
    third = evaluate_mmeb(model_b, fx.mmeb_dir, fx.image_root, cache_dir=cache, fingerprint="model-b")
    assert third.encode.from_cache == 0 and model_b.sides_seen == third.encode.distinct_items
    fresh = evaluate_mmeb(HashEmbedder(salt="b", image_weight=0.2), fx.mmeb_dir, fx.image_root)
    assert [d.metrics for d in third.datasets] == [d.metrics for d in fresh.datasets]
    assert [d.metrics for d in third.datasets] != [d.metrics for d in first.datasets]

    # XTD shares the cache: only the items MMEB did not have are encoded
    xtd_model = HashEmbedder()
    xtd = evaluate_xtd(xtd_model, fx.xtd_dir, fx.image_root, cache_dir=cache, fingerprint="model-a")
    assert (
        xtd.encode.from_cache > 0 and xtd_model.sides_seen == xtd.encode.encoded < xtd.encode.distinct_items
    )


def test_changed_image_file_is_re_encoded(fixture_folders, tmp_path):
    fx, cache = fixture_folders, tmp_path / "cache"
    evaluate_xtd(
        HashEmbedder(), fx.xtd_dir, fx.image_root, languages=["it"], cache_dir=cache, fingerprint="m"
    )
    img = fx.image_root / "photos/coffee_1.png"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    model = HashEmbedder()
    res = evaluate_xtd(model, fx.xtd_dir, fx.image_root, languages=["it"], cache_dir=cache, fingerprint="m")
    assert res.encode.encoded == 1 and model.sides_seen == 1


def test_model_fingerprint_follows_the_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5))
    before = model_fingerprint(net)
    assert model_fingerprint(net) == before
    assert model_fingerprint(net, extra="nf4") != before
    with torch.no_grad():
        net[0].weight[3, 2] += 1e-3  # one weight, off the strided sample: the sum still sees it
    assert model_fingerprint(net) != before


def test_bad_fingerprint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="fingerprint"):
        EmbeddingCache(tmp_path).store("../escape", [b"k" * 16], torch.ones(1, 3))
