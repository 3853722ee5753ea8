"""The chain a user runs, end to end through the `mme5` verbs: convert -> fit -> export -> evaluate.

The inputs are written here with pyarrow and real photos (scikit-image), not by mme5's own writers, in
the public layouts:

* MMEB-train as TIGER-Lab/MMEB-train ships it: ``<Subset>/{original,diverse_instruction,train}-00000-
  of-00001.parquet`` (the hub's file list), six string columns, image paths starting with
  ``images/<Subset>/``; the image root is the folder that holds ``images/`` (haon-chen/mmE5
  ``scripts/prepare_images.sh:46`` unpacks the zips into ``images/``, ``scripts/train/train.sh:48``
  reads them with ``--image_dir ./``). The converter takes ``original`` (VLM2Vec
  ``src/data/dataset/mmeb_dataset.py:121``), one source per subset.
* MMEB-eval as TIGER-Lab/MMEB-eval: ``<Dataset>/test-00000-of-00001.parquet`` with ``qry_text``,
  ``qry_img_path`` and list-valued ``tgt_text`` / ``tgt_img_path`` (VLM2Vec
  ``src/data/dataset/mmeb_dataset.py:276-302``), images under ``eval_images/`` (mmE5
  ``scripts/eval/eval_full.sh:29``: ``--image_dir images/eval_images/``).

After the fit, the checkpoint is scored three ways that must agree: ``mme5 evaluate`` on the export,
``mme5 evaluate`` on the checkpoint, and the official rule (candidate 0 is the truth; an exact tie
counts for it, as ``np.argmax``) applied to embeddings from ``mme5.load(...).encode``. The same weights
exported with mean pooling must score differently, and exactly as ``mme5.load`` embeds them.
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

import mme5
from mme5.cli.main import main

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse", "immunohistochemistry", "coins")
LABELS = ("person", "cup", "cat", "rocket", "man", "horse", "tissue", "coins")
INSTRUCTIONS = {
    "original": "Represent the given image for classification",
    "diverse_instruction": "Name the object",
}


def _photo(name: str, side: int = 48) -> Image.Image:
    a = np.asarray(getattr(skdata, name)())
    img = Image.fromarray(a).convert("RGB")
    img.thumbnail((side, side))
    return img


def _mmeb_train(root: Path) -> Path:
    """``root/VOC2007/<split>-00000-of-00001.parquet`` + ``root/images/VOC2007/*.jpg`` (the hub layout)."""
    (root / "images" / "VOC2007").mkdir(parents=True)
    (root / "VOC2007").mkdir()
    for split in ("original", "diverse_instruction", "train"):
        rows = []
        for i in range(24):
            k = i % len(PHOTOS)
            rel = f"images/VOC2007/{i:03d}.jpg"
            if split == "original":
                _photo(PHOTOS[k]).rotate(3 * i).save(root / rel, quality=90)
            rows.append(
                {
                    "qry": f"<|image_1|>\n{INSTRUCTIONS.get(split, INSTRUCTIONS['original'])}\n",
                    "qry_image_path": rel,
                    "pos_text": LABELS[k],
                    "pos_image_path": "",
                    "neg_text": LABELS[(k + 1) % len(LABELS)],
                    "neg_image_path": "",
                }
            )
        pq.write_table(pa.Table.from_pylist(rows), root / "VOC2007" / f"{split}-00000-of-00001.parquet")
    return root


def _mmeb_eval(root: Path) -> tuple[Path, Path]:
    """``root/mmeb/VOC2007/test-00000-of-00001.parquet`` with images under ``root/eval_images``."""
    images = root / "eval_images"
    (images / "VOC2007").mkdir(parents=True)
    rows = []
    for k, name in enumerate(PHOTOS):
        for turn in range(2):
            rel = f"VOC2007/{name}-{turn}.jpg"
            _photo(name).rotate(20 * turn + 5).save(images / rel, quality=90)
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


def _metrics(path: Path) -> dict[str, float]:
    [dataset] = json.loads(path.read_text())["mmeb"]["datasets"]
    return {k: dataset["metrics"][k] for k in ("precision@1", "hit@5", "mrr")}


def _scores_from_load(model: Path, mmeb_dir: Path, images: Path) -> tuple[dict[str, float], np.ndarray]:
    """The official MMEB rule on ``mme5.load(model).encode`` embeddings: per row, the truth's rank among
    that row's candidates by cosine (an exact tie counts for the truth); P@1, hit@5, MRR in percent, as
    ``mme5 evaluate`` reports them."""
    loaded = mme5.load(str(model))
    rows = pq.read_table(mmeb_dir / "VOC2007" / "test-00000-of-00001.parquet").to_pylist()
    ranks, queries = [], []
    for row in rows:
        q = loaded.encode(texts=[row["qry_text"]], images=[str(images / row["qry_img_path"])])
        c = loaded.encode(
            texts=row["tgt_text"], images=[str(images / p) if p else None for p in row["tgt_img_path"]]
        )
        q, c = q / np.linalg.norm(q, axis=-1, keepdims=True), c / np.linalg.norm(c, axis=-1, keepdims=True)
        s = c @ q[0]
        ranks.append(1 + int((s > s[0]).sum()))
        queries.append(q[0])
    r = np.asarray(ranks)
    scores = {"precision@1": (r == 1).mean(), "hit@5": (r <= 5).mean(), "mrr": (1 / r).mean()}
    return {k: 100 * float(v) for k, v in scores.items()}, np.stack(queries)


def _evaluate(model: Path, mmeb_dir: Path, images: Path, out: Path) -> dict[str, float]:
    args = ["evaluate", "--model", str(model), "--mmeb_dir", str(mmeb_dir), "--image_root", str(images)]
    assert main([*args, "--output_dir", str(out), "--cache_dir", "null"]) == 0
    return _metrics(out / "results.json")


@pytest.mark.slow
def test_convert_fit_export_evaluate_on_hub_layouts(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["mme5"])
    train = _mmeb_train(tmp_path / "MMEB-train")
    mmeb_dir, eval_images = _mmeb_eval(tmp_path / "MMEB-eval")
    shards = tmp_path / "shards"
    assert main(["convert", str(train), str(shards), "--image_root", str(train), "--progress", "false"]) == 0
    report = json.loads((shards / "convert_report.json").read_text())
    assert (report["rows_in"], report["samples_out"], report["skipped"]) == (
        24,
        24,
        {},
    )  # no image row skipped
    [source] = report["sources"]  # one source per subset, the original split only (not 3 x 24 rows)
    assert (source["source"], source["split"], source["negatives"]) == ("VOC2007", "original", 1)

    run = tmp_path / "run"
    config = yaml.safe_load(Path("configs/demo.yaml").read_text())
    config["trainer"].update(max_steps=3, max_epochs=-1, log_every_n_steps=1, default_root_dir=str(run))
    checkpoint, mmeb = config["trainer"]["callbacks"][:2]
    mmeb["init_args"] = {"mmeb_dir": str(mmeb_dir), "image_root": str(eval_images), "batch_size": 8}
    config["trainer"]["callbacks"] = [checkpoint, mmeb]
    config["data"] = {"train": [{"shards": str(shards / "VOC2007")}], "batch_size": 4, "num_workers": 0}
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 0

    version = run / "lightning_logs" / "version_0"
    in_fit = _metrics(version / "eval" / "mmeb_step3.json")
    exported = tmp_path / "exported"
    ckpt = version / "checkpoints" / "last.ckpt"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(exported)]) == 0
    assert json.loads((exported / "mme5_config.json").read_text())["encoder"]["pooling"] == "last"

    on_export = _evaluate(exported, mmeb_dir, eval_images, tmp_path / "eval-export")
    on_ckpt = _evaluate(ckpt, mmeb_dir, eval_images, tmp_path / "eval-ckpt")
    from_load, last_q = _scores_from_load(exported, mmeb_dir, eval_images)
    assert on_export == pytest.approx(in_fit, abs=1e-9)  # the exported model scores as the trained one
    assert on_ckpt == pytest.approx(on_export, abs=1e-9)
    assert from_load == pytest.approx(on_export, abs=1e-9)

    # the same weights exported with mean pooling: evaluate follows the export's settings, as load does
    from mme5.model.export import export
    from mme5.model.load import load_checkpoint_encoder

    mean = export(load_checkpoint_encoder(ckpt, pooling="mean"), tmp_path / "exported-mean")
    assert json.loads((mean / "mme5_config.json").read_text())["encoder"]["pooling"] == "mean"
    on_mean = _evaluate(mean, mmeb_dir, eval_images, tmp_path / "eval-mean")
    from_load_mean, mean_q = _scores_from_load(mean, mmeb_dir, eval_images)
    assert on_mean == pytest.approx(from_load_mean, abs=1e-9)
    assert not np.allclose(mean_q, last_q, atol=1e-4)  # mean pooling embeds otherwise
    assert on_mean != pytest.approx(on_export, abs=1e-9), (on_mean, on_export)  # and scores otherwise
