"""Convert the public training sets, as the hub ships them, into mme5 shards: one shard set per subset.

The three sets and where their rules come from (haon-chen/mmE5 at 4818cdf, TIGER-AI-Lab/VLM2Vec at
6e1e1d4):

========================  ==============================  ======================  ==================
set (``--dataset``)       hub id                          default split           rows per subset
========================  ==============================  ======================  ==================
``mmeb-train``            TIGER-Lab/MMEB-train            ``original``            first 50,000
``mmeb-hardneg``          intfloat/mmE5-MMEB-hardneg      ``train``               first 50,000
``mmE5-synthetic``        intfloat/mmE5-synthetic         ``train``               all but the last
========================  ==============================  ======================  ==================

* Splits. mmE5 trains on ``intfloat/mmE5-MMEB-hardneg`` and ``intfloat/mmE5-synthetic``
  (``scripts/train/train.sh:41-44``), split ``train`` (``src/arguments.py:80-82``; train.sh does not
  change it). MMEB-train's subsets hold ``original-*``, ``diverse_instruction-*`` and a legacy
  ``train-*`` copy of ``original``; VLM2Vec's default is ``original`` (``src/data/dataset/
  mmeb_dataset.py:121``, README "the original split is provided to support the reproduction of our
  paper results"), so that is the default here, ``train`` when a subset has no ``original``.
* Caps. mmE5 takes ``split[:50000]`` of every labelled subset (``train.sh:46`` and
  ``src/dataset.py:39-44``) and ``split[:-1]`` of every synthetic subset (``src/dataset.py:23,28``:
  ``num_sample = -1``), which drops the last row. ``rows_per_subset`` follows the same slice rule
  (``N`` first rows, a negative ``N`` all but the last ``-N``, ``None`` all).
* Negatives of ``mmeb-train`` (VLM2Vec, ``mmeb_dataset.py:77-81,94-97`` and ``:207-210``): ``neg_text``
  and ``neg_image_path`` are one plain string each, never parsed; the row has one negative when either
  is non-empty, none otherwise. ``negatives`` only turns it off (0).
* Negatives of ``mmeb-hardneg`` / ``mmE5-synthetic`` (mmE5, ``src/dataset.py:84-93,101-113`` and
  ``src/collator.py:62-64``): each column is a Python literal (parsed here with
  :func:`ast.literal_eval`, never ``eval``), wrapped in a list when it is not one; texts and image
  paths are padded *separately* to ``negatives`` (3, ``train.sh:59``) by repeating their last item
  when shorter but not empty, and cut to it; an empty negative text becomes the positive's text when
  the whole text list holds one distinct value, otherwise a text drawn from its non-empty items (mmE5
  draws with :mod:`random` on every read; here the draw is seeded by ``seed``, source and row, so a
  conversion is reproducible); the negatives are then ``zip(texts, images)`` (the shorter list wins);
  an empty image path means no image.

Layouts (found under each input folder; hidden folders such as ``.cache`` are ignored):

* hub files: ``<Subset>/<split>-00000-of-00001.parquet`` (MMEB-train, mmE5-MMEB-hardneg) and
  ``<Subset>/<Subset>.parquet`` (mmE5-synthetic, split ``train``);
* the hub's parquet converter (``refs/convert/parquet``): ``<Subset>/<split>/0000.parquet``;
* a subset folder of either, or single parquet files;
* VLM2Vec-V2's video and visual-document sets (see "VLM2Vec-V2 training sets" below): a LLaVA-Hound
  ``.jsonl`` (rows ``id``, ``video``, ``conversations``) whose frame folders ``<video>/`` lie under
  ``image_root``, giving frame-list samples (``Side.frames``); ViDoRe (``colpali_train_set``) and
  VisRAG parquet files, found by their columns.

Image paths are joined to ``image_root`` as the official loaders do (``os.path.join(image_dir, path)``,
``src/dataset.py:72``); the official paths start with ``images/<Subset>/``, so the root is the folder
that holds ``images/`` (mmE5 trains with ``--image_dir ./`` after unpacking into ``./images``,
``train.sh:48``, ``scripts/prepare_images.sh:46``). An absolute or ``..`` path, or one whose symlinks
lead out of the root, is refused and counted (``image_outside_root``), never read. Images are copied
byte for byte; only JPEG, PNG, WebP, GIF, BMP and TIFF are accepted.

Texts are kept (instruction inside ``qry``, the public ``<|image_1|>`` token; the backbone adapters
rewrite it at encode time, ``image_token`` at conversion instead). Each subset goes to
``<out>/<Subset>/<Subset>-NNNNNN.tar`` with ``sizes.json``; ``convert_state.json`` records the rows
done after every shard, so a rerun resumes (a finished subset is skipped). Every subset ends with
rows in = samples out + skipped (by reason), printed and written to ``<out>/<Subset>/convert_report.json``
and, for the whole run, ``<out>/convert_report.json``.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import pyarrow.parquet as pq
from PIL import Image

from mme5.atomic import write_text
from mme5.errors import Mme5Error
from mme5.mmeb import MMEB_META_TASK
from mme5.records import (
    IMAGE_EXTENSIONS,
    IMAGE_FORMATS,
    MODALITIES,
    PUBLIC_IMAGE_TOKEN,
    Example,
    RecordError,
    ShardSetWriter,
    Side,
)

log = logging.getLogger("mme5.data.convert")

BASE_COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path")
NEG_COLUMNS = ("neg_text", "neg_image_path")
COLUMNS = BASE_COLUMNS + NEG_COLUMNS
STATE_FILE = "convert_state.json"
REPORT_FILE = "convert_report.json"
#: Frames per video in VLM2Vec-V2's training mixture (``experiments/public/train/train_video.yaml``,
#: ``num_frames: 8``).
V2_NUM_FRAMES = 8

DatasetName = Literal[
    "auto",
    "mmeb-train",
    "mmeb-hardneg",
    "mmE5-synthetic",
    "llavahound-caption",
    "llavahound-qa",
    "vidore",
    "visrag",
]

#: ``train-00000-of-00001.parquet`` (``datasets`` push_to_hub; older versions add ``-<hash>``).
HUB_FILE = re.compile(r"^(?P<split>[A-Za-z][A-Za-z0-9_]*)-\d{5}-of-\d{5}(?:-[0-9a-f]+)?\.parquet$")
#: ``0000.parquet`` inside ``<Subset>/<split>/`` (the hub's parquet converter).
CONVERTER_FILE = re.compile(r"^\d{4}\.parquet$")
LAYOUTS = (
    "<Subset>/<split>-00000-of-00001.parquet (hub), <Subset>/<split>/0000.parquet (parquet converter) "
    "or <Subset>/<Subset>.parquet (mmE5-synthetic)"
)


@dataclass(frozen=True)
class SetRule:
    """How one public training set is read: its default split, cap, and negative rule."""

    name: str
    hub_id: str
    split: str
    rows_per_subset: int | None
    negative_rule: Literal["single", "mme5"]
    negatives: int


RULES: dict[str, SetRule] = {
    "mmeb-train": SetRule("mmeb-train", "TIGER-Lab/MMEB-train", "original", 50_000, "single", 1),
    "mmeb-hardneg": SetRule("mmeb-hardneg", "intfloat/mmE5-MMEB-hardneg", "train", 50_000, "mme5", 3),
    "mmE5-synthetic": SetRule("mmE5-synthetic", "intfloat/mmE5-synthetic", "train", -1, "mme5", 3),
}
SYNTHETIC_SUBSETS = frozenset({"Classification", "Retrieval", "VQA"})
HARDNEG_ONLY_SUBSETS = frozenset({"TAT-DQA", "ArxivQA", "InfoSeek_it2t", "InfoSeek_it2it"})

#: Training subset name (lower case) -> task: MMEB's names, the training set's spellings, the
#: mmE5-MMEB-hardneg supplements and the synthetic subsets. Other sources default to retrieval.
TASK_OF_SOURCE: dict[str, str] = {
    **{name.lower(): meta.lower() for name, meta in MMEB_META_TASK.items()},
    "imagenet_1k": "classification",
    "tat-dqa": "vqa",
    "arxivqa": "vqa",
    "infoseek_it2t": "retrieval",
    "infoseek_it2it": "retrieval",
    **{task: task for task in ("classification", "vqa", "retrieval", "grounding")},
}


class ConvertError(Mme5Error, ValueError):
    """A conversion that cannot start or yields nothing (unknown layout, missing columns, no images
    under the root): a user error, reported as one line naming the file and what was expected."""


# ---- finding the subsets --------------------------------------------------------------------------


@dataclass
class Subset:
    """One subset of a training set as found on disk: its files per split, in order."""

    name: str
    folder: Path
    splits: dict[str, list[Path]] = field(default_factory=dict)

    def add(self, split: str, path: Path) -> None:
        self.splits.setdefault(split, []).append(path)


def _classify(rel: PurePosixPath, base: Path) -> tuple[str, str, Path]:
    """``(subset, split, subset folder)`` of a parquet at ``rel`` under the input folder ``base``."""
    parts, name = rel.parts, rel.name
    hub, converter = HUB_FILE.match(name), CONVERTER_FILE.match(name)
    if len(parts) == 1:  # the input is a subset folder, or a flat folder of single-file subsets
        if hub:
            return base.name, hub["split"], base
        if not converter:
            return rel.stem, "train", base
    elif len(parts) == 2:
        if hub:
            return parts[0], hub["split"], base / parts[0]
        if converter:  # a subset folder of the parquet-converter layout
            return base.name, parts[0], base
        if rel.stem == parts[0]:  # mmE5-synthetic: Retrieval/Retrieval.parquet
            return parts[0], "train", base / parts[0]
    elif len(parts) == 3 and converter:
        return parts[0], parts[1], base / parts[0]
    raise ConvertError(f"'{base / rel}' matches no known layout of the training sets; expected {LAYOUTS}")


def find_subsets(item: str | os.PathLike) -> dict[str, Subset]:
    """The subsets under one input (a set's folder as downloaded, a subset folder or a parquet file)."""
    p = Path(item)
    found: dict[str, Subset] = {}
    if p.is_file():
        if p.suffix != ".parquet":
            raise ConvertError(f"input '{p}' is not a .parquet file")
        hub = HUB_FILE.match(p.name)
        if hub:
            name, split = p.parent.name, hub["split"]
        elif CONVERTER_FILE.match(p.name):
            name, split = p.parent.parent.name, p.parent.name
        else:
            name, split = p.stem, "train"
        found[name] = Subset(name, p.parent)
        found[name].add(split, p)
        return found
    if not p.is_dir():
        raise ConvertError(f"input '{p}' does not exist (expected a training set's folder or a parquet file)")
    files = sorted(
        f for f in p.rglob("*.parquet") if not any(part.startswith(".") for part in f.relative_to(p).parts)
    )
    if not files:
        raise ConvertError(f"input folder '{p}' holds no .parquet file; expected {LAYOUTS}")
    for f in files:
        name, split, folder = _classify(PurePosixPath(f.relative_to(p).as_posix()), p)
        found.setdefault(name, Subset(name, folder)).add(split, f)
    return found


def detect_dataset(root: Path, subsets: dict[str, Subset]) -> str:
    """Which public set a folder holds: by its name as downloaded, else by its subsets and splits."""
    name = root.name.lower()
    for key, marker in (
        ("mmeb-hardneg", "hardneg"),
        ("mmE5-synthetic", "synthetic"),
        ("mmeb-train", "mmeb-train"),
    ):
        if marker in name:
            return key
    splits = {s for sub in subsets.values() for s in sub.splits}
    if splits & {"original", "diverse_instruction"}:
        return "mmeb-train"
    if set(subsets) <= SYNTHETIC_SUBSETS:
        return "mmE5-synthetic"
    if set(subsets) & HARDNEG_ONLY_SUBSETS:
        return "mmeb-hardneg"
    raise ConvertError(
        f"cannot tell which training set '{root}' holds (subsets {', '.join(sorted(subsets))}); "
        f"pass --dataset {' | '.join(RULES)}"
    )


def choose_split(subset: Subset, split: str, rule: SetRule) -> str:
    """The split to convert: the one asked for, or (``auto``) the set's default."""
    if split != "auto":
        if split not in subset.splits:
            raise ConvertError(
                f"subset folder '{subset.folder}' has no split '{split}'; it holds "
                f"{', '.join(sorted(subset.splits))}"
            )
        return split
    for candidate in (rule.split, "train"):
        if candidate in subset.splits:
            return candidate
    if len(subset.splits) == 1:
        return next(iter(subset.splits))
    raise ConvertError(
        f"subset folder '{subset.folder}' has no split '{rule.split}' (the default of {rule.name}); it holds "
        f"{', '.join(sorted(subset.splits))}: pass --split"
    )


def rows_taken(total: int, cap: int | None) -> int:
    """Rows of ``split[:cap]`` (the ``datasets`` slice the official loaders use) out of ``total``."""
    return len(range(total)[:cap])


# ---- rows -----------------------------------------------------------------------------------------


def parse_literal_list(value: Any, column: str) -> tuple[list[str], Any]:
    """A list-valued negatives cell as mmE5 reads it (``src/dataset.py:85-87``): ``(items, raw)``.

    ``raw`` is the parsed literal before wrapping (mmE5's empty-text rule looks at it). A cell that is
    not a Python literal (mmE5's ``eval`` would fail on it) raises ``RecordError("bad_list")``.
    """
    if value is None:
        return [], []
    if isinstance(value, (list, tuple)):
        raw: Any = list(value)
    elif isinstance(value, str):
        try:
            raw = ast.literal_eval(value.strip()) if value.strip() else []
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
            raise RecordError("bad_list", f"column '{column}' is not a Python literal: {exc}") from None
    else:
        raise RecordError("bad_list", f"column '{column}' holds {type(value).__name__}, expected a string")
    items = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(x, str) for x in items):
        raise RecordError("bad_list", f"column '{column}' holds a non-string item")
    return list(items), raw


def pad_cut(items: list[str], k: int) -> list[str]:
    """mmE5's ``filter_hard_negtives`` (``src/dataset.py:89-92``): pad a short non-empty list with its
    last item to ``k``, then cut to ``k``."""
    if 0 < len(items) < k:
        items = items + [items[-1]] * (k - len(items))
    return items[:k]


def mme5_negatives(
    neg_text: Any, neg_image_path: Any, pos_text: str, k: int, rng: random.Random
) -> list[tuple[str, str]]:
    """The ``(text, image path)`` negatives mmE5 builds from one row (``src/dataset.py:101-113``,
    ``src/collator.py:62-64``); ``rng`` stands in for mmE5's unseeded ``random.choice``."""
    if k <= 0:
        return []
    text_list, raw_texts = parse_literal_list(neg_text, "neg_text")
    image_list, _ = parse_literal_list(neg_image_path, "neg_image_path")
    texts, images = pad_cut(text_list, k), pad_cut(image_list, k)
    for i, text in enumerate(texts):
        if text == "":
            if len(set(raw_texts)) == 1:
                texts[i] = pos_text
            else:
                pool = [t for t in raw_texts if t != ""]
                if not pool:  # mmE5's random.choice([]) raises here
                    raise RecordError("bad_list", "column 'neg_text' is an empty non-list literal")
                texts[i] = rng.choice(pool)
    return list(zip(texts, images, strict=False))  # the shorter list wins, as in the collator


def single_negative(neg_text: Any, neg_image_path: Any) -> list[tuple[str, str]]:
    """VLM2Vec's one negative per MMEB-train row (``mmeb_dataset.py:77-81,94-97``), strings as they are."""
    for value, column in ((neg_text, "neg_text"), (neg_image_path, "neg_image_path")):
        if value is not None and not isinstance(value, str):
            raise RecordError(
                "bad_type", f"column '{column}' holds {type(value).__name__}, expected a string"
            )
    text, image = neg_text or "", neg_image_path or ""
    return [(text, image)] if text or image else []


def modality_of(query: Side, positive: Side) -> str:
    """``IT2T`` style code of a pair: I when a side has an image, T when it has text."""

    def code(s: Side) -> str:
        return ("I" if s.has_image else "") + ("T" if s.text else "")

    return f"{code(query)}2{code(positive)}"


class ImageLoader:
    """Reads image files under a root, refusing paths that leave it, and checks that they are images
    (each file read once per source, cached by path)."""

    def __init__(self, root: str | os.PathLike | None, cache_size: int = 4096):
        self.root = Path(root) if root is not None else None
        self.real_root = self.root.resolve() if self.root is not None else None
        self.cache: dict[str, tuple[bytes, str]] = {}
        self.cache_size = cache_size

    def resolve(self, rel: str) -> Path:
        """The file ``rel`` names under the root (``RecordError`` when it would leave the root)."""
        if self.root is None or self.real_root is None:
            raise RecordError("missing_image_file", f"row names image '{rel}' but no image root was given")
        posix = PurePosixPath(rel.replace("\\", "/"))
        if posix.is_absolute() or PureWindowsPath(rel).drive or ".." in posix.parts:
            raise RecordError(
                "image_outside_root", f"image path '{rel}' is absolute or leaves the image root"
            )
        real = (self.root / posix).resolve()
        if not real.is_relative_to(self.real_root):
            raise RecordError(
                "image_outside_root",
                f"image '{rel}' resolves to '{real}', outside the image root '{self.root}'",
            )
        return real

    def load(self, rel: str) -> tuple[bytes, str]:
        """``(bytes, extension)`` of the image ``rel`` (``RecordError`` when missing or not an image)."""
        if rel in self.cache:
            return self.cache[rel]
        path = self.resolve(rel)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RecordError(
                "missing_image_file", f"cannot read image '{path}': {exc.strerror or exc}"
            ) from None
        try:
            with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as img:
                fmt = (img.format or "").lower()
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
            raise RecordError(
                "bad_image", f"'{path}' is not a readable JPEG/PNG/WebP/GIF/BMP/TIFF: {exc}"
            ) from None
        ext = path.suffix.lower().lstrip(".")
        if ext not in IMAGE_EXTENSIONS:
            ext = {"jpeg": "jpg"}.get(fmt, fmt) if fmt in IMAGE_EXTENSIONS else "png"
        if len(self.cache) >= self.cache_size:
            self.cache.pop(next(iter(self.cache)))
        self.cache[rel] = (data, ext)
        return data, ext


@dataclass(frozen=True)
class RowRules:
    """What turns one row into an Example: the set's negative rule and the options."""

    negative_rule: Literal["single", "mme5"]
    negatives: int
    image_token: str | None = None
    seed: int = 0


def row_to_example(
    row: dict[str, Any], index: int, source: str, task: str, images: ImageLoader, rules: RowRules
) -> Example:
    """One parquet row -> Example (raises :class:`RecordError` with the skip reason)."""

    def text(value: Any, column: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise RecordError(
                "bad_type", f"column '{column}' holds {type(value).__name__}, expected a string"
            )
        if rules.image_token is not None:
            value = value.replace(PUBLIC_IMAGE_TOKEN, rules.image_token)
        return value or None

    def side(t: Any, path: Any, column: str) -> Side:
        s = Side(text=text(t, column))
        if path is not None and not isinstance(path, str):
            raise RecordError(
                "bad_type", f"image path of '{column}' is {type(path).__name__}, expected a string"
            )
        if path:
            s.image_bytes, s.image_ext = images.load(path)
        if s.text is None and not s.has_image:
            raise RecordError("empty_side", f"column '{column}' has neither text nor image")
        return s

    query = side(row.get("qry"), row.get("qry_image_path"), "qry")
    positive = side(row.get("pos_text"), row.get("pos_image_path"), "pos_text")
    if rules.negatives <= 0:
        negs: list[tuple[str, str]] = []
    elif rules.negative_rule == "single":
        negs = single_negative(row.get("neg_text"), row.get("neg_image_path"))
    else:
        pos_text = row.get("pos_text") or ""
        rng = random.Random(f"mme5-convert:{rules.seed}:{source}:{index}")
        negs = mme5_negatives(row.get("neg_text"), row.get("neg_image_path"), pos_text, rules.negatives, rng)
    negatives = [side(t or None, p or None, f"neg_text[{i}]") for i, (t, p) in enumerate(negs)]
    modality = row.get("modality")
    return Example(
        id=f"{source}-{index}",
        query=query,
        positive=positive,
        negatives=negatives,
        task=task,
        modality=modality if modality in MODALITIES else modality_of(query, positive),
        source=source,
        meta={"row": str(index)},
    )


# ---- one subset -----------------------------------------------------------------------------------


@dataclass
class ConvertReport:
    """What one subset's conversion did: rows in = samples out + skipped (by reason)."""

    source: str
    out_dir: str
    dataset: str = ""
    split: str = ""
    files: list[str] = field(default_factory=list)
    rows_in_split: int = 0
    rows_per_subset: int | None = None
    rows_in: int = 0
    samples_out: int = 0
    shards: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first_skip: dict[str, str] = field(default_factory=dict)
    negatives: int = 0
    resumed_from_row: int = 0
    complete: bool = False

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.samples_out + sum(self.skipped.values())

    def summary(self) -> str:
        """One line: rows in = samples out + skipped (by reason)."""
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        cut = self.rows_in_split - self.rows_in
        capped = f" (first {self.rows_in} of {self.rows_in_split})" if cut else ""
        return (
            f"{self.source} [{self.dataset} {self.split}]: rows in {self.rows_in}{capped} = samples out "
            f"{self.samples_out} + skipped {sum(self.skipped.values())} ({skipped}); {self.shards} shards "
            f"in {self.out_dir}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "balanced": self.balanced}


def iter_rows(
    files: Sequence[Path], start: int, stop: int, columns: list[str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row index, row)`` over the files in order, rows ``start`` to ``stop`` (earlier groups unread)."""
    offset = 0
    for path in files:
        if offset >= stop:
            return
        pf = pq.ParquetFile(path)
        present = [c for c in columns if c in pf.schema_arrow.names]
        for g in range(pf.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            if offset + rows <= start:
                offset += rows
                continue
            for row in pf.read_row_group(g, columns=present).to_pylist():
                if start <= offset < stop:
                    yield offset, row
                offset += 1
                if offset >= stop:
                    return


def check_columns(files: Sequence[Path], needed: Sequence[str]) -> None:
    """One line naming the parquet when a column the rule reads is missing."""
    for path in files:
        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as exc:  # pyarrow raises several types for a file that is not parquet
            with open(path, "rb") as handle:
                lfs = handle.read(64).startswith(b"version https://git-lfs")
            hint = (
                "; it is a git-lfs pointer: run `git lfs pull` or download with `hf download`" if lfs else ""
            )
            raise ConvertError(f"'{path}' is not a readable parquet file: {exc}{hint}") from None
        missing = [c for c in needed if c not in names]
        if missing:
            raise ConvertError(
                f"parquet '{path}' lacks column(s) {', '.join(missing)}; expected {', '.join(needed)} "
                f"(it has {', '.join(names)})"
            )


def probe_images(files: Sequence[Path], stop: int, images: ImageLoader, sample: int = 64) -> None:
    """Stop before converting when the first image paths of a subset all miss under the root."""
    paths: list[str] = []
    for _, row in iter_rows(files, 0, min(stop, sample), list(COLUMNS)):
        for column in ("qry_image_path", "pos_image_path"):
            if isinstance(row.get(column), str) and row[column]:
                paths.append(row[column])
    if not paths:
        return
    if images.root is None:
        raise ConvertError(
            f"'{files[0]}' names images (e.g. '{paths[0]}') but no --image_root was given; pass the folder "
            "the paths are relative to (for the official sets, the one that holds images/)"
        )
    inside: list[Path] = []
    for rel in paths:
        try:
            inside.append(images.resolve(rel))
        except RecordError:
            continue  # outside the root: counted row by row
    if inside and not any(p.is_file() for p in inside):
        rel = paths[0]
        hint = ""
        first = PurePosixPath(rel).parts[0] if PurePosixPath(rel).parts else ""
        if first and images.root.name == first:
            hint = f"; the paths already start with '{first}/': use --image_root {images.root.parent}"
        raise ConvertError(
            f"'{files[0]}': none of its first {len(inside)} images exists under image root '{images.root}' "
            f"(e.g. '{images.root / rel}'); expected the folder the paths are relative to, for the official "
            f"sets the one that holds images/<Subset>/{hint}"
        )


def convert_source(
    files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    image_root: str | None,
    source: str,
    task: str = "auto",
    samples_per_shard: int = 1000,
    rule: SetRule = RULES["mmeb-hardneg"],
    split: str = "train",
    rows_per_subset: int | None = None,
    negatives: int | None = None,
    image_token: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ConvertReport:
    """Convert one subset (one or more parquet files, rows in order) into ``out_dir``; resumable."""
    paths = [Path(f) for f in files]
    for f in paths:
        if not f.is_file():
            raise ConvertError(f"input parquet '{f}' does not exist")
    if image_root is not None and not Path(image_root).is_dir():
        raise ConvertError(f"image root '{image_root}' is not a folder")
    k = rule.negatives if negatives is None else negatives
    if rule.negative_rule == "single":
        k = min(k, 1)  # VLM2Vec uses MMEB-train's one negative once, never copies it
    check_columns(paths, BASE_COLUMNS + (NEG_COLUMNS if k > 0 and rule.negative_rule == "mme5" else ()))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in paths)
    stop = rows_taken(total, rows_per_subset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "dataset": rule.name,
        "split": split,
        "files": [f.name for f in paths],
        "rows_in_split": total,
        "rows_per_subset": rows_per_subset,
        "negatives": k,
        "image_token": image_token,
        "seed": seed,
    }
    state_path = out / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state and state.get("settings") != settings:
        raise ConvertError(
            f"'{out}' holds a conversion made with other settings ({state.get('settings')}, now {settings}); "
            "remove it or choose another output folder"
        )
    report = ConvertReport(
        source,
        str(out),
        dataset=rule.name,
        split=split,
        files=[str(f) for f in paths],
        rows_in_split=total,
        rows_per_subset=rows_per_subset,
        rows_in=stop,
        negatives=k,
    )
    if state.get("complete"):
        report.samples_out, report.shards = state["samples"], state["next_shard"]
        report.skipped, report.first_skip = dict(state["skipped"]), dict(state.get("first_skip", {}))
        report.complete, report.resumed_from_row = True, stop
        log.info("convert: %s already complete, skipped", source)
        _check_readable(report)
        return report
    images = ImageLoader(image_root)
    probe_images(paths, stop, images)
    done_rows = int(state.get("rows_done", 0))
    skipped: Counter[str] = Counter(state.get("skipped", {}))
    first_skip: dict[str, str] = dict(state.get("first_skip", {}))
    samples = int(state.get("samples", 0))
    report.resumed_from_row = done_rows
    if done_rows:
        log.info("convert: %s resumes at row %d of %d", source, done_rows, stop)
    resolved_task = TASK_OF_SOURCE.get(source.lower(), "retrieval") if task == "auto" else task
    rules = RowRules(rule.negative_rule, k, image_token, seed)
    writer = ShardSetWriter(
        out, prefix=source, samples_per_shard=samples_per_shard, start_shard=int(state.get("next_shard", 0))
    )
    pending_skips: list[tuple[int, str]] = []  # skips of rows after the last flushed sample
    pending_rows: list[int] = []

    def save_state(rows_done: int, complete: bool) -> None:
        data = {
            "rows_done": rows_done,
            "next_shard": writer.shard_index,
            "samples": samples,
            "skipped": dict(skipped),
            "first_skip": first_skip,
            "complete": complete,
            "settings": settings,
        }
        write_text(state_path, json.dumps(data, indent=1))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=stop, initial=done_rows, desc=f"convert {source}", unit="row")
    for index, row in iter_rows(paths, done_rows, stop, [*COLUMNS, "modality"]):
        try:
            ex = row_to_example(row, index, source, resolved_task, images, rules)
        except RecordError as exc:
            pending_skips.append((index, exc.reason))
            first_skip.setdefault(exc.reason, f"row {index}: {exc}")
            log.debug("convert: %s row %d skipped: %s", source, index, exc)
        else:
            writer.write(ex)
            pending_rows.append(index)
            if len(pending_rows) == samples_per_shard:  # the writer just flushed them as one shard
                last = pending_rows[-1]
                samples += len(pending_rows)
                skipped.update(r for i, r in pending_skips if i < last)
                pending_skips = [(i, r) for i, r in pending_skips if i > last]
                pending_rows = []
                save_state(last + 1, complete=False)
        if bar is not None:
            bar.update(1)
    writer.close()
    samples += len(pending_rows)
    skipped.update(r for _, r in pending_skips)
    save_state(stop, complete=True)
    if bar is not None:
        bar.close()
    report.samples_out, report.shards, report.skipped = samples, writer.shard_index, dict(skipped)
    report.first_skip, report.complete = first_skip, True
    if not report.balanced:  # would be a bug in this function; never drop rows silently
        raise RuntimeError(f"convert {source}: rows do not add up: {report.summary()}")
    write_text(out / REPORT_FILE, json.dumps(report.to_json(), indent=1))
    _check_readable(report)
    return report


def _check_readable(report: ConvertReport) -> None:
    if report.rows_in and not report.samples_out:
        reason, message = next(iter(report.first_skip.items()), ("?", ""))
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(report.skipped.items()))
        raise ConvertError(
            f"nothing readable in '{report.files[0]}': all {report.rows_in} rows skipped ({counts}); "
            f"first {reason}: {message}"
        )


# ---- the whole run --------------------------------------------------------------------------------


def convert(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    image_root: str | None = None,
    dataset: DatasetName = "auto",
    split: str = "auto",
    rows_per_subset: int | Literal["auto"] | None = "auto",
    negatives: int | None = None,
    subsets: Sequence[str] | None = None,
    task: str = "auto",
    samples_per_shard: int = 1000,
    image_token: str | None = None,
    seed: int = 0,
    progress: bool = True,
    num_frames: int | None = V2_NUM_FRAMES,
) -> list[ConvertReport]:
    """Convert training sets (folders as downloaded, subset folders or parquet files) into one shard
    set per subset under ``out_dir``; writes ``<out_dir>/convert_report.json``. See the module doc.

    VLM2Vec-V2 sets (LLaVA-Hound JSONL with frame folders under ``image_root``, ViDoRe and VisRAG
    parquet) are found by :func:`detect_v2_layout` and converted by :func:`convert_v2`, ``num_frames``
    frames per video."""
    plan: list[tuple[Subset, SetRule]] = []
    v2_jobs: list[tuple[str | os.PathLike, str, list[Path]]] = []
    v2_names: set[str] = set()
    for item in inputs:
        v2 = detect_v2_layout(item) if dataset == "auto" or dataset in V2_LAYOUTS else None
        if dataset in V2_LAYOUTS and v2 is None:
            raise ConvertError(
                f"input '{item}' holds no {dataset} set (VLM2Vec-V2 layouts: {', '.join(V2_LAYOUTS)})"
            )
        if v2 is not None:  # a VLM2Vec-V2 set: video (LLaVA-Hound) or visual documents (ViDoRe, VisRAG)
            layout = dataset if dataset in V2_LAYOUTS else v2[0]
            v2_jobs.append((item, layout, v2[1]))
            stem = Path(item).stem if Path(item).is_file() else Path(item).name
            v2_names |= {stem, f"{stem}-video"} if layout == "llavahound-caption" else {stem}
            continue
        found = find_subsets(item)
        name = dataset if dataset != "auto" else detect_dataset(Path(item), found)
        if name not in RULES:
            raise ConvertError(f"unknown dataset '{name}'; expected one of {', '.join(RULES)}")
        plan += [(sub, RULES[name]) for sub in found.values()]
    if subsets is not None:
        names = {sub.name for sub, _ in plan} | v2_names
        unknown = [s for s in subsets if s not in names]
        if unknown:
            raise ConvertError(
                f"subset(s) {', '.join(unknown)} not found; the inputs hold {', '.join(sorted(names))}"
            )
        plan = [(sub, rule) for sub, rule in plan if sub.name in subsets]
    seen: dict[str, Path] = {}
    for sub, _ in plan:
        if sub.name in seen:
            raise ConvertError(
                f"subset '{sub.name}' is in both '{seen[sub.name]}' and '{sub.folder}'; convert them into "
                "different output folders"
            )
        seen[sub.name] = sub.folder
    if image_root is not None and not Path(image_root).is_dir():
        raise ConvertError(f"image root '{image_root}' is not a folder")
    jobs = []
    for sub, rule in plan:  # every subset is checked before any is converted
        chosen = choose_split(sub, split, rule)
        cap = rule.rows_per_subset if rows_per_subset == "auto" else rows_per_subset
        files = sub.splits[chosen]
        check_columns(files, BASE_COLUMNS)
        probe_images(
            files,
            rows_taken(sum(pq.ParquetFile(f).metadata.num_rows for f in files), cap),
            ImageLoader(image_root),
        )
        jobs.append((sub, rule, chosen, cap))
    reports = []
    for sub, rule, chosen, cap in jobs:
        reports.append(
            convert_source(
                sub.splits[chosen],
                Path(out_dir) / sub.name,
                image_root,
                sub.name,
                task,
                samples_per_shard,
                rule,
                chosen,
                cap,
                negatives,
                image_token,
                seed,
                progress,
            )
        )
    for item, layout, files in v2_jobs:
        reports += convert_v2(
            item,
            out_dir,
            layout,
            files,
            frame_root=image_root,
            num_frames=num_frames,
            rows_per_subset=None if rows_per_subset == "auto" else rows_per_subset,
            samples_per_shard=samples_per_shard,
            subsets=subsets,
        )
    write_run_report(out_dir, reports)
    return reports


def run_totals(reports: Sequence[ConvertReport]) -> dict[str, Any]:
    """Rows in, samples out and skips by reason over all subsets of a run."""
    skipped: Counter[str] = Counter()
    for r in reports:
        skipped.update(r.skipped)
    rows, samples = sum(r.rows_in for r in reports), sum(r.samples_out for r in reports)
    return {
        "rows_in": rows,
        "samples_out": samples,
        "skipped": dict(sorted(skipped.items())),
        "balanced": rows == samples + sum(skipped.values()),
    }


def write_run_report(out_dir: str | os.PathLike, reports: Sequence[ConvertReport]) -> Path:
    """``<out_dir>/convert_report.json``: the totals and every subset's report."""
    path = Path(out_dir) / REPORT_FILE
    payload = {**run_totals(reports), "sources": [r.to_json() for r in reports]}
    write_text(path, json.dumps(payload, indent=1))
    return path


# ---- VLM2Vec-V2 training sets (video, visual documents) -------------------------------------------
#
# Facts from TIGER-AI-Lab/VLM2Vec at 6e1e1d4 (``src/data/dataset/``; the training mixture in
# ``experiments/public/train/train_video.yaml`` and ``train_alltasks.yaml:162-170``):
#
# * LLaVA-Hound (``llavahound_dataset_caption.py``, ``llavahound_dataset_qa.py``): a JSONL file
#   (``load_dataset("json", ...)``, caption.py:83) of rows ``id``, ``video``, ``conversations``; the
#   frames of a row are the image files of ``<video_frame_basedir>/<video>/`` (caption.py:39),
#   natural-sorted, ``.jpg`` / ``.jpeg`` / ``.png`` only (``src/utils/vision_utils/vision_utils.py:21,
#   232-251``), sampled to ``num_frames`` (8 in train_video.yaml) at ``np.linspace(0, n - 1, k,
#   dtype=int)`` and padded with the last one when there are fewer (vision_utils.py:254-284); a row
#   without frames is skipped (caption.py:40, qa.py:30-32). Caption retrieval: the query is the first
#   turn with ``<video>`` replaced by the video token and the frames, the positive the second turn's
#   text (caption.py:10-13, 37-49). Video retrieval: the query is ``VRET_QRY_PROMPT`` + the caption,
#   the positive ``VRET_TGT_PROMPT`` + the video token with the frames (caption.py:15-25, 50-62). QA:
#   ``QA_QUERY_PROMPT`` + the first turn (``<video>`` replaced), the answer as positive (qa.py:10-17,
#   28-42). No negatives. The official mixture trains caption and video retrieval of the same file as
#   two sets (train_video.yaml ``video_caption_300k`` and ``video_caption_300k-video``); here they are
#   the subsets ``<name>`` and ``<name>-video``.
# * ViDoRe (``vidore_dataset.py``, ``vidore/colpali_train_set``): parquet rows ``query``, ``image``
#   (``{bytes, path}``), ``image_filename``, ``answer``, ... (line 26-27, 87); the query is
#   ``f"{image_token} {query}"`` with the page image (12-17, 29, 34-46), the positive the answer text
#   (32); the ``prompt`` column is ignored (28).
# * VisRAG (``visrag_dataset.py``, ``openbmb/VisRAG-Ret-Train-In-domain-data``): parquet rows
#   ``query``, ``image``, ``source`` (48); the query is ``f"{prompt} {query} "`` with the prompt of its
#   source (10-15, 17-28, 50), the positive ``f"{target prompt} {image_token}"`` with the page image
#   (29-40, 52, 67). No negatives.

V2Layout = Literal["llavahound-caption", "llavahound-qa", "vidore", "visrag"]
V2_LAYOUTS = ("llavahound-caption", "llavahound-qa", "vidore", "visrag")
#: The frame files VLM2Vec reads from a frame folder (``vision_utils.py:21``).
V2_FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
VRET_QRY_PROMPT = "Find a video that contains the following visual content: "
VRET_TGT_PROMPT = "Understand the content of the provided video: "
QA_QUERY_PROMPT = "Answer a question based on the content of a video. "
#: VisRAG's per-source query prompts (``visrag_dataset.py:17-28``).
VISRAG_QUERY_PROMPTS = {
    "NeurIPS Papers": "This query is about a research paper from NeurIPS, a leading AI/ML conference. The document contains technical discussions, methodologies, and findings. Identify relevant papers and sections that address the query: ",  # noqa: E501
    "Textbooks": "This query is related to a college-level textbook, which provides structured explanations, definitions, and examples. Find the most relevant concepts or explanations that address the query: ",  # noqa: E501
    "ICML Papers": "This query is about a research paper from ICML, a leading AI/ML conference. The document contains theoretical insights, experiments, and applications. Identify relevant papers and sections that best answer the query: ",  # noqa: E501
    "Manuallib": "This query pertains to a product manual, which contains detailed technical specifications, usage instructions, and troubleshooting steps. Find the most relevant section that answers the query: ",  # noqa: E501
    "ArxivQA": "This query is related to retrieving a relevant figure from an ArXiv research paper. The retrieved figure should contain scientific plots, mathematical visualizations, or experimental results that best address the query: ",  # noqa: E501
    "ChartQA": "This query is related to retrieving a relevant chart that visually represents numerical or categorical data. The retrieved chart should contain bar graphs, line charts, or other visual elements necessary to analyze trends, compare values, or extract insights related to the query: ",  # noqa: E501
    "MP-DocVQA": "This query is related to retrieving a relevant page from a multi-page document, such as reports, invoices, or research papers. The retrieved document should contain text, tables, or structured information necessary to answer the query: ",  # noqa: E501
    "InfoVQA": "This query is related to retrieving an infographic that visually presents statistical or factual information using charts, icons, and structured layouts. The retrieved image should contain the necessary visual elements to provide the best context for answering the query: ",  # noqa: E501
    "PlotQA": "This query relates to retrieving a relevant plot or chart that visually represents numerical data. The retrieved figure should contain the necessary information to analyze trends, compare values, or extract key insights related to the query: ",  # noqa: E501
    "SlideVQA": "This query is related to retrieving a relevant presentation slide that visually presents structured information. The retrieved slide should contain the necessary text, charts, or graphics to provide the best answer to the query: ",  # noqa: E501
}
#: VisRAG's per-source target prompts (``visrag_dataset.py:29-40``).
VISRAG_TARGET_PROMPTS = {
    "Textbooks": "A textbook page with structured educational content and explanations.",
    "ICML Papers": "A research paper from ICML, covering machine learning topics.",
    "NeurIPS Papers": "A research paper from NeurIPS on AI and ML topics.",
    "Manuallib": "A product manual page with technical specifications and instructions.",
    "InfoVQA": "An infographic with structured data, charts, and annotations.",
    "PlotQA": "A numerical data visualization, such as bar charts or line graphs.",
    "SlideVQA": "A presentation slide with text, bullet points, and diagrams.",
    "ArxivQA": "A figure from a research paper, including plots or experimental results.",
    "MP-DocVQA": "A page from a multi-page document with text or tables.",
    "ChartQA": "A statistical chart comparing values or analyzing trends.",
}
_VIDORE_COLUMNS = ("query", "image", "image_filename", "answer")
_VISRAG_COLUMNS = ("query", "image", "source")


def _prompted(prompt: str, query: str, image_token: str) -> str:
    """VLM2Vec's ``process_query`` of ``visrag_dataset.py:10-15``: ``f"{prompt} {query} {token}"``."""
    return f"{prompt} {query} {image_token}" if prompt else f"{query} {image_token}"


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def sample_frame_names(names: Sequence[str], num_frames: int | None) -> list[str]:
    """The frames VLM2Vec takes from a folder's file names: natural order, its extensions only, then
    ``num_frames`` at ``linspace(0, n - 1, k)`` (integer); all of them when there are fewer."""
    frames = sorted(
        (n for n in names if os.path.splitext(n)[1].lower() in V2_FRAME_EXTENSIONS), key=_natural_key
    )
    if num_frames is None or not frames:
        return frames
    if num_frames == 0:
        return []
    if num_frames > len(frames):  # fewer frames than asked for: all of them (vision_utils.py:282)
        return frames
    step = (len(frames) - 1) / (num_frames - 1) if num_frames > 1 else 0.0
    picks = [int(i * step) for i in range(num_frames)]
    if num_frames > 1:
        picks[-1] = len(frames) - 1  # linspace ends exactly at its stop
    return [frames[i] for i in picks]


def detect_v2_layout(item: str | os.PathLike) -> tuple[str, list[Path]] | None:
    """``(layout, files)`` when ``item`` (a file or a folder) holds a VLM2Vec-V2 training set, else None.

    A ``.jsonl`` file (or a folder of them) is LLaVA-Hound (caption rows; ``llavahound-qa`` must be
    asked for, the rows look the same); parquet files whose columns hold ViDoRe's or VisRAG's (and none
    of the MMEB sets' ``qry``) are those sets.
    """
    p = Path(item)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(
            f
            for f in [*p.rglob("*.jsonl"), *p.rglob("*.parquet")]
            if not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
    else:
        return None
    jsonl = [f for f in files if f.suffix == ".jsonl"]
    if jsonl:
        return "llavahound-caption", jsonl
    parquets = [f for f in files if f.suffix == ".parquet"]
    if not parquets:
        return None
    try:
        names = set(pq.ParquetFile(parquets[0]).schema_arrow.names)
    except Exception:  # not a parquet: the MMEB path reports it
        return None
    if "qry" in names:
        return None
    if set(_VIDORE_COLUMNS) <= names:
        return "vidore", parquets
    if set(_VISRAG_COLUMNS) <= names:
        return "visrag", parquets
    return None


def _image_cell(value: Any, column: str) -> tuple[bytes, str]:
    """A ``datasets`` Image cell (``{bytes, path}``) -> ``(bytes, ext)``, checked to be an allowed image."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise RecordError("missing_image", f"column '{column}' holds no image bytes")
    try:
        with Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as img:
            fmt = (img.format or "").lower()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise RecordError(
            "bad_image", f"column '{column}' is not a JPEG/PNG/WebP/GIF/BMP/TIFF: {exc}"
        ) from None
    return bytes(data), {"jpeg": "jpg"}.get(fmt, fmt)


def _text_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if not isinstance(value, str):
        raise RecordError("bad_type", f"column '{column}' holds {type(value).__name__}, expected a string")
    return value


class _FrameReader:
    """The sampled frames of ``<root>/<video>/`` as encoded ``(bytes, ext)`` pairs (root-confined)."""

    def __init__(self, root: str | os.PathLike | None, num_frames: int | None):
        self.images = ImageLoader(root, cache_size=64)
        self.num_frames = num_frames

    def frames(self, video: Any) -> list[tuple[bytes, str]]:
        if not isinstance(video, str) or not video:
            raise RecordError(
                "bad_type", f"column 'video' holds {type(video).__name__}, expected a folder name"
            )
        folder = self.images.resolve(video)
        try:
            names = os.listdir(folder) if folder.is_dir() else []
        except OSError:
            names = []
        chosen = sample_frame_names(names, self.num_frames)
        if not chosen:
            raise RecordError("missing_frame", f"frame folder '{folder}' holds no .jpg/.jpeg/.png frame")
        out = []
        for name in chosen:
            try:
                out.append(self.images.load(f"{video}/{name}"))
            except RecordError as exc:
                if exc.reason == "image_outside_root":
                    raise
                raise RecordError("video_decode", f"video '{video}' frame '{name}': {exc}") from None
        return out


def _v2_rows(layout: str, files: Sequence[Path]) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """``(row index, row or the RecordError of an unreadable JSONL line)`` over the files in order."""
    index = 0
    for path in files:
        if layout.startswith("llavahound"):
            with open(path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        yield (
                            index,
                            row if isinstance(row, dict) else RecordError("bad_json", "row is no object"),
                        )
                    except ValueError as exc:
                        yield (
                            index,
                            RecordError("bad_json", f"line {index + 1} of '{path}': {str(exc)[:120]}"),
                        )
                    index += 1
        else:
            pf = pq.ParquetFile(path)
            wanted = _VIDORE_COLUMNS if layout == "vidore" else _VISRAG_COLUMNS
            for batch in pf.iter_batches(batch_size=256, columns=list(wanted)):
                for row in batch.to_pylist():
                    yield index, row
                    index += 1


def v2_examples(
    layout: str, mode: str, index: int, row: dict[str, Any], source: str, frames: _FrameReader
) -> Example:
    """One VLM2Vec-V2 row -> Example, as the official loader builds its pair (module notes above)."""
    token = PUBLIC_IMAGE_TOKEN
    if layout.startswith("llavahound"):
        turns = row.get("conversations")
        if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
            raise RecordError("bad_type", "column 'conversations' must hold at least two turns")
        first, second = _text_cell(turns[0], "value"), _text_cell(turns[1], "value")
        video = frames.frames(row.get("video"))
        if mode == "video":
            query, positive = Side(VRET_QRY_PROMPT + second), Side(VRET_TGT_PROMPT + token, frames=video)
            modality = "T2V"
        else:
            prompt = QA_QUERY_PROMPT if layout == "llavahound-qa" else ""
            query, positive = Side(prompt + first.replace("<video>", token), frames=video), Side(second)
            modality = "VT2T"
        task = "vqa" if layout == "llavahound-qa" else "retrieval"
    elif layout == "vidore":
        image, ext = _image_cell(row.get("image"), "image")
        query = Side(f"{token} {_text_cell(row, 'query')}", image_bytes=image, image_ext=ext)
        positive, modality, task = Side(_text_cell(row, "answer")), "IT2T", "vqa"
    else:
        image, ext = _image_cell(row.get("image"), "image")
        found = row.get("source")
        origin = found if isinstance(found, str) else ""
        query = Side(_prompted(VISRAG_QUERY_PROMPTS.get(origin, ""), _text_cell(row, "query"), ""))
        target = _prompted(VISRAG_TARGET_PROMPTS.get(origin, ""), "", token)
        positive, modality, task = Side(target, image_bytes=image, image_ext=ext), "T2I", "retrieval"
    return Example(
        id=f"{source}-{index}",
        query=query,
        positive=positive,
        task=task,
        modality=modality if modality in MODALITIES else modality_of(query, positive),
        source=source,
        meta={"row": str(index), "layout": layout},
    )


def convert_v2(
    item: str | os.PathLike,
    out_dir: str | os.PathLike,
    layout: str,
    files: Sequence[Path],
    frame_root: str | None = None,
    num_frames: int | None = V2_NUM_FRAMES,
    rows_per_subset: int | None = None,
    samples_per_shard: int = 1000,
    subsets: Sequence[str] | None = None,
) -> list[ConvertReport]:
    """Convert one VLM2Vec-V2 training set into shard sets under ``out_dir`` (one per subset; LLaVA-Hound
    caption files give ``<name>`` and ``<name>-video``). Rows in = samples out + skipped, by reason."""
    if layout not in V2_LAYOUTS:
        raise ConvertError(f"unknown VLM2Vec-V2 layout '{layout}'; expected one of {', '.join(V2_LAYOUTS)}")
    if layout.startswith("llavahound") and (frame_root is None or not Path(frame_root).is_dir()):
        raise ConvertError(
            f"'{item}' is a LLaVA-Hound video set: pass --image_root, the folder of its frame folders "
            "(VLM2Vec's video_frame_basedir)"
        )
    name = Path(item).stem if Path(item).is_file() else Path(item).name
    modes = ["caption", "video"] if layout == "llavahound-caption" else ["caption"]
    reports = []
    for mode in modes:
        source = f"{name}-video" if mode == "video" else name
        if subsets is not None and source not in subsets:
            continue
        out = Path(out_dir) / source
        reader = _FrameReader(frame_root, num_frames)
        skipped: Counter[str] = Counter()
        first_skip: dict[str, str] = {}
        rows = samples = 0
        with ShardSetWriter(out, prefix=source, samples_per_shard=samples_per_shard) as writer:
            for index, row in _v2_rows(layout, files):
                if rows_per_subset is not None and index >= rows_per_subset:
                    break
                rows += 1
                try:
                    if isinstance(row, RecordError):
                        raise row
                    writer.write(v2_examples(layout, mode, index, row, source, reader))
                    samples += 1
                except RecordError as exc:
                    skipped[exc.reason] += 1
                    first_skip.setdefault(exc.reason, f"row {index}: {exc}")
        report = ConvertReport(
            source,
            str(out),
            dataset=f"vlm2vec-v2 {layout}" + (" (video retrieval)" if mode == "video" else ""),
            split="train",
            files=[str(f) for f in files],
            rows_in_split=rows,
            rows_per_subset=rows_per_subset,
            rows_in=rows,
            samples_out=samples,
            shards=writer.shard_index,
            skipped=dict(skipped),
            first_skip=first_skip,
            complete=True,
        )
        write_text(out / REPORT_FILE, json.dumps(report.to_json(), indent=1))
        _check_readable(report)
        reports.append(report)
    return reports
