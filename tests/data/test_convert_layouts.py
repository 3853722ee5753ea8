"""The converter on the three public training sets in their official layouts, against the official rules.

Fixtures are written here with pyarrow and real photos (scikit-image), never with mme5's writer, in
the layouts the hub serves, with the official column names (``qry``, ``qry_image_path``, ``pos_text``,
``pos_image_path``, ``neg_text``, ``neg_image_path``):

* TIGER-Lab/MMEB-train: ``<Subset>/{original,diverse_instruction,train}-00000-of-00001.parquet`` (the
  hub's file list), one plain-string negative per row; images unpacked to ``images/<Subset>/`` and
  the paths in the parquet start with ``images/<Subset>/`` (haon-chen/mmE5
  ``scripts/prepare_images.sh:46`` unzips every ``images_zip/<Subset>.zip`` into ``images/`` and
  ``scripts/train/train.sh:48`` reads them with ``--image_dir ./``; ``src/dataset.py:72`` joins).
* intfloat/mmE5-MMEB-hardneg: ``<Subset>/train-00000-of-00001.parquet``, negatives as Python-literal
  list strings (``src/dataset.py:85`` ``eval``s them).
* intfloat/mmE5-synthetic: ``<Subset>/<Subset>.parquet`` (``Classification``, ``Retrieval``, ``VQA``),
  with its ``modality`` column.
* the hub's parquet converter (``refs/convert/parquet``): ``<Subset>/<split>/0000.parquet``.

The oracles below restate the official rules (mmE5 at 4818cdf, VLM2Vec at 6e1e1d4) line by line.
"""

from __future__ import annotations

import ast
import functools
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data as skdata

from mme5.data.convert import ConvertError, convert, find_subsets
from mme5.records import decode_sample, iter_shard, read_sizes

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse", "immunohistochemistry", "coins")
LABELS = ("person", "cup", "cat", "rocket", "man", "horse", "tissue", "coins")
IMG = "<|image_1|>"


@functools.cache
def _photo(k: int, side: int) -> Image.Image:
    a = np.asarray(getattr(skdata, PHOTOS[k % len(PHOTOS)])())
    img = Image.fromarray(a).convert("RGB")
    img.thumbnail((side, side))
    return img


def photo_jpeg(k: int, variant: int = 0, side: int = 40) -> bytes:
    """A real photo (scikit-image's sample data), small, as JPEG bytes; ``variant`` rotates it."""
    buf = io.BytesIO()
    _photo(k, side).rotate(7 * variant).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _save(root: Path, rel: str, data: bytes) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    return rel


def _write(folder: Path, name: str, rows: list[dict[str, Any]], layout: str, split: str) -> None:
    """One split of one subset in the hub layout or the parquet converter's."""
    table = pa.Table.from_pylist(rows)
    if layout == "hub":
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / name, row_group_size=3)
    else:
        (folder / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / split / "0000.parquet", row_group_size=3)


def write_mmeb_train(root: Path, layout: str = "hub", n: int = 7) -> dict[str, dict[str, list[dict]]]:
    """TIGER-Lab/MMEB-train: VOC2007 (image -> label) and MSCOCO_t2i (caption -> image), three splits."""
    out: dict[str, dict[str, list[dict]]] = {}
    for subset in ("VOC2007", "MSCOCO_t2i"):
        splits: dict[str, list[dict]] = {}
        for split, instruction in (
            ("original", "Represent the given image for classification"),
            ("diverse_instruction", "Identify the object shown in this picture"),
            ("train", "Represent the given image for classification"),
        ):
            rows = []
            for i in range(n):
                k = i % len(PHOTOS)
                rel = _save(root, f"images/{subset}/{i:03d}.jpg", photo_jpeg(k, i))
                if subset == "VOC2007":
                    # plain negative strings, two of them starting with ( and [ (never parsed as lists)
                    neg = (
                        ("(a) " + LABELS[(k + 1) % 8])
                        if i == 1
                        else ("[sic] x" if i == 2 else LABELS[(k + 1) % 8])
                    )
                    rows.append(
                        {
                            "qry": f"{IMG}\n{instruction}\n",
                            "qry_image_path": rel,
                            "pos_text": LABELS[k],
                            "pos_image_path": "",
                            "neg_text": neg if i != 3 else "",
                            "neg_image_path": "",
                        }
                    )
                else:
                    neg_rel = _save(root, f"images/{subset}/neg{i:03d}.jpg", photo_jpeg(k + 1, i))
                    rows.append(
                        {
                            "qry": f"Find me an everyday image that matches the given caption: a {LABELS[k]}",
                            "qry_image_path": "",
                            "pos_text": f"{IMG}\nRepresent the given image.",
                            "pos_image_path": rel,
                            "neg_text": f"{IMG}\nRepresent the given image.",
                            "neg_image_path": neg_rel,
                        }
                    )
            if split != "train" or layout == "hub":  # the converter's refs list original / diverse only
                _write(root / subset, f"{split}-00000-of-00001.parquet", rows, layout, split)
            splits[split] = rows
        out[subset] = splits
    (root / "images_zip").mkdir(exist_ok=True)
    (root / "images_zip" / "VOC2007.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (root / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
    (root / ".cache" / "huggingface" / "VOC2007.parquet").write_bytes(b"not parquet, hidden")
    return out


def write_hardneg(root: Path, layout: str = "hub") -> dict[str, list[dict]]:
    """intfloat/mmE5-MMEB-hardneg: list-literal negatives with every shape the rule distinguishes."""

    def img(subset: str, name: str, k: int) -> str:
        return _save(root, f"images/{subset}/{name}.jpg", photo_jpeg(k, len(name)))

    voc = [
        # two text negatives, padded to 3 by the last; image list of '' padded alike
        {"neg_text": "['dog', \"fox's den\"]", "neg_image_path": "['', '']"},
        # four negatives, cut to 3
        {"neg_text": "['a', 'b', 'c', 'd']", "neg_image_path": "['', '', '', '']"},
        # no negatives at all
        {"neg_text": "[]", "neg_image_path": "[]"},
        # texts but an empty image list: the collator's zip gives no negative (collator.py:62-64)
        {"neg_text": "['x', 'y', 'z']", "neg_image_path": "[]"},
        # an empty text among others: filled from the non-empty ones (dataset.py:112-113)
        {"neg_text": "['', 'kite', 'kite', 'owl']", "neg_image_path": "['', '', '', '']"},
        # a plain literal string, wrapped in a list (dataset.py:86-87), then padded
        {"neg_text": "'plain (negative)'", "neg_image_path": "''"},
    ]
    voc_rows = [
        {
            "qry": f"{IMG}\nRepresent the given image for classification\n",
            "qry_image_path": img("VOC2007", f"q{i}", i),
            "pos_text": LABELS[i % 8],
            "pos_image_path": "",
            **negs,
        }
        for i, negs in enumerate(voc)
    ]
    coco = []
    for i in range(5):
        a, b = img("MSCOCO_t2i", f"n{i}a", i + 1), img("MSCOCO_t2i", f"n{i}b", i + 2)
        shapes = [
            # all texts empty: each becomes the positive's text (dataset.py:110-111)
            ("['', '']", f"['{a}', '{b}']"),
            # one text, two images: padded separately, so both images keep a text (dataset.py:105-106)
            (f"['{IMG}\\nRepresent the given image.']", f"['{a}', '{b}']"),
            # two texts, one image: the image is repeated by the padding
            ("['first', 'second']", f"['{a}']"),
            # three empty texts with three images
            ("['', '', '']", f"['{a}', '{b}', '{a}']"),
            # image only lists with one empty image path: that negative is text only
            (f"['{IMG}\\nRepresent the given image.', 'text only']", f"['{a}', '']"),
        ]
        t, p = shapes[i]
        coco.append(
            {
                "qry": f"Find me an everyday image that matches the given caption: a {LABELS[i]}",
                "qry_image_path": "",
                "pos_text": f"{IMG}\nRepresent the given image.",
                "pos_image_path": img("MSCOCO_t2i", f"p{i}", i),
                "neg_text": t,
                "neg_image_path": p,
            }
        )
    _write(root / "VOC2007", "train-00000-of-00001.parquet", voc_rows, layout, "train")
    _write(root / "MSCOCO_t2i", "train-00000-of-00001.parquet", coco, layout, "train")
    return {"VOC2007": voc_rows, "MSCOCO_t2i": coco}


def write_synthetic(root: Path, layout: str = "hub", n: int = 5) -> dict[str, list[dict]]:
    """intfloat/mmE5-synthetic: ``<Subset>/<Subset>.parquet`` with a ``modality`` column."""
    out = {}
    for s, subset in enumerate(("Classification", "Retrieval")):
        rows = []
        for i in range(n):
            q = _save(root, f"images/LAION_Synthetic/{subset}/{i}.jpg", photo_jpeg(i + s, i))
            rows.append(
                {
                    "qry": f"{IMG}\nClassify the image in Italian.\n",
                    "qry_image_path": q,
                    "pos_text": f"etichetta {i}",
                    "pos_image_path": "",
                    "neg_text": f"['etichetta {i + 1}']",
                    "neg_image_path": "['']",
                    "modality": "I2T",
                }
            )
        if layout == "hub":
            (root / subset).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), root / subset / f"{subset}.parquet")
        else:
            _write(root / subset, "", rows, layout, "train")
        out[subset] = rows
    return out


def read_out(folder: Path) -> dict[str, Any]:
    """Every Example of a converted subset folder, by id."""
    return {
        ex.id: ex for shard in sorted(folder.glob("*.tar")) for ex in map(decode_sample, iter_shard(shard))
    }


# ---- oracles restating the official rules ---------------------------------------------------------


def vlm2vec_negatives(row: dict[str, Any]) -> list[tuple[str, str]]:
    """VLM2Vec ``src/data/dataset/mmeb_dataset.py:77-81`` (one ``[neg_text]`` when it is non-empty) and
    ``:94-97`` (one image struct when ``neg_image_path`` is non-empty): the row's negative, once."""
    text, path = row.get("neg_text") or "", row.get("neg_image_path") or ""
    return [(text, path)] if (text or path) else []


def mme5_negatives_oracle(row: dict[str, Any], ratio: int) -> list[tuple[str | set[str], str]]:
    """mmE5 ``src/dataset.py`` ``__getitem__`` with ``negative_ratio`` (train.sh:59: 3):

    * 84-93 ``filter_hard_negtives``: ``eval``, wrap a non-list, pad with ``[negs[-1]]`` while
      ``0 < len < ratio``, cut ``[:ratio]`` -- applied to the texts (105) and the image paths (106) apart;
    * 108-113: an empty text becomes ``pos_text`` when ``len(set(eval(neg_text_list))) == 1``, else
      ``random.choice`` of the non-empty texts (returned here as the set of allowed values);
    * collator.py:62-64: ``zip(text, image)``; dataset.py:70-71: ``""`` is no image.
    """

    def filt(cell: str) -> list[str]:
        negs = ast.literal_eval(cell)
        if not isinstance(negs, list):
            negs = [negs]
        if len(negs) < ratio and len(negs) > 0:
            negs += [negs[-1]] * (ratio - len(negs))
        return negs[:ratio]

    texts: list[str | set[str]] = list(filt(row["neg_text"]))
    images = filt(row["neg_image_path"])
    full = ast.literal_eval(row["neg_text"])
    for ind, neg in enumerate(texts):
        if neg == "":
            texts[ind] = row["pos_text"] if len(set(full)) == 1 else {t for t in full if t != ""}
    return list(zip(texts, images, strict=False))


def _as_pairs(ex: Any, root: Path) -> list[tuple[str, bytes | None]]:
    return [(n.text or "", n.image_bytes) for n in ex.negatives]


def _expect_pairs(expected: list[tuple[Any, str]], root: Path) -> list[tuple[Any, bytes | None]]:
    return [(t, (root / p).read_bytes() if p else None) for t, p in expected]


# ---- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["hub", "converter"])
def test_mmeb_train_one_source_per_subset_original_split_single_negative(tmp_path, layout):
    root = tmp_path / "MMEB-train"
    written = write_mmeb_train(root, layout)
    reports = convert([root], tmp_path / "out", str(root), progress=False)
    assert sorted(r.source for r in reports) == ["MSCOCO_t2i", "VOC2007"]  # not one "0000" source
    for r in reports:
        rows = written[r.source]["original"]
        assert (r.dataset, r.split, r.rows_in, r.samples_out, r.skipped) == (
            "mmeb-train",
            "original",
            7,
            7,
            {},
        )
        examples = read_out(tmp_path / "out" / r.source)
        for i, row in enumerate(rows):
            ex = examples[f"{r.source}-{i}"]
            assert ex.query.text == (row["qry"] or None) and ex.positive.text == (row["pos_text"] or None)
            # VLM2Vec's one negative, used once (never copied to three), plain strings never parsed
            assert _as_pairs(ex, root) == _expect_pairs(vlm2vec_negatives(row), root)
        assert read_sizes(tmp_path / "out" / r.source) == {f"{r.source}-000000.tar": 7}
    voc = read_out(tmp_path / "out" / "VOC2007")
    assert [n.text for n in voc["VOC2007-1"].negatives] == ["(a) cat"]
    assert [n.text for n in voc["VOC2007-2"].negatives] == ["[sic] x"] and voc["VOC2007-3"].negatives == []
    assert voc["VOC2007-0"].task == "classification" and voc["VOC2007-0"].modality == "IT2T"
    total = json.loads((tmp_path / "out" / "convert_report.json").read_text())
    assert (total["rows_in"], total["samples_out"], total["skipped"], total["balanced"]) == (14, 14, {}, True)


def test_mmeb_train_split_option_and_layouts_agree(tmp_path):
    hub, conv = tmp_path / "MMEB-train", tmp_path / "conv" / "MMEB-train"
    write_mmeb_train(hub, "hub")
    write_mmeb_train(conv, "converter")
    a = convert([hub], tmp_path / "a", str(hub), split="diverse_instruction", progress=False)
    b = convert([conv], tmp_path / "b", str(conv), split="diverse_instruction", progress=False)
    assert [r.split for r in a + b] == ["diverse_instruction"] * 4
    for sub in ("VOC2007", "MSCOCO_t2i"):
        a_json, b_json = (
            [s["json"] for p in sorted((tmp_path / d / sub).glob("*.tar")) for s in iter_shard(p)]
            for d in "ab"
        )
        assert a_json == b_json and len(a_json) == 7  # both layouts give the same samples
    assert read_out(tmp_path / "a" / "VOC2007")["VOC2007-0"].query.text.startswith(f"{IMG}\nIdentify")
    with pytest.raises(
        ConvertError, match=r"has no split 'validation'; it holds diverse_instruction, original, train"
    ):
        convert([hub], tmp_path / "c", str(hub), split="validation", progress=False)


@pytest.mark.parametrize("layout", ["hub", "converter"])
def test_hardneg_negatives_follow_mme5(tmp_path, layout):
    root = tmp_path / "mmE5-MMEB-hardneg"
    written = write_hardneg(root, layout)
    reports = convert([root], tmp_path / "out", str(root), progress=False)
    assert {r.source: (r.dataset, r.split, r.negatives, r.rows_in, r.samples_out) for r in reports} == {
        "VOC2007": ("mmeb-hardneg", "train", 3, 6, 6),
        "MSCOCO_t2i": ("mmeb-hardneg", "train", 3, 5, 5),
    }
    for sub, rows in written.items():
        examples = read_out(tmp_path / "out" / sub)
        for i, row in enumerate(rows):
            got = _as_pairs(examples[f"{sub}-{i}"], root)
            want = _expect_pairs(mme5_negatives_oracle(row, 3), root)
            assert len(got) == len(want), (sub, i, got, want)
            for (gt, gi), (wt, wi) in zip(got, want, strict=True):
                assert gi == wi, (sub, i)
                assert gt in wt if isinstance(wt, set) else gt == wt, (sub, i, gt, wt)
    voc = read_out(tmp_path / "out" / "VOC2007")
    assert [n.text for n in voc["VOC2007-0"].negatives] == ["dog", "fox's den", "fox's den"]
    assert voc["VOC2007-3"].negatives == []  # texts with an empty image list: zip gives none
    assert [n.text for n in voc["VOC2007-5"].negatives] == ["plain (negative)"] * 3
    coco = read_out(tmp_path / "out" / "MSCOCO_t2i")
    assert all(
        n.has_image and n.text == f"{IMG}\nRepresent the given image." for n in coco["MSCOCO_t2i-1"].negatives
    )
    assert [n.text for n in coco["MSCOCO_t2i-2"].negatives] == ["first", "second", "second"]
    assert len({n.image_bytes for n in coco["MSCOCO_t2i-2"].negatives}) == 1  # the one image, padded
    assert [n.has_image for n in coco["MSCOCO_t2i-4"].negatives] == [True, False, False]
    # the seeded draw is reproducible, and another seed may draw otherwise but always from the pool
    again = convert([root], tmp_path / "again", str(root), progress=False)
    assert [r.samples_out for r in again] == [r.samples_out for r in reports]
    assert [n.text for n in read_out(tmp_path / "again" / "VOC2007")["VOC2007-4"].negatives] == [
        n.text for n in voc["VOC2007-4"].negatives
    ]


def test_hardneg_negatives_option(tmp_path):
    root = tmp_path / "mmE5-MMEB-hardneg"
    write_hardneg(root)
    convert([root], tmp_path / "one", str(root), negatives=1, subsets=["VOC2007"], progress=False)
    assert [n.text for n in read_out(tmp_path / "one" / "VOC2007")["VOC2007-1"].negatives] == ["a"]
    convert([root], tmp_path / "none", str(root), negatives=0, subsets=["VOC2007"], progress=False)
    assert all(ex.negatives == [] for ex in read_out(tmp_path / "none" / "VOC2007").values())


@pytest.mark.parametrize("layout", ["hub", "converter"])
def test_synthetic_subsets_and_caps(tmp_path, layout):
    root = tmp_path / "mmE5-synthetic"
    write_synthetic(root, layout)
    reports = convert([root], tmp_path / "out", str(root), progress=False)
    # mmE5 loads split "train[:-1]" of each synthetic subset (src/dataset.py:23,28): the last row is left
    assert {r.source: (r.dataset, r.rows_in_split, r.rows_in, r.samples_out) for r in reports} == {
        "Classification": ("mmE5-synthetic", 5, 4, 4),
        "Retrieval": ("mmE5-synthetic", 5, 4, 4),
    }
    ex = read_out(tmp_path / "out" / "Classification")["Classification-0"]
    assert ex.modality == "I2T" and ex.task == "classification"
    assert [n.text for n in ex.negatives] == ["etichetta 1"] * 3 and not ex.negatives[0].has_image
    assert "first 4 of 5" in reports[0].summary()
    capped = convert([root], tmp_path / "two", str(root), rows_per_subset=2, progress=False)
    assert [r.rows_in for r in capped] == [2, 2]
    whole = convert([root], tmp_path / "all", str(root), rows_per_subset=None, progress=False)
    assert [r.rows_in for r in whole] == [5, 5]


def test_hardneg_cap_is_50k_and_an_option(tmp_path):
    root = tmp_path / "mmE5-MMEB-hardneg"
    write_hardneg(root)
    [r] = convert([root], tmp_path / "a", str(root), subsets=["VOC2007"], progress=False)
    assert (r.rows_per_subset, r.rows_in) == (50_000, 6)  # mmE5: --num_sample_per_subset 50000
    [r] = convert([root], tmp_path / "b", str(root), subsets=["VOC2007"], rows_per_subset=4, progress=False)
    assert (r.rows_in, r.samples_out, sorted(read_out(tmp_path / "b" / "VOC2007"))) == (
        4,
        4,
        [f"VOC2007-{i}" for i in range(4)],
    )


def test_image_root_is_the_folder_that_holds_images(tmp_path):
    root = tmp_path / "MMEB-train"
    write_mmeb_train(root)
    with pytest.raises(ConvertError) as err:
        convert([root], tmp_path / "out", str(root / "images"), progress=False)
    message = str(err.value)
    assert "MSCOCO_t2i/original-00000-of-00001.parquet" in message and "images/MSCOCO_t2i/000.jpg" in message
    assert not (tmp_path / "out").exists()  # every subset is checked before any is converted
    assert f"use --image_root {root}" in message and "\n" not in message
    with pytest.raises(ConvertError, match=r"names images .* but no --image_root was given"):
        convert([root], tmp_path / "out2", None, progress=False)


def test_paths_outside_the_image_root_are_refused_and_counted(tmp_path):
    root = tmp_path / "mmE5-MMEB-hardneg"
    write_hardneg(root)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(photo_jpeg(7, 3))
    (root / "images" / "VOC2007" / "link.jpg").symlink_to(secret)
    (root / "images" / "VOC2007" / "inner.jpg").symlink_to(root / "images" / "VOC2007" / "q0.jpg")
    rows = pq.read_table(root / "VOC2007" / "train-00000-of-00001.parquet").to_pylist()
    rows[1]["qry_image_path"] = str(secret)  # absolute
    rows[2]["qry_image_path"] = "../secret.jpg"
    rows[3]["qry_image_path"] = "images/../../secret.jpg"
    rows[4]["qry_image_path"] = "images/VOC2007/link.jpg"  # a symlink that leads out of the root
    rows[5]["qry_image_path"] = "images/VOC2007/inner.jpg"  # a symlink that stays inside: fine
    pq.write_table(pa.Table.from_pylist(rows), root / "VOC2007" / "train-00000-of-00001.parquet")
    [r] = convert([root], tmp_path / "out", str(root), subsets=["VOC2007"], progress=False)
    assert (r.rows_in, r.samples_out, r.skipped) == (6, 2, {"image_outside_root": 4})
    tars = b"".join(p.read_bytes() for p in (tmp_path / "out" / "VOC2007").glob("*.tar"))
    assert secret.read_bytes() not in tars
    report = json.loads((tmp_path / "out" / "VOC2007" / "convert_report.json").read_text())
    assert report["skipped"] == {"image_outside_root": 4} and report["balanced"]


def test_bad_input_gives_one_line_naming_the_file(tmp_path):
    odd = tmp_path / "odd"
    (odd / "a" / "b" / "c").mkdir(parents=True)
    pq.write_table(pa.table({"qry": ["q"]}), odd / "a" / "b" / "c" / "x.parquet")
    with pytest.raises(ConvertError, match=r"'.*a/b/c/x\.parquet' matches no known layout"):
        convert([odd], tmp_path / "out", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConvertError, match=r"holds no \.parquet file"):
        convert([empty], tmp_path / "out", progress=False)
    wrong = tmp_path / "mmE5-MMEB-hardneg" / "VOC2007"
    wrong.mkdir(parents=True)
    pq.write_table(pa.table({"qry": ["q"], "pos_text": ["p"]}), wrong / "train-00000-of-00001.parquet")
    with pytest.raises(
        ConvertError, match=r"train-00000-of-00001\.parquet' lacks column\(s\) qry_image_path"
    ):
        convert([wrong.parent], tmp_path / "out", progress=False)
    unknown = tmp_path / "mydata"
    write_hardneg(unknown)
    (unknown / "VOC2007" / "train-00000-of-00001.parquet").rename(
        unknown / "VOC2007" / "x-00000-of-00001.parquet"
    )
    with pytest.raises(ConvertError, match=r"cannot tell which training set .*pass --dataset"):
        convert([unknown], tmp_path / "out", str(unknown), progress=False)
    # every image row broken: the subset stops with one line naming the file
    broken = tmp_path / "mmE5-synthetic"
    write_synthetic(broken)
    for p in (broken / "images").rglob("*.jpg"):
        p.write_bytes(b"%!PS-Adobe-3.0 not an image")
    with pytest.raises(
        ConvertError,
        match=r"nothing readable in '.*Classification\.parquet': all 4 rows skipped \(bad_image: 4\)",
    ):
        convert([broken], tmp_path / "out3", str(broken), progress=False)
    run = subprocess.run(
        [sys.executable, "-m", "mme5.cli", "convert", str(odd), str(tmp_path / "cli"), "--progress", "false"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "MME5_TRACEBACK": ""},
    )
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0, run.stderr
    assert run.stderr.startswith("mme5 convert: error: ") and "matches no known layout" in run.stderr


def test_find_subsets_layouts(tmp_path):
    write_mmeb_train(tmp_path / "hub", "hub")
    write_mmeb_train(tmp_path / "conv", "converter")
    write_synthetic(tmp_path / "syn", "hub")
    hub, conv = find_subsets(tmp_path / "hub"), find_subsets(tmp_path / "conv")
    assert sorted(hub) == sorted(conv) == ["MSCOCO_t2i", "VOC2007"]
    assert sorted(hub["VOC2007"].splits) == ["diverse_instruction", "original", "train"]
    assert sorted(conv["VOC2007"].splits) == ["diverse_instruction", "original"]
    assert sorted(find_subsets(tmp_path / "syn")) == ["Classification", "Retrieval"]
    # a subset folder, and single files, in each layout
    assert list(find_subsets(tmp_path / "hub" / "VOC2007")) == ["VOC2007"]
    assert list(find_subsets(tmp_path / "conv" / "VOC2007")) == ["VOC2007"]
    assert list(find_subsets(tmp_path / "conv" / "VOC2007" / "original" / "0000.parquet")) == ["VOC2007"]
    assert list(find_subsets(tmp_path / "syn" / "Retrieval" / "Retrieval.parquet")) == ["Retrieval"]


def test_changed_settings_are_refused_on_resume(tmp_path):
    root = tmp_path / "mmE5-synthetic"
    write_synthetic(root)
    convert([root], tmp_path / "out", str(root), progress=False)
    with pytest.raises(ConvertError, match=r"conversion made with other settings"):
        convert([root], tmp_path / "out", str(root), rows_per_subset=None, progress=False)


def test_cli_options_and_a_git_lfs_pointer(tmp_path):
    root = tmp_path / "mmE5-synthetic"
    write_synthetic(root)
    cmd = [
        sys.executable,
        "-m",
        "mme5.cli",
        "convert",
        str(root),
        str(tmp_path / "cli"),
        "--image_root",
        str(root),
    ]
    extra = [
        "--rows_per_subset",
        "null",
        "--subsets",
        "[Retrieval]",
        "--negatives",
        "1",
        "--progress",
        "false",
    ]
    run = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "Retrieval [mmE5-synthetic train]: rows in 5 = samples out 5 + skipped 0 (none)" in run.stdout
    assert "total: rows in 5 = samples out 5 + skipped 0 (none)" in run.stdout
    assert [len(ex.negatives) for ex in read_out(tmp_path / "cli" / "Retrieval").values()] == [1] * 5
    # a parquet cloned without git-lfs (VLM2Vec's download_data.sh clones the dataset repository)
    (root / "Classification" / "Classification.parquet").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n"
    )
    with pytest.raises(
        ConvertError, match=r"Classification\.parquet' is not a readable parquet file.*git-lfs pointer"
    ):
        convert([root], tmp_path / "lfs", str(root), progress=False)
