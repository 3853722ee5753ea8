"""The chain a user runs, end to end through the `mme5` verbs: convert -> fit -> export -> evaluate.

The inputs are written here with pyarrow and PIL in the public layouts, not by mme5's own writers:
MMEB-train as TIGER-Lab/MMEB-train ships it (``<Subset>/train-00000-of-00001.parquet``, six string
columns, image paths starting with ``images/<Subset>/``, the image root being the folder that holds
``images/``; haon-chen/mmE5 ``src/dataset.py`` reads it with ``--image_dir ./``), and MMEB-eval as
TIGER-Lab/MMEB-eval (``<Dataset>/test-00000-of-00001.parquet`` with ``qry_text``, ``qry_img_path``,
list-valued ``tgt_text`` / ``tgt_img_path``; VLM2Vec ``src/data/dataset/mmeb_dataset.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from skimage import data as skdata

from mme5.cli.main import main

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse")
LABELS = ("person", "cup", "cat", "rocket", "man", "horse")


def _photo(name: str, side: int = 48) -> Image.Image:
    a = np.asarray(getattr(skdata, name)())
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    img = Image.fromarray(a).convert("RGB")
    img.thumbnail((side, side))
    return img


def _mmeb_train(root: Path) -> Path:
    """``root/VOC2007/train-00000-of-00001.parquet`` + ``root/images/VOC2007/*.jpg`` (the hub layout)."""
    (root / "images" / "VOC2007").mkdir(parents=True)
    rows = []
    for i in range(24):
        k = i % len(PHOTOS)
        rel = f"images/VOC2007/{i:03d}.jpg"
        _photo(PHOTOS[k]).rotate(3 * i).save(root / rel, quality=90)
        rows.append(
            {
                "qry": "<|image_1|>\nRepresent the given image for classification\n",
                "qry_image_path": rel,
                "pos_text": LABELS[k],
                "pos_image_path": "",
                "neg_text": LABELS[(k + 1) % len(LABELS)],
                "neg_image_path": "",
            }
        )
    (root / "VOC2007").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "VOC2007" / "train-00000-of-00001.parquet")
    return root


def _mmeb_eval(root: Path) -> tuple[Path, Path]:
    """``root/mmeb/VOC2007/test-00000-of-00001.parquet`` with images under ``root/eval_images``."""
    images = root / "eval_images"
    (images / "VOC2007").mkdir(parents=True)
    rows = []
    for k, name in enumerate(PHOTOS):
        rel = f"VOC2007/{name}.jpg"
        _photo(name).save(images / rel, quality=90)
        order = [LABELS[k]] + [label for label in LABELS if label != LABELS[k]]
        rows.append(
            {
                "qry_text": "<|image_1|>\nRepresent the given image for classification\n",
                "qry_img_path": rel,
                "tgt_text": order,
                "tgt_img_path": [""] * len(order),
            }
        )
    (root / "mmeb" / "VOC2007").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "mmeb" / "VOC2007" / "test-00000-of-00001.parquet")
    return root / "mmeb", images


def _scores(path: Path) -> dict[str, float]:
    payload = json.loads(path.read_text())["mmeb"]
    return {d["name"]: d["metrics"]["precision@1"] for d in payload["datasets"]}


@pytest.mark.slow
def test_convert_fit_export_evaluate_on_hub_layouts(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mme5"])
    train = _mmeb_train(tmp_path / "MMEB-train")
    mmeb_dir, eval_images = _mmeb_eval(tmp_path / "MMEB-eval")
    shards = tmp_path / "shards"
    assert main(["convert", str(train), str(shards), "--image_root", str(train), "--progress", "false"]) == 0
    report = json.loads((shards / "VOC2007" / "convert_report.json").read_text())
    assert report["rows_in"] == report["samples_out"] == 24, report  # no image row skipped

    run = tmp_path / "run"
    config = yaml.safe_load(Path("configs/demo.yaml").read_text())
    config["trainer"].update(max_steps=3, max_epochs=-1, log_every_n_steps=1, default_root_dir=str(run))
    checkpoint, mmeb, _ = config["trainer"]["callbacks"]
    mmeb["init_args"] = {"mmeb_dir": str(mmeb_dir), "image_root": str(eval_images), "batch_size": 8}
    config["trainer"]["callbacks"] = [checkpoint, mmeb]
    config["data"] = {"train": [{"shards": str(shards / "VOC2007")}], "batch_size": 4, "num_workers": 0}
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 0

    version = run / "lightning_logs" / "version_0"
    in_fit = _scores(version / "eval" / "mmeb_step3.json")
    exported = tmp_path / "exported"
    ckpt = version / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(exported)]) == 0
    out = tmp_path / "standalone"
    args = [
        "evaluate",
        "--model",
        str(exported),
        "--mmeb_dir",
        str(mmeb_dir),
        "--image_root",
        str(eval_images),
    ]
    assert main([*args, "--output_dir", str(out), "--cache_dir", "null"]) == 0
    standalone = _scores(out / "results.json")
    assert list(in_fit) == ["VOC2007"]
    assert standalone == pytest.approx(in_fit, abs=1e-9)  # the exported model scores as the trained one
