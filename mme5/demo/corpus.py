"""Generate the demo corpus once, on first use: training shards, an MMEB-style and an XTD-style folder.

Layout under ``root``::

    MANIFEST.json                               version + generation parameters + counts (written last)
    train/shard-000000.tar ... sizes.json       WebDataset shards in the mme5.records schema
    mmeb/<Dataset>/test-00000-of-00001.parquet  the public MMEB-eval layout, plus mmeb/datasets.json
    xtd/<lang>/test-00000-of-00001.parquet      the XTD layout (it, es, ru, zh, pl, tr, ko)
    images/<Dataset>/q_000012.jpg ...           every evaluation image (paths in the parquet are relative)
    mmeb_v2/video-tasks, mmeb_v2/visdoc-tasks   drawn MMEB-V2 video and document tasks (mme5.demo.v2)

A folder with a matching manifest is reused as is; a different manifest stops with one error line; a
folder left by a killed generation (marked by ``.generating``) is cleaned and generated again.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mme5 import __version__
from mme5.atomic import TEMP_SUFFIX, atomic_open, write_text
from mme5.demo.phrases import phrases
from mme5.demo.scene import Picture, distinct_scenes, jpeg_bytes, render
from mme5.demo.tasks import (
    BUILDERS,
    CAPTION_MAX_OBJECTS,
    EVAL_DATASETS,
    IMAGE_DOC_INSTRUCTION,
    INSTRUCTIONS,
    TRAIN_MIX,
    TaskItem,
    source_name,
    train_language,
)
from mme5.demo.v2 import build_v2_demo
from mme5.errors import Mme5Error
from mme5.records import PUBLIC_IMAGE_TOKEN, Example, ShardSetWriter, Side, compose_text

#: Bump whenever a change to the generator changes its output.
DEMO_VERSION = 3
CORPUS_NAME = "mme5-demo"
MANIFEST = "MANIFEST.json"
IN_PROGRESS = ".generating"
LOCK = ".lock"
PARTS = ("train", "mmeb", "xtd", "images", "mmeb_v2")
MARKERS = (IN_PROGRESS, LOCK, f"{MANIFEST}.tmp")  # MANIFEST.json.tmp: the temp name before mme5.atomic


def _is_manifest_temp(name: str) -> bool:
    """A temp file of a killed manifest write (mme5.atomic's ``.MANIFEST.json.<random>.partial``)."""
    return name.startswith(f".{MANIFEST}.") and name.endswith(TEMP_SUFFIX)


PARQUET_NAME = "test-00000-of-00001.parquet"
XTD_LANGS: tuple[str, ...] = ("it", "es", "ru", "zh", "pl", "tr", "ko")
XTD_DIR_NAME = "Demo-XTD"
EVAL_SCHEMA = pa.schema(
    [
        ("qry_text", pa.string()),
        ("qry_img_path", pa.string()),
        ("tgt_text", pa.list_(pa.string())),
        ("tgt_img_path", pa.list_(pa.string())),
    ]
)


class DemoCorpusError(Mme5Error, RuntimeError):
    """The demo corpus folder cannot be used as asked (another version, other parameters, foreign files)."""


@dataclass(frozen=True)
class DemoPaths:
    """Where the generated demo corpus lives."""

    root: Path
    train_dir: Path
    train_pattern: str  # brace-expanded shard spec, e.g. <root>/train/shard-{000000..000007}.tar
    mmeb_dir: Path
    xtd_dir: Path
    image_root: Path
    mmeb_v2_dir: Path
    """The drawn MMEB-V2 video and visual-document tasks (:mod:`mme5.demo.v2`)."""


@dataclass(frozen=True)
class DemoParams:
    """Everything the corpus content depends on (recorded in the manifest)."""

    seed: int
    train_samples: int
    train_shards: int
    negatives: int
    eval_rows: int
    candidates: int
    xtd_pool: int
    image_size: int


def ensure_demo_corpus(
    root: str | os.PathLike,
    seed: int = 0,
    train_samples: int = 6000,
    eval_rows: int = 60,
    image_size: int = 64,
    train_shards: int = 8,
    negatives: int = 3,
    candidates: int = 10,
    xtd_pool: int = 100,
    overwrite: bool = False,
) -> DemoPaths:
    """Generate the demo corpus under ``root`` unless it is already there, and return its paths.

    Args:
        root: folder of the corpus (created if missing; must be empty or hold a demo corpus).
        seed: generation seed; the same seed gives identical images, texts, parquet files and shards.
        train_samples: training samples (spread over ``train_shards`` shards).
        eval_rows: rows per MMEB-style evaluation dataset.
        image_size: side of every image in pixels.
        train_shards: number of training shards.
        negatives: hard negatives per training sample (each one attribute away from the positive).
        candidates: candidates per row of the retrieval, VQA and grounding evaluation sets.
        xtd_pool: images in the XTD-style pool (each language has one row per image).
        overwrite: replace a demo corpus generated with another version or other parameters
            (only a folder holding a demo manifest is ever cleared).
    """
    params = DemoParams(
        seed, train_samples, train_shards, negatives, eval_rows, candidates, xtd_pool, image_size
    )
    _check_params(params)
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise DemoCorpusError(f"demo corpus root '{root}' is a file; expected a folder (new or empty)")
    root.mkdir(parents=True, exist_ok=True)
    paths = demo_paths(root, params)
    with _locked(root):
        manifest = root / MANIFEST
        if manifest.is_file() and (not overwrite or _matches(manifest, params)):
            _check_manifest(manifest, params)
            build_v2_demo(paths.mmeb_v2_dir)  # kept when there; added to corpora drawn before it existed
            return paths
        foreign = [
            p.name
            for p in root.iterdir()
            if p.name not in (*PARTS, *MARKERS, MANIFEST) and not _is_manifest_temp(p.name)
        ]
        partial = (root / IN_PROGRESS).exists() or manifest.is_file()
        if foreign or (any((root / p).exists() for p in PARTS) and not partial):
            raise DemoCorpusError(
                f"demo corpus folder '{root}' is not empty and is not a demo corpus (found: "
                f"{', '.join(sorted(foreign) or [p for p in PARTS if (root / p).exists()])}); "
                f"choose an empty or new folder for the demo corpus"
            )
        (root / IN_PROGRESS).write_text(f"generation started {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        manifest.unlink(missing_ok=True)
        for part in PARTS:  # leftovers of a killed generation
            shutil.rmtree(root / part, ignore_errors=True)
        (root / f"{MANIFEST}.tmp").unlink(missing_ok=True)
        for leftover in root.iterdir():
            if _is_manifest_temp(leftover.name):
                leftover.unlink(missing_ok=True)
        counts = _generate(paths, params)
        _write_json(
            manifest,
            {
                "corpus": CORPUS_NAME,
                "version": DEMO_VERSION,
                "params": asdict(params),
                "counts": counts,
                "mme5": __version__,
            },
        )
        build_v2_demo(paths.mmeb_v2_dir)
        (root / IN_PROGRESS).unlink()
    return paths


def open_demo_corpus(root: str | os.PathLike, generate: bool = True) -> DemoPaths:
    """The paths of the demo corpus in ``root``, whatever parameters it was generated with.

    For readers (evaluation) that do not know the generation parameters. A folder without a corpus
    is generated with the defaults when ``generate`` is set, else it is an error; a corpus written by
    another version of the generator is an error (regenerate it).
    """
    root = Path(root).expanduser().resolve()
    manifest = root / MANIFEST
    if not manifest.is_file():
        if generate:
            return ensure_demo_corpus(root)
        raise DemoCorpusError(
            f"no demo corpus in '{root}' (no {MANIFEST}); generate it with `mme5 demo --root {root}`"
        )
    try:
        found = json.loads(manifest.read_text())
        params = DemoParams(**found["params"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DemoCorpusError(
            f"{manifest}: unreadable demo manifest ({exc}); delete the folder '{root}' to "
            f"generate the corpus again"
        ) from None
    _check_manifest(manifest, params)
    return demo_paths(root, params)


def demo_paths(root: Path, params: DemoParams) -> DemoPaths:
    """The paths of a corpus with these parameters (whether generated or not)."""
    last = params.train_shards - 1
    name = f"shard-{{000000..{last:06d}}}.tar" if last > 0 else "shard-000000.tar"
    pattern = str(root / "train" / name)
    return DemoPaths(
        root, root / "train", pattern, root / "mmeb", root / "xtd", root / "images", root / "mmeb_v2"
    )


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a generated corpus (its version, parameters and counts)."""
    return json.loads((Path(root) / MANIFEST).read_text())


def _check_params(p: DemoParams) -> None:
    problems = []
    if p.train_samples < 1 or p.train_shards < 1 or p.train_shards > p.train_samples:
        problems.append(f"train_samples ({p.train_samples}) >= train_shards ({p.train_shards}) >= 1")
    if not 1 <= p.negatives <= 3:
        problems.append(f"negatives between 1 and 3 (got {p.negatives})")
    if p.eval_rows < 1:
        problems.append(f"eval_rows >= 1 (got {p.eval_rows})")
    if not 4 <= p.candidates <= 50:
        problems.append(f"candidates between 4 and 50 (got {p.candidates})")
    if not 10 <= p.xtd_pool <= 1000:
        problems.append(f"xtd_pool between 10 and 1000 (got {p.xtd_pool})")
    if not 16 <= p.image_size <= 1024 or p.image_size % 2:
        problems.append(f"an even image_size between 16 and 1024 (got {p.image_size})")
    if problems:
        raise DemoCorpusError("demo corpus parameters: expected " + "; ".join(problems))


def _matches(path: Path, params: DemoParams) -> bool:
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (found.get("corpus"), found.get("version"), found.get("params")) == (
        CORPUS_NAME,
        DEMO_VERSION,
        asdict(params),
    )


def _check_manifest(path: Path, params: DemoParams) -> None:
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DemoCorpusError(
            f"{path}: unreadable demo manifest ({exc}); delete the folder '{path.parent}' "
            f"or pass overwrite=True to generate the corpus again"
        ) from None
    wanted = {"corpus": CORPUS_NAME, "version": DEMO_VERSION, "params": asdict(params)}
    have = {k: found.get(k) for k in wanted}
    if have != wanted:
        diffs = (
            [f"version {have['version']} (this mme5 writes {DEMO_VERSION})"]
            if have["version"] != DEMO_VERSION
            else []
        )
        if have["corpus"] != CORPUS_NAME:
            diffs.append(f"corpus '{have['corpus']}'")
        old = have["params"] if isinstance(have["params"], dict) else {}
        diffs += [f"{k}={old.get(k)!r} (asked {v!r})" for k, v in asdict(params).items() if old.get(k) != v]
        raise DemoCorpusError(
            f"demo corpus in '{path.parent}' was generated with {', '.join(diffs)}; delete "
            f"that folder or pass overwrite=True to regenerate it, or choose another root"
        )


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Serialise concurrent generators (e.g. several ranks) on one root."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no inter-process lock
        yield
        return
    with open(root / LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"{CORPUS_NAME}/{seed}/{name}")


# ---- generation -----------------------------------------------------------------------------------
def _generate(paths: DemoPaths, params: DemoParams) -> dict:
    counts = {"train": _write_train(paths.train_dir, params)}
    counts["mmeb"] = _write_mmeb(paths.mmeb_dir, paths.image_root, params)
    counts["xtd"] = _write_xtd(paths.xtd_dir, paths.image_root, params)
    return counts


class _Renderer:
    """Renders pictures to JPEG bytes, remembering the last few (a query and its crops share one)."""

    def __init__(self, size: int):
        self.size = size
        self._cache: dict[Picture, bytes] = {}

    def __call__(self, picture: Picture) -> bytes:
        data = self._cache.get(picture)
        if data is None:
            if len(self._cache) > 256:
                self._cache.clear()
            data = self._cache[picture] = jpeg_bytes(render(picture, self.size))
        return data


def _side(text: str | None, picture: Picture | None, renderer: _Renderer) -> Side:
    return Side(text=text, image_bytes=renderer(picture) if picture is not None else None, image_ext="jpg")


def _example(index: int, item: TaskItem, negatives: int, renderer: _Renderer) -> Example:
    cands = item.candidates[: 1 + negatives]
    return Example(
        id=f"demo-{index:06d}",
        query=_side(item.query_text, item.query_picture, renderer),
        positive=_side(cands[0].text, cands[0].picture, renderer),
        negatives=[_side(c.text, c.picture, renderer) for c in cands[1:]],
        instruction=item.instruction,
        doc_instruction=item.doc_instruction,
        task=item.task,
        modality=item.modality,
        lang=item.lang,
        source=source_name(item.kind),
        meta={"kind": item.kind},
    )


def _write_train(folder: Path, params: DemoParams) -> dict[str, int]:
    rng = _stream(params.seed, "train")
    kinds, weights = list(TRAIN_MIX), list(TRAIN_MIX.values())
    n, shards = params.train_samples, params.train_shards
    ends = {(s + 1) * n // shards for s in range(shards)}  # even split: shard sizes differ by at most one
    renderer = _Renderer(params.image_size)
    by_kind: dict[str, int] = {}
    with ShardSetWriter(folder, prefix="shard", samples_per_shard=math.ceil(n / shards)) as writer:
        for i in range(n):
            kind = rng.choices(kinds, weights=weights)[0]
            item = BUILDERS[kind](rng, train_language(kind, rng), 1 + params.negatives)
            writer.write(_example(i, item, params.negatives, renderer))
            by_kind[kind] = by_kind.get(kind, 0) + 1
            if i + 1 in ends:
                writer.flush()
    return dict(sorted(by_kind.items()))


class _ImageFolder:
    """Writes each distinct picture of one evaluation dataset once and returns its relative path."""

    def __init__(self, image_root: Path, dataset: str, renderer: _Renderer):
        self.folder = image_root / dataset
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dataset = dataset
        self.renderer = renderer
        self.paths: dict[Picture, str] = {}

    def path(self, picture: Picture, name: str) -> str:
        rel = self.paths.get(picture)
        if rel is None:
            (self.folder / f"{name}.jpg").write_bytes(self.renderer(picture))
            rel = self.paths[picture] = f"{self.dataset}/{name}.jpg"
        return rel


def _query_text(instruction: str, text: str | None, has_image: bool) -> str:
    body = compose_text(instruction, text) or ""
    return f"{PUBLIC_IMAGE_TOKEN}\n{body}" if has_image else body


def _write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=EVAL_SCHEMA)
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle, compression="zstd")


def _write_mmeb(folder: Path, image_root: Path, params: DemoParams) -> dict[str, int]:
    renderer = _Renderer(params.image_size)
    table: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for name, (kind, meta_task) in EVAL_DATASETS.items():
        rng = _stream(params.seed, f"eval/{name}")
        images = _ImageFolder(image_root, name, renderer)
        rows, chance = [], 0.0
        for r in range(params.eval_rows):
            item = BUILDERS[kind](rng, "en", params.candidates)
            q = item.query_picture
            tgt_text, tgt_img = [], []
            for j, c in enumerate(item.candidates):
                if c.picture is not None:
                    tgt_img.append(images.path(c.picture, f"c_{r:06d}_{j:02d}"))
                    tgt_text.append(_query_text(item.doc_instruction or "", c.text, True))
                else:
                    tgt_img.append("")
                    tgt_text.append(compose_text(item.doc_instruction, c.text) or "")
            rows.append(
                {
                    "qry_text": _query_text(item.instruction, item.query_text, q is not None),
                    "qry_img_path": images.path(q, f"q_{r:06d}") if q is not None else "",
                    "tgt_text": tgt_text,
                    "tgt_img_path": tgt_img,
                }
            )
            chance += 1.0 / len(item.candidates)
        _write_parquet(folder / name / PARQUET_NAME, rows)
        table[name] = {
            "meta_task": meta_task,
            "ood": False,
            "chance_p1": round(chance / len(rows), 6),
            "rows": len(rows),
            "candidates": max(len(r["tgt_text"]) for r in rows),
        }
        counts[name] = len(rows)
    _write_json(folder / "datasets.json", table)
    return counts


def _write_xtd(folder: Path, image_root: Path, params: DemoParams) -> dict[str, int]:
    rng = _stream(params.seed, "xtd")
    scenes = distinct_scenes(rng, params.xtd_pool, min_objects=1, max_objects=CAPTION_MAX_OBJECTS)
    pool = [Picture(s, rng.getrandbits(31)) for s in scenes]
    images = _ImageFolder(image_root, XTD_DIR_NAME, _Renderer(params.image_size))
    paths = [images.path(p, f"pool_{i:06d}") for i, p in enumerate(pool)]
    doc_text = _query_text(IMAGE_DOC_INSTRUCTION, None, True)
    counts: dict[str, int] = {}
    for lang in XTD_LANGS:
        t = phrases(lang)
        rows = [
            {
                "qry_text": _query_text(INSTRUCTIONS["t2i"], t.caption(p.scene), False),
                "qry_img_path": "",
                "tgt_text": [doc_text] * len(pool),
                "tgt_img_path": [paths[i], *paths[:i], *paths[i + 1 :]],
            }
            for i, p in enumerate(pool)
        ]
        _write_parquet(folder / lang / PARQUET_NAME, rows)
        counts[lang] = len(rows)
    _write_json(
        folder / "datasets.json",
        {
            lang: {
                "metric": "recall@10",
                "chance_recall10": round(min(10, len(pool)) / len(pool), 6),
                "pool": len(pool),
            }
            for lang in XTD_LANGS
        },
    )
    return counts
