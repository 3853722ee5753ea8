"""Fixture folders in the public MMEB / XTD layouts and a real, deterministic embedding function.

The embedding function computes features from the content itself (hashed character trigrams of the
text, a coarse colour grid of the image), so equal content gives equal vectors in any process and
different content gives different, well separated scores.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image

from mme5.records import Side

INSTR_CLS = "<|image_1|>\nRepresent the given image for classification"
INSTR_IMG = "<|image_1|>\nRepresent the given image."
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry")
LABELS = {
    "astronaut": "astronaut in a suit",
    "coffee": "cup of coffee",
    "chelsea": "tabby cat",
    "rocket": "rocket on a pad",
    "cat": "cat face",
    "immunohistochemistry": "stained tissue",
}


class HashEmbedder:
    """``embed(sides) -> [n, D]``: trigram hashing of the text plus an RGB grid of the image.

    A fixed random map also writes the image grid into the text dimensions, so that text-only and
    image-only sides have non-zero (and distinct) similarities.
    """

    def __init__(self, text_dim: int = 96, grid: int = 4, salt: str = "", image_weight: float = 1.5):
        self.text_dim, self.grid, self.salt, self.image_weight = text_dim, grid, salt, image_weight
        seed = int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=4).digest(), "little")
        self.cross = np.random.default_rng(seed).standard_normal((text_dim, 3 * grid * grid))
        self.sides_seen = 0
        self.calls = 0

    def features(self, side: Side) -> np.ndarray:
        v = np.zeros(self.text_dim + 3 * self.grid * self.grid)
        text = (side.text or "").lower()
        for i in range(len(text) - 2):
            h = int.from_bytes(
                hashlib.blake2b((self.salt + text[i : i + 3]).encode(), digest_size=4).digest(), "little"
            )
            v[h % self.text_dim] += 1.0 if (h >> 16) & 1 else -1.0
        if side.image is not None:
            small = np.asarray(
                side.image.convert("RGB").resize((self.grid, self.grid), Image.BILINEAR), dtype=np.float64
            )
            pixels = (small.reshape(-1) / 255.0 - 0.45) * self.image_weight * 4
            v[self.text_dim :] = pixels
            v[: self.text_dim] += self.cross @ pixels
        return v

    def __call__(self, sides: list[Side]) -> torch.Tensor:
        self.calls += 1
        self.sides_seen += len(sides)
        x = torch.tensor(np.stack([self.features(s) for s in sides]), dtype=torch.float32)
        return F.normalize(x, dim=-1)


@dataclass
class EvalFixture:
    root: Path
    mmeb_dir: Path
    xtd_dir: Path
    image_root: Path
    mmeb_files: dict[str, Path]
    xtd_files: dict[str, Path]


def _write_images(image_root: Path) -> list[str]:
    import skimage.data

    paths = []
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        h, w = arr.shape[:2]
        for j, (y, x) in enumerate([(0, 0), (h // 3, w // 3)]):
            crop = Image.fromarray(arr[y : y + h // 2, x : x + w // 2]).resize((40, 32))
            rel = f"photos/{name}_{j}.png"
            (image_root / rel).parent.mkdir(parents=True, exist_ok=True)
            crop.save(image_root / rel)
            paths.append(rel)
    # the same pixels under another path: a distinct item with an identical embedding (an exact tie)
    (image_root / "copies").mkdir(exist_ok=True)
    shutil.copy(image_root / "photos/astronaut_0.png", image_root / "copies/astronaut_0.png")
    return paths


def _table(rows: list[tuple[str, str, list[str], list[str]]]) -> pa.Table:
    return pa.table(
        {
            "qry_text": [r[0] for r in rows],
            "qry_img_path": [r[1] for r in rows],
            "tgt_text": [r[2] for r in rows],
            "tgt_img_path": [r[3] for r in rows],
        }
    )


def _rows_classification(rng: np.random.Generator, images: list[str]) -> list:
    rows = []
    labels = list(LABELS.values())
    for idx, img in enumerate(images):
        photo = img.split("/")[1].rsplit("_", 1)[0]
        truth = LABELS[photo]
        others = [label for label in labels if label != truth]
        rng.shuffle(others)
        if idx % 4 == 3:
            others = others[:2]  # a shorter candidate list
        cands = [truth, *others]
        rows.append((INSTR_CLS, img, cands, [""] * len(cands)))  # text-only candidates
    return rows


def _rows_t2i(rng: np.random.Generator, images: list[str]) -> list:
    rows = []
    for idx, img in enumerate(images):
        photo = img.split("/")[1].rsplit("_", 1)[0]
        others = [p for p in images if p != img]
        rng.shuffle(others)
        cands = [img, *others[: 2 + idx % 5]]  # 3..7 candidates
        rows.append(
            (f"Find me an everyday image of a {LABELS[photo]}", "", [""] * len(cands), cands)
        )  # image-only
    return rows


def _rows_it2it(rng: np.random.Generator, images: list[str]) -> list:
    rows = []
    for idx, img in enumerate(images):
        photo = img.split("/")[1].rsplit("_", 1)[0]
        others = [p for p in images if p != img]
        rng.shuffle(others)
        texts = [f"{INSTR_IMG} {LABELS[photo]}"] + [
            f"{INSTR_IMG} {LABELS[o.split('/')[1].rsplit('_', 1)[0]]}" for o in others[:4]
        ]
        paths = [img, *others[:4]]
        if idx % 3 == 0:  # the truth repeated inside its row: same item, must tie in its favour
            texts.insert(2, texts[0])
            paths.insert(2, paths[0])
        if img == "photos/astronaut_0.png":  # same content under another path: a distinct item, exact tie
            texts.append(texts[0])
            paths.append("copies/astronaut_0.png")
        rows.append(("<|image_1|>\nFind the matching entity: " + LABELS[photo], img, texts, paths))
    return rows


def build_fixture(root: Path) -> EvalFixture:
    rng = np.random.default_rng(7)
    image_root = root / "eval_images"
    images = _write_images(image_root)
    mmeb = root / "MMEB-eval"
    (mmeb / "ImageNet-1K").mkdir(parents=True)
    files = {}
    files["ImageNet-1K"] = mmeb / "ImageNet-1K" / "test-00000-of-00001.parquet"  # hub layout
    pq.write_table(_table(_rows_classification(rng, images)), files["ImageNet-1K"])
    files["VisualNews_t2i"] = mmeb / "VisualNews_t2i.parquet"  # one file per dataset
    pq.write_table(_table(_rows_t2i(rng, images)), files["VisualNews_t2i"])
    (mmeb / "OVEN").mkdir()
    files["OVEN"] = mmeb / "OVEN" / "data-00000-of-00001.arrow"  # a save_to_disk folder (arrow stream)
    table = _table(_rows_it2it(rng, images))
    with pa.OSFile(str(files["OVEN"]), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    files["ToyVQA"] = mmeb / "ToyVQA.parquet"  # a name outside the 36, described in datasets.json
    pq.write_table(_table(_rows_classification(np.random.default_rng(3), images[::-1])), files["ToyVQA"])
    (mmeb / "datasets.json").write_text(
        json.dumps({"ToyVQA": {"meta_task": "VQA", "ood": True, "chance_p1": 0.25}})
    )
    xtd = root / "XTD"
    xtd_files = {}
    for lang, prefix in (("it", "Trova un'immagine di "), ("es", "Encuentra una imagen de ")):
        (xtd / lang).mkdir(parents=True)
        rows = []
        for img in images:  # every image of the pool is a candidate of every row, the truth first
            photo = img.split("/")[1].rsplit("_", 1)[0]
            cands = [img] + [p for p in images if p != img]
            rows.append((prefix + LABELS[photo], "", [""] * len(cands), cands))
        xtd_files[lang] = xtd / lang / "test-00000-of-00001.parquet"
        pq.write_table(_table(rows), xtd_files[lang])
    return EvalFixture(root, mmeb, xtd, image_root, files, xtd_files)
