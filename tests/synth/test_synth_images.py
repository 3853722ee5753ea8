"""Image pool and nearest-neighbour retrieval."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mme5.records import Example, Side, write_shard
from mme5.synth.images import CallableEmbedder, HistogramEmbedder, ImagePool, NeighbourIndex, embed_pool


def test_pool_from_folder_skips_and_counts_bad_files(photo_folder, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(photo_folder, folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    shutil.copy(folder / "coffee.jpg", folder / "sub_coffee_copy.jpg")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    pool = ImagePool.from_folder(folder)
    keys = [img.key for img in pool.images]
    assert "broken.jpg" not in keys and "sub_coffee_copy.jpg" not in keys and "notes.txt" not in keys
    assert pool.skipped == {"unreadable_image": 1, "duplicate_image": 1}
    assert len(pool) == len(list(photo_folder.glob("*.jpg")))
    assert pool.load(0).mode == "RGB"
    assert ImagePool.from_folder(folder, limit=3).images == pool.images[:3]


def test_pool_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere"):
        ImagePool.from_folder(tmp_path / "nowhere")
    (tmp_path / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable image in folder"):
        ImagePool.from_folder(tmp_path)


def test_pool_from_shards(photo_folder, tmp_path):
    files = sorted(photo_folder.glob("*.jpg"))[:4]
    ex = [
        Example(id=f"e{i}", query=Side(text="q", image_bytes=f.read_bytes()), positive=Side(text="p"))
        for i, f in enumerate(files)
    ]
    write_shard(tmp_path / "s-0.tar", ex)
    pool = ImagePool.from_shards([tmp_path / "s-0.tar"])
    assert len(pool) == 4 and pool.images[0].key == "s-0.tar/e0.qry"
    assert pool.encoded(2)[0] == files[2].read_bytes()


def test_histogram_neighbours(photo_folder, tmp_path):
    pool = ImagePool.from_folder(photo_folder)
    emb = embed_pool(pool, HistogramEmbedder(), batch_size=5, cache_dir=tmp_path)
    assert emb.shape[0] == len(pool)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.array_equal(embed_pool(pool, HistogramEmbedder(), cache_dir=tmp_path), emb)  # from the cache
    index = NeighbourIndex(emb)
    for i in range(len(pool)):
        nn = index.neighbours(i, 3)
        assert i not in nn and len(set(nn)) == 3
        sims = emb @ emb[i]
        assert sims[nn[0]] >= sims[nn[1]] >= sims[nn[2]]
        assert sims[nn[2]] >= max(s for j, s in enumerate(sims) if j != i and j not in nn)
    assert index.neighbours(0, 2, exclude=[index.neighbours(0, 1)[0]])[0] == index.neighbours(0, 2)[1]
    with pytest.raises(ValueError, match="retrieval needs at least"):
        index.neighbours(0, len(pool))


def test_histogram_finds_a_recoloured_copy():
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(6)]
    reds = Image.new("RGB", (40, 40), (220, 20, 20))
    almost = Image.new("RGB", (40, 40), (210, 25, 25))
    emb = HistogramEmbedder()([*imgs, reds, almost])
    assert NeighbourIndex(emb).neighbours(6, 1) == [7]


def unnormalised(images):
    return np.ones((len(images), 4))


def test_callable_embedder_is_checked(photo_folder):
    pool = ImagePool.from_folder(photo_folder, limit=3)
    with pytest.raises(ValueError, match="expected L2-normalised rows"):
        embed_pool(pool, CallableEmbedder(f"{__name__}:unnormalised"))
    with pytest.raises(ValueError, match=r"expected 'package\.module:callable'"):
        CallableEmbedder("no_colon")


def test_model_embedder_from_an_mme5_export(photo_folder, tmp_path):
    export = pytest.importorskip("mme5.model.export")
    from mme5.model.encoder import Encoder
    from mme5.synth.images import ModelEmbedder

    folder = export.export(Encoder(model="tiny-llava"), tmp_path / "export")
    pool = ImagePool.from_folder(photo_folder, limit=5)
    emb = embed_pool(pool, ModelEmbedder(str(folder), batch_size=3))
    assert emb.shape[0] == 5 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    direct = export.load(folder).encode(
        images=[pool.load(i) for i in range(5)], instruction="Represent the given image."
    )
    assert np.allclose(emb, direct, atol=1e-5)
    assert NeighbourIndex(emb).neighbours(0, 2)[0] != 0


def test_pool_never_hands_postscript_to_ghostscript(photo_folder, tmp_path):
    """A PostScript file named .jpg in the image folder is an unreadable image; gs never runs (#16 item 2)."""
    folder = tmp_path / "imgs"
    shutil.copytree(photo_folder, folder)
    (folder / "trap.jpg").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n"
    )
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "gs-was-run"
    (fake_bin / "gs").write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    (fake_bin / "gs").chmod(0o755)
    script = (
        "from mme5.synth.images import ImagePool\n"
        f"pool = ImagePool.from_folder({str(folder)!r})\n"
        "print(dict(pool.skipped))\n"
    )
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'unreadable_image': 1}"
    assert not marker.exists()
