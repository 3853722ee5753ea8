"""The embedding cache: a re-run of the same model encodes nothing; another model misses it."""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import numpy as np
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
    linear = torch.nn.Linear(7, 5)
    net = torch.nn.Sequential(linear, torch.nn.LayerNorm(5))
    before = model_fingerprint(net)
    assert model_fingerprint(net) == before
    assert model_fingerprint(net, extra="nf4") != before
    with torch.no_grad():
        linear.weight[3, 2] += 1e-3  # one weight, off the strided sample: the sum still sees it
    assert model_fingerprint(net) != before


def test_bad_fingerprint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="fingerprint"):
        EmbeddingCache(tmp_path).store("../escape", [b"k" * 16], torch.ones(1, 3))


# ---- #16 item 5: what keys the cache, what is checked on read, where it lives ----------------------


def _only_part(cache, fingerprint: str):
    folder = cache / fingerprint
    parts = sorted(folder.glob("emb-*.npy"))
    assert len(parts) == 1, parts
    return parts[0]


def _rewrite(path, arr) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)


def _first_run(fx, cache):
    return evaluate_mmeb(
        HashEmbedder(), fx.mmeb_dir, fx.image_root, datasets=["OVEN"], cache_dir=cache, fingerprint="m"
    )


@pytest.mark.parametrize("damage", ["reversed", "nan", "short_rows", "truncated_bytes", "unnormalised"])
def test_a_bad_cache_entry_is_dropped_with_a_warning_and_recomputed(
    fixture_folders, tmp_path, caplog, damage
):
    """Rows reversed (a score changed silently), NaN rows (100 % P@1), a file with fewer rows (an
    IndexError), a file cut short, rows that are not unit vectors: each is found on read, dropped with a
    warning naming the part, and its items are encoded again, so the scores equal a fresh run."""
    fx, cache = fixture_folders, tmp_path / "cache"
    fresh = _first_run(fx, cache)
    emb_file = _only_part(cache, "m")
    arr = np.load(emb_file)
    if damage == "reversed":
        _rewrite(emb_file, arr[::-1].copy())
    elif damage == "nan":
        _rewrite(emb_file, np.full_like(arr, np.nan))
    elif damage == "short_rows":
        _rewrite(emb_file, arr[:-3].copy())
    elif damage == "truncated_bytes":
        data = emb_file.read_bytes()
        emb_file.write_bytes(data[: len(data) // 2])
    else:
        _rewrite(emb_file, arr * 2.0)
    model = HashEmbedder()
    with caplog.at_level(logging.WARNING, logger="mme5.eval"):
        again = evaluate_mmeb(
            model, fx.mmeb_dir, fx.image_root, datasets=["OVEN"], cache_dir=cache, fingerprint="m"
        )
    assert [d.metrics for d in again.datasets] == [d.metrics for d in fresh.datasets]
    assert again.encode.from_cache == 0 and model.sides_seen == again.encode.distinct_items
    assert any(
        "embedding cache: dropping" in r.getMessage() and "m/part-" in r.getMessage() for r in caplog.records
    )
    # the bad part is gone and the recomputed one is read back without a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mme5.eval"):
        third = _first_run(fx, cache)
    assert third.encode.encoded == 0 and not [r for r in caplog.records if "cache" in r.getMessage()]


def test_store_writes_a_manifest_last_and_no_fixed_temp_names(tmp_path):
    cache = EmbeddingCache(tmp_path)
    emb = torch.nn.functional.normalize(torch.randn(5, 7), dim=-1)
    keys = [bytes([i]) * 16 for i in range(5)]
    cache.store("fp", keys, emb)
    names = sorted(p.name for p in (tmp_path / "fp").iterdir())
    assert [n.split("-")[0] for n in names] == ["emb", "keys", "part"] and not any(".tmp" in n for n in names)
    found, got = cache.lookup("fp", [keys[3], b"x" * 16, keys[0]])
    assert found.tolist() == [True, False, True]
    assert got is not None and torch.equal(got, emb[[3, 0]])


def test_changed_processor_file_misses_the_cache(fixture_folders, tmp_path):
    """A changed processor_config.json (here the image normalisation) changes the embeddings: the
    fingerprint must change, or the cache returns the old scores (seen: 50.0 against 29.2)."""
    from mme5.backbones import get_adapter
    from mme5.cli.evaluate import evaluate

    fx = fixture_folders
    model_dir = tmp_path / "model"
    shutil.copytree(get_adapter("tiny-llava").source, model_dir)
    kwargs: dict[str, Any] = dict(
        mmeb_dir=str(fx.mmeb_dir),
        image_root=str(fx.image_root),
        datasets=["OVEN"],
        max_rows=4,
        device="cpu",
    )
    first = evaluate(str(model_dir), cache_dir=str(tmp_path / "cache"), **kwargs)["mmeb"]
    assert first.encode.encoded > 0
    config_file = model_dir / "processor_config.json"
    config = json.loads(config_file.read_text())
    config["image_processor"]["image_mean"] = [0.9, 0.1, 0.5]
    config_file.write_text(json.dumps(config))
    again = evaluate(str(model_dir), cache_dir=str(tmp_path / "cache"), **kwargs)["mmeb"]
    fresh = evaluate(str(model_dir), cache_dir=None, **kwargs)["mmeb"]
    assert again.encode.from_cache == 0
    assert again.summary == fresh.summary


def test_fingerprint_covers_tokenizer_files_and_the_version(tmp_path, monkeypatch):
    import mme5
    from mme5.model.fingerprint import fingerprint, processor_digest

    net = torch.nn.Linear(3, 2)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "weights.bin").write_bytes(b"w")
    base = fingerprint(net, {"path": str(tmp_path)})
    digest = processor_digest(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"other")  # not a processor file
    assert processor_digest(tmp_path) == digest
    for name in (
        "tokenizer_config.json",
        "chat_template.jinja",
        "preprocessor_config.json",
        "tokenizer.json",
    ):
        (tmp_path / name).write_text(f'{{"changed": "{name}"}}')
        now = fingerprint(net, {"path": str(tmp_path)})
        assert now != base, name
        base = now
    monkeypatch.setattr(mme5, "__version__", "999.0")
    assert fingerprint(net, {"path": str(tmp_path)}) != base


def test_default_cache_folder_is_the_user_cache(tmp_path, monkeypatch):
    """Not the current directory: a cloned tree must not be able to ship a prepared cache."""
    import inspect

    from mme5.cli.evaluate import evaluate
    from mme5.eval.cache import default_cache_dir, resolve_cache_dir

    monkeypatch.delenv("MME5_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mme5" / "embeddings"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mme5" / "embeddings"
    monkeypatch.setenv("MME5_CACHE", str(tmp_path / "m"))
    assert resolve_cache_dir("auto") == tmp_path / "m" / "embeddings"
    assert resolve_cache_dir(None) is None
    default = inspect.signature(evaluate).parameters["cache_dir"].default
    assert resolve_cache_dir(default) == tmp_path / "m" / "embeddings"


def test_cached_width_other_than_the_models_is_an_error(fixture_folders, tmp_path):
    from mme5.eval.runner import EmbeddingError

    fx, cache = fixture_folders, tmp_path / "cache"
    evaluate_mmeb(
        HashEmbedder(), fx.mmeb_dir, fx.image_root, datasets=["OVEN"], cache_dir=cache, fingerprint="w"
    )
    with pytest.raises(EmbeddingError, match="width"):
        evaluate_mmeb(
            HashEmbedder(text_dim=50),
            fx.mmeb_dir,
            fx.image_root,
            datasets=["OVEN", "ImageNet-1K"],
            cache_dir=cache,
            fingerprint="w",
        )
