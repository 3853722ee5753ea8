"""The parquet converter: round trip into shards, literal negative lists (mmE5's rule), skips, resume, CLI.

The fixture is an intfloat/mmE5-MMEB-hardneg subset as the hub ships it
(``VOC2007/train-00000-of-00001.parquet``, list-literal ``neg_text`` / ``neg_image_path`` strings that
haon-chen/mmE5 ``src/dataset.py:85`` ``eval``s), written with pyarrow; the images are real photos
(scikit-image) under ``images/VOC2007/``, the path prefix the official sets use. The per-layout and
per-set rules are tested in ``test_convert_layouts.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mme5.data import ShardDataModule, ShardSet
from mme5.data.convert import STATE_FILE, ConvertError, convert, parse_literal_list
from mme5.records import PUBLIC_IMAGE_TOKEN, ShardSetWriter, decode_sample, iter_shard, read_sizes
from tests.data.test_convert_layouts import photo_jpeg

TOOL = ["-m", "mme5.cli", "convert"]


def _write_inputs(root: Path) -> tuple[Path, Path, list[dict]]:
    """``root/mmE5-MMEB-hardneg/VOC2007/train-00000-of-00001.parquet`` + its ``images/``; returns
    (the set's folder, the image root, the rows)."""
    base = root / "mmE5-MMEB-hardneg"
    images = base / "images" / "VOC2007"
    images.mkdir(parents=True)
    for i in range(6):
        (images / f"{i}.jpg").write_bytes(photo_jpeg(i))
    (images / "broken.jpg").write_bytes(b"not an image")
    tok = PUBLIC_IMAGE_TOKEN
    rows = [
        # image query, text positive, two literal-list negatives padded to 3
        {
            "qry": f"{tok}\nRepresent the given image for classification",
            "qry_image_path": "images/VOC2007/0.jpg",
            "pos_text": "cat",
            "pos_image_path": "",
            "neg_text": "['dog', \"fox's den\"]",
            "neg_image_path": "['', '']",
        },
        # text query, image positive, image negatives (list column written as a literal string)
        {
            "qry": "Find me an everyday image that matches the given caption: a red bus",
            "qry_image_path": "",
            "pos_text": f"{tok}\nRepresent the given image.",
            "pos_image_path": "images/VOC2007/1.jpg",
            "neg_text": "['<|image_1|>\\nRepresent the given image.']",
            "neg_image_path": "['images/VOC2007/2.jpg']",
        },
        # no negatives at all
        {
            "qry": "q3",
            "qry_image_path": None,
            "pos_text": "p3",
            "pos_image_path": None,
            "neg_text": "[]",
            "neg_image_path": "[]",
        },
        # missing image file -> skipped
        {
            "qry": "q4",
            "qry_image_path": "images/VOC2007/nope.jpg",
            "pos_text": "p4",
            "pos_image_path": "",
            "neg_text": "[]",
            "neg_image_path": "[]",
        },
        # not an image -> skipped
        {
            "qry": "q5",
            "qry_image_path": "images/VOC2007/broken.jpg",
            "pos_text": "p5",
            "pos_image_path": "",
            "neg_text": "[]",
            "neg_image_path": "[]",
        },
        # a neg list that is code, not a literal -> skipped, never executed
        {
            "qry": "q6",
            "qry_image_path": "",
            "pos_text": "p6",
            "pos_image_path": "",
            "neg_text": "[__import__('os').system('touch PWNED')]",
            "neg_image_path": "[]",
        },
        # empty positive -> skipped
        {
            "qry": "q7",
            "qry_image_path": "",
            "pos_text": "",
            "pos_image_path": "",
            "neg_text": "[]",
            "neg_image_path": "[]",
        },
    ]
    rows += [
        {
            "qry": f"bulk {i}",
            "qry_image_path": f"images/VOC2007/{i % 6}.jpg",
            "pos_text": f"pos {i}",
            "pos_image_path": "",
            "neg_text": f"['n{i}a', 'n{i}b', 'n{i}c', 'n{i}d']",
            "neg_image_path": "['', '', '', '']" if i % 2 else "[]",
        }
        for i in range(13)
    ]
    folder = base / "VOC2007"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "train-00000-of-00001.parquet", row_group_size=5)
    return base, base, rows


def test_parse_literal_list_is_literal_only():
    assert parse_literal_list("['a', \"b's\"]", "neg_text")[0] == ["a", "b's"]
    assert parse_literal_list("'one'", "neg_text") == (["one"], "one")  # wrapped, as mmE5 does
    assert parse_literal_list(["x", "y"], "neg_text")[0] == ["x", "y"]
    assert parse_literal_list("", "neg_text")[0] == [] and parse_literal_list(None, "neg_text")[0] == []
    for bad in (
        "[open('/etc/passwd').read()]",
        "[1, 2]",
        "plain text (not a literal)",
        "[" * 200 + "]" * 200,
    ):
        with pytest.raises(ValueError, match="bad_list"):
            parse_literal_list(bad, "neg_text")


def test_round_trip_counts_and_reads_back(tmp_path):
    inputs, images, rows = _write_inputs(tmp_path)
    [report] = convert([inputs], tmp_path / "out", str(images), samples_per_shard=4, progress=False)
    assert (report.dataset, report.split, report.negatives) == ("mmeb-hardneg", "train", 3)
    assert report.source == "VOC2007" and report.rows_in == len(rows) == 20
    assert report.skipped == {"missing_image_file": 1, "bad_image": 1, "bad_list": 1, "empty_side": 1}
    assert report.samples_out == 16 and report.balanced and report.shards == 4
    assert not (tmp_path / "PWNED").exists()
    out = tmp_path / "out" / "VOC2007"
    assert read_sizes(out) == {f"VOC2007-{i:06d}.tar": 4 for i in range(4)}
    examples = {
        ex.id: ex for shard in sorted(out.glob("*.tar")) for ex in map(decode_sample, iter_shard(shard))
    }
    first, second, third = examples["VOC2007-0"], examples["VOC2007-1"], examples["VOC2007-2"]
    assert (first.query.text or "").startswith(PUBLIC_IMAGE_TOKEN) and first.instruction is None
    assert (
        first.query.image_bytes == (images / "images/VOC2007/0.jpg").read_bytes()
        and first.query.image_ext == "jpg"
    )
    assert [n.text for n in first.negatives] == ["dog", "fox's den", "fox's den"]  # padded with the last
    assert first.task == "classification" and first.modality == "IT2T" and first.source == "VOC2007"
    assert (
        second.modality == "T2IT"
        and [n.image_bytes for n in second.negatives] == [(images / "images/VOC2007/2.jpg").read_bytes()] * 3
    )
    assert third.negatives == []
    assert [n.text for n in examples["VOC2007-18"].negatives] == ["n11a", "n11b", "n11c"]  # cut to 3
    # an empty image list zips with the texts to no negative (mmE5 src/collator.py:62-64)
    assert examples["VOC2007-19"].negatives == []
    # the DataModule reads the converted set
    dm = ShardDataModule(
        train=[ShardSet(str(out))], batch_size=4, num_workers=0, collate_fn=lambda exs: [e.id for e in exs]
    )
    dm.setup("fit")
    assert sorted(i for b in dm.loader(rank=0, world_size=1) for i in b) == sorted(examples)


def test_resume_continues_after_the_last_complete_shard(tmp_path, monkeypatch):
    inputs, images, _ = _write_inputs(tmp_path)
    whole = convert([inputs], tmp_path / "whole", str(images), samples_per_shard=4, progress=False)[0]
    # a run interrupted while writing its third shard
    real_flush, calls = ShardSetWriter.flush, []

    def flaky_flush(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        real_flush(self)

    monkeypatch.setattr(ShardSetWriter, "flush", flaky_flush)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        convert([inputs], out, str(images), samples_per_shard=4, progress=False)
    monkeypatch.undo()
    state = json.loads((out / "VOC2007" / STATE_FILE).read_text())
    assert (state["next_shard"], state["rows_done"], state["complete"]) == (2, 12, False)
    assert sorted(p.name for p in (out / "VOC2007").glob("*.tar")) == [
        "VOC2007-000000.tar",
        "VOC2007-000001.tar",
    ]
    [again] = convert([inputs], out, str(images), samples_per_shard=4, progress=False)
    assert again.resumed_from_row == 12 and again.balanced
    assert (again.samples_out, again.skipped, again.shards) == (
        whole.samples_out,
        whole.skipped,
        whole.shards,
    )
    for i in range(4):
        name = f"VOC2007-{i:06d}.tar"
        assert [s["json"] for s in iter_shard(out / "VOC2007" / name)] == [
            s["json"] for s in iter_shard(tmp_path / "whole" / "VOC2007" / name)
        ]
    [done] = convert([inputs], out, str(images), samples_per_shard=4, progress=False)
    assert done.complete and done.resumed_from_row == done.rows_in


def test_cli_and_clear_errors(tmp_path):
    inputs, images, _ = _write_inputs(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            *TOOL,
            str(inputs),
            str(tmp_path / "cli"),
            "--image_root",
            str(images),
            "--samples_per_shard",
            "8",
            "--progress",
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "VOC2007 [mmeb-hardneg train]: rows in 20 = samples out 16 + skipped 4" in run.stdout
    assert (
        "total: rows in 20 = samples out 16 + skipped 4 (bad_image: 1, bad_list: 1, empty_side: 1, "
        in run.stdout
    )
    report = json.loads((tmp_path / "cli" / "convert_report.json").read_text())
    assert (report["rows_in"], report["samples_out"], report["balanced"]) == (20, 16, True)
    assert report["sources"][0]["first_skip"]["missing_image_file"].startswith("row 3: missing_image_file")
    with pytest.raises(ConvertError, match=r"input 'nowhere\.parquet' does not exist"):
        convert(["nowhere.parquet"], tmp_path / "x")
    pq.write_table(pa.Table.from_pylist([{"query": "q"}]), tmp_path / "wrong.parquet")
    with pytest.raises(ConvertError, match=r"'.*wrong\.parquet' lacks column.*qry_image_path"):
        convert([tmp_path / "wrong.parquet"], tmp_path / "x", dataset="mmeb-hardneg", progress=False)
