"""Evaluation images go through the training decoder: an allow-list of formats and a pixel cap (#16
items 2 and 12a). A PostScript file named ``.jpg`` must never reach Ghostscript, and a huge PNG must be
refused from its header, before any pixel is decoded."""

from __future__ import annotations

import resource
import struct
import zlib

import pandas as pd
import pytest

from mme5.eval import evaluate_mmeb
from mme5.eval.items import Item, ItemError, load_side
from tests.helpers.evalfixtures import HashEmbedder

POSTSCRIPT = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n"
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def huge_png(side: int = 13000) -> bytes:
    """A valid PNG of side x side black RGB pixels, about 2 MB (rows are streamed into zlib in blocks,
    never held whole)."""
    comp = zlib.compressobj(1)
    rows = min(side, 100)
    block = (b"\x00" + b"\x00" * (3 * side)) * rows  # filter byte + one row of black pixels, x rows
    body = b"".join(comp.compress(block) for _ in range(side // rows))
    body += comp.compress(block[: (side % rows) * (1 + 3 * side)]) + comp.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def test_postscript_named_jpg_is_refused_by_format(tmp_path):
    (tmp_path / "x.jpg").write_bytes(POSTSCRIPT)
    with pytest.raises(ItemError, match=r"x\.jpg.*image_format") as info:
        load_side(Item("q", "x.jpg"), tmp_path)
    assert info.value.reason == "image_format"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_png_is_refused_before_decoding(tmp_path):
    data = huge_png()
    assert len(data) < 4_000_000
    (tmp_path / "big.png").write_bytes(data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ItemError, match=r"big\.png.*image_too_large") as info:
        load_side(Item("", "big.png"), tmp_path)
    assert info.value.reason == "image_too_large"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"peak RSS grew by {grown_mb:.0f} MB: the image was decoded"
    # an explicit, larger cap lets a caller decode it (the cap is a setting, not a fixed refusal)
    small = huge_png(300)
    (tmp_path / "small.png").write_bytes(small)
    decoded = load_side(Item("", "small.png"), tmp_path, max_pixels=300 * 300).image
    assert decoded is not None and decoded.size == (300, 300)
    with pytest.raises(ItemError, match="image_too_large"):
        load_side(Item("", "small.png"), tmp_path, max_pixels=300 * 299)


def test_a_refused_image_stops_the_evaluation_with_one_line(fixture_folders, tmp_path):
    fx = fixture_folders
    images = tmp_path / "images"
    images.mkdir()
    (images / "k.qry.jpg").write_bytes(POSTSCRIPT)
    bench = tmp_path / "mmeb"
    bench.mkdir()
    pd.DataFrame(
        {
            "qry_text": ["q"],
            "qry_img_path": ["k.qry.jpg"],
            "tgt_text": [["a", "b"]],
            "tgt_img_path": [["", ""]],
        }
    ).to_parquet(bench / "EDIS.parquet")
    with pytest.raises(ItemError, match=r"k\.qry\.jpg.*image_format"):
        evaluate_mmeb(HashEmbedder(), bench, images, datasets=["EDIS"])
    assert fx.image_root.is_dir()
