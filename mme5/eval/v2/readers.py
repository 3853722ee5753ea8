"""Readers of the MMEB-V2 video and visual-document tasks into the evaluation's shared item table.

Layout under an MMEB-V2 root (the folders are those of VLM2Vec's ``experiments/public/eval/*.yaml``)::

    video-tasks/frames/<group>/<Folder>/<video>/frame_0001.jpg ...   frame folders (video.yaml frame_root)
    video-tasks/<Task>.jsonl | .parquet                                rows (below)
    video-tasks/<Task>.corpus.jsonl | .parquet                         optional extra candidates
    video-tasks/<repo name>/[<subset>/]<split>[-*].parquet | .jsonl    or: the official hub dataset
    visdoc-tasks/<Folder>/<corpus-id>.png                              pages (visdoc.yaml image_root;
                                                                       VisRAG: a shortened name)
    visdoc-tasks/<Folder>/queries|qrels|corpus.jsonl | .parquet        BEIR tables

A video row has the fields of the official query dataset (``EVAL_QRY_FEATURES``,
``src/data/eval_dataset/base_eval_dataset.py`` lines 7-24) with frame folders in place of frame lists:
``query_text`` (str), ``query_video`` (frame folder relative to the task's frame root, "" = none; an
image file there is one image, as MomentSeeker's image queries, ``momentseeker_dataset.py`` line 48),
``cand_text`` / ``cand_video`` / ``cand_names`` (lists of equal length), ``label_name`` (a name or a
list of names). The official loaders write their instructions into the texts (e.g.
``msrvtt_dataset.py`` lines 10-11, 24, 32); these rows carry the final texts. A corpus row has
``cand_name``, ``cand_text``, ``cand_video`` (e.g. the class names of a video classification task,
``video_classification_datasets.py`` lines 61-64).

The official data. When a task has no such rows, its hub dataset is read where VLM2Vec's download
script puts it (``adhoc/data/download_datasets.py`` lines 209-227: ``video-tasks/<repo name>``, e.g.
``video-tasks/MSR-VTT/test_1k/test-00000-of-00001.parquet``, ``video-tasks/Kinetics-700/test.parquet``,
``video-tasks/MVBench/<subset>/train-*.parquet``; the folder may also carry video.yaml's
``dataset_name`` or the mme5 task name; details in :mod:`mme5.eval.v2.hub_video`), and its rows are
converted on the fly exactly as the official loader builds them
(:func:`mme5.eval.v2.convert.convert_hub_rows`: ``load_hf_dataset`` + ``data_prepare`` of each
``src/data/eval_dataset/*.py``; the video classification tasks' corpus is their class list). Both
sources go through the same reader (:func:`read_video_rows`). A hub row without a column the official
loader reads is an :class:`EvalDataError` naming the task, the file and row, and the column.

The candidate pool of a task is built as ``generate_cand_dataset`` builds it (base_eval_dataset.py lines
121-152): the rows' candidates in row order, then the corpus, the first row of each ``cand_name``
kept. ``global`` tasks rank every query against that whole pool (``eval.py`` lines 302-314, ordered as
the pool), ``local`` ones against the row's own ``cand_names`` (lines 325-334).

Visual documents follow ``vidore_dataset.py`` / ``visrag_dataset.py``: a query's candidates are its
qrels (lines 28-40), kept when ``score > 0`` with the highest score of a repeated (query, page) pair
(``src/utils/dataset_utils.py`` lines 36-41), graded relevance = that score; every page of the corpus is
a candidate (lines 54-72, 102-105); the query text is ``"Find a document image that matches the given
query: " + query`` and a page's text ``"<|image_1|> Understand the content of the provided document
image."`` (lines 9-10, 23, 32; ``src/model/processor.py`` lines 663-671 join instruction, text and
image token with spaces). A qrel naming a page whose file is absent is an error, as there (line 31).

Bad input: a frame folder that is absent, holds no frames or has gaps in its frame numbers is listed in
``missing_frames``; a row that needs it is not scored and is counted in ``skipped`` (a corpus entry
that needs it leaves the pool). Nothing is dropped without being listed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mme5.atomic import atomic_open
from mme5.eval.datasets import EvalDataError
from mme5.eval.items import Item, ItemTable
from mme5.eval.v2.convert import convert_hub_rows
from mme5.eval.v2.frames import (
    IMAGE_EXTENSIONS,
    frame_gaps,
    load_frames,
    pixel_key,
    sample_frames,
    write_tiled,
)
from mme5.eval.v2.hub_video import folder_names, hub_folder, hub_present, read_hub_rows
from mme5.eval.v2.tasks import NUM_FRAMES, V2Task

VISDOC_QUERY_INSTRUCTION = "Find a document image that matches the given query:"  # vidore_dataset.py:9
VISDOC_PAGE_TEXT = "<|image_1|> Understand the content of the provided document image."  # :10, :32


@dataclass
class V2Set:
    """One task's rows as item ids.

    ``pool``: candidate item ids in the official order, ``names`` their ``cand_name``; ``local[r]`` the
    pool indices of row ``r``'s own candidates (None for a global task); ``rels[r]`` pool index ->
    relevance of row ``r``'s labelled candidates.
    """

    task: V2Task
    queries: list[int] = field(default_factory=list)
    pool: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    local: list[list[int]] | None = None
    rels: list[dict[int, float]] = field(default_factory=list)
    total_rows: int = 0
    skipped: int = 0
    missing_frames: list[str] = field(default_factory=list)
    tiles: dict[bytes, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.task.name


def read_rows(path: Path) -> list[dict]:
    """Rows of a ``.jsonl`` or ``.parquet`` table."""
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise EvalDataError(f"{path} line {n}: not valid JSON ({exc})") from None
        return rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvalDataError(f"{path}: cannot be read ({exc})") from None


def table_file(folder: Path, stem: str) -> Path | None:
    """``<folder>/<stem>.jsonl`` or ``.parquet``, whichever exists."""
    for ext in (".jsonl", ".parquet"):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def task_present(root: str | os.PathLike, task: V2Task) -> bool:
    """Whether the task's rows or hub snapshot (video) or BEIR tables (visdoc) are in ``root``."""
    root = Path(root)
    if task.kind == "video":
        return table_file(root / "video-tasks", task.name) is not None or hub_present(root, task.name)
    if task.kind == "visdoc":
        folder = root / task.data_dir
        return all(table_file(folder, s) is not None for s in ("queries", "qrels", "corpus"))
    return False


class _Videos:
    """Frame folders -> tiled images, with the folders that cannot be used listed once."""

    def __init__(self, frame_root: Path, work_dir: Path, num_frames: int, max_pixels: int, task: str):
        self.frame_root, self.work_dir, self.num_frames, self.max_pixels = (
            frame_root,
            work_dir,
            num_frames,
            max_pixels,
        )
        self.task = task
        self.done: dict[str, str | None] = {}
        self.missing: list[str] = []
        self.tiles: dict[bytes, list[str]] = {}  # tiled image pixels -> its sampled frame files

    def image(self, folder: str) -> str | None:
        """The tiled image path of a frame folder ("" for none; None when the folder is unusable); an
        image file (a MomentSeeker image query) is its own path."""
        if not folder:
            return ""
        if folder in self.done:
            return self.done[folder]
        path = self.frame_root / folder
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.is_dir():
            if not path.is_file():
                self.missing.append(f"{self.task}: {path} (absent)")
            self.done[folder] = str(path) if path.is_file() else None
            return self.done[folder]
        frames = load_frames(path)
        gaps = frame_gaps(frames)
        out: str | None
        if not frames:
            reason = "absent" if not path.is_dir() else "no frames"
            self.missing.append(f"{self.task}: {path} ({reason})")
            out = None
        elif gaps:
            more = f" and {len(gaps) - 1} more" if len(gaps) > 1 else ""
            self.missing.append(f"{self.task}: {path} (frame {gaps[0]}{more} missing)")
            out = None
        else:
            picked = sample_frames(frames, self.num_frames)
            out = str(write_tiled(picked, self.work_dir / self.task, self.max_pixels))
            with Image.open(out) as tile:
                self.tiles[pixel_key(tile)] = [str(p) for p in picked]
        self.done[folder] = out
        return out


def _names(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise EvalDataError(f"{where}: label_name must be a name or a non-empty list of names")


@dataclass
class VideoRows:
    """A video task's rows and corpus rows in the reader's layout, with where they came from.

    ``source``: what the rows were read from (named when the task has no usable row); ``where(r)``:
    row ``r``'s place in it, for error messages.
    """

    rows: list[dict]
    corpus: list[dict]
    source: str
    where: Callable[[int], str]
    corpus_source: str = ""


def video_task_rows(root: str | os.PathLike, task: V2Task) -> VideoRows:
    """A video task's rows: mme5's ``video-tasks/<Task>.jsonl | .parquet`` (and ``<Task>.corpus``) when
    present, else converted from the task's hub snapshot (:mod:`mme5.eval.v2.hub_video`,
    :func:`mme5.eval.v2.convert.convert_hub_rows`)."""
    root = Path(root)
    folder = root / "video-tasks"
    path = table_file(folder, task.name)
    if path is not None:
        corpus = table_file(folder, f"{task.name}.corpus")
        name = path.name
        return VideoRows(
            read_rows(path),
            read_rows(corpus) if corpus else [],
            str(path),
            lambda r: f"{name} row {r}",
            corpus.name if corpus else "",
        )
    if hub_present(root, task.name):
        hub = read_hub_rows(root, task.name)
        converted = convert_hub_rows(task.name, hub.rows, root / task.data_dir, hub.where)
        source = str(hub_folder(root, task.name))
        return VideoRows(converted.rows, converted.corpus, source, hub.where, "official class names")
    raise EvalDataError(
        f"{task.name}: no {folder / task.name}.jsonl or .parquet, and no hub snapshot in "
        f"{folder}/({' | '.join(folder_names(task.name))})"
    )


def read_video_task(
    root: str | os.PathLike,
    task: V2Task,
    items: ItemTable,
    work_dir: str | os.PathLike,
    max_rows: int | None = None,
    num_frames: int = NUM_FRAMES,
    max_pixels: int | None = None,
) -> V2Set:
    """Read a video task's rows (:func:`video_task_rows`; frames sampled and tiled into ``work_dir``)
    into ``items``."""
    return read_video_rows(
        video_task_rows(root, task),
        Path(root) / task.data_dir,
        task,
        items,
        work_dir,
        max_rows,
        num_frames,
        max_pixels,
    )


def read_video_rows(
    data: VideoRows,
    frame_root: str | os.PathLike,
    task: V2Task,
    items: ItemTable,
    work_dir: str | os.PathLike,
    max_rows: int | None = None,
    num_frames: int = NUM_FRAMES,
    max_pixels: int | None = None,
) -> V2Set:
    """Read a video task's rows (frame folders relative to ``frame_root``) into ``items``."""
    from mme5.eval.items import default_max_pixels

    videos = _Videos(
        Path(frame_root), Path(work_dir), num_frames, max_pixels or default_max_pixels(), task.name
    )
    out = V2Set(task, local=[] if task.eval_type == "local" else None)
    index: dict[str, int] = {}
    rows_cands: list[list[int]] = []
    rows_labels: list[list[str]] = []
    for r, row in enumerate(data.rows):
        out.total_rows += 1
        if max_rows is not None and len(out.queries) >= max_rows:
            continue
        where = f"{task.name} ({data.where(r)})"
        if not isinstance(row, dict):
            raise EvalDataError(f"{where}: not a table row")
        texts, vids, names = row.get("cand_text"), row.get("cand_video"), row.get("cand_names")
        if not (isinstance(texts, list) and isinstance(vids, list) and isinstance(names, list)) or not (
            len(texts) == len(vids) == len(names) > 0
        ):
            raise EvalDataError(
                f"{where}: cand_text, cand_video and cand_names must be lists of equal length"
            )
        labels = _names(row.get("label_name"), where)
        q_image = videos.image(row.get("query_video") or "")
        c_images = [videos.image(v or "") for v in vids]
        if q_image is None or any(c is None for c in c_images):
            out.skipped += 1
            continue
        query = items.add(Item.of(row.get("query_text"), q_image, where))
        cands = []
        for t, img, name in zip(texts, c_images, names, strict=True):
            if name not in index:
                index[name] = len(out.pool)
                out.pool.append(items.add(Item.of(t, img, where)))
                out.names.append(name)
            cands.append(index[name])
        absent = [n for n in labels if n not in names]
        if absent and task.eval_type == "local":
            raise EvalDataError(f"{where}: label '{absent[0]}' is not one of the row's cand_names")
        out.queries.append(query)
        rows_cands.append(cands)
        rows_labels.append(labels)
    for r, row in enumerate(data.corpus):
        where = f"{task.name} ({data.corpus_source} row {r})"
        name = row.get("cand_name") if isinstance(row, dict) else None
        if not isinstance(name, str):
            raise EvalDataError(f"{where}: cand_name must be a string")
        if name in index:
            continue
        img = videos.image(row.get("cand_video") or "")
        if img is None:
            continue  # listed in missing_frames
        index[name] = len(out.pool)
        out.pool.append(items.add(Item.of(row.get("cand_text"), img, where)))
        out.names.append(name)
    for r, labels in enumerate(rows_labels):
        rel = {}
        for n in dict.fromkeys(labels):  # metrics.py line 214: labels made unique
            if n not in index:
                raise EvalDataError(f"{task.name}: row {r}'s label '{n}' is not a candidate of the task")
            rel[index[n]] = 1.0
        out.rels.append(rel)
    if out.local is not None:
        out.local = rows_cands
    out.missing_frames = videos.missing
    out.tiles = videos.tiles
    if not out.queries:
        raise EvalDataError(f"{task.name}: no usable rows in {data.source}")
    return out


def page_file(task: V2Task, corpus_id: str) -> str:
    """The file name of a page: ``<corpus-id>.png`` (``vidore_dataset.py`` lines 29, 60); VisRAG tasks
    shorten the name to its first 50 characters + ``_`` + 8 hex digits of its MD5, keeping the
    extension the id carries (``visrag_dataset.py`` lines 30-33, 65-68)."""
    if task.name.startswith("VisRAG_"):
        base, ext = os.path.splitext(corpus_id)
        return base[:50] + "_" + hashlib.md5(corpus_id.encode("utf-8")).hexdigest()[:8] + ext
    return f"{corpus_id}.png"


def _save_page(value: object, path: Path, task: str) -> None:
    """Write a corpus row's page image (raw bytes or a Hugging Face ``{"bytes", "path"}`` image) to
    ``path``, saved in the format its extension names (``image.save(image_path)``,
    ``vidore_dataset.py`` lines 60-63, ``visrag_dataset.py`` lines 69-71)."""
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, bytes | bytearray):
        raise EvalDataError(f"{task}: corpus image for '{path.name}' is not image bytes")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            page = im.copy()
    except (OSError, Image.DecompressionBombError) as exc:
        raise EvalDataError(f"{task}: corpus image for '{path.name}' cannot be decoded ({exc})") from None
    buf = io.BytesIO()
    page.save(buf, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def read_visdoc_task(
    root: str | os.PathLike, task: V2Task, items: ItemTable, max_rows: int | None = None
) -> V2Set:
    """Read a visual-document task (BEIR queries / qrels / corpus, pages as ``<corpus-id>.png``)."""
    folder = Path(root) / task.data_dir
    tables = {}
    for stem in ("queries", "qrels", "corpus"):
        p = table_file(folder, stem)
        if p is None:
            raise EvalDataError(f"{task.name}: no {folder / stem}.jsonl or .parquet")
        tables[stem] = read_rows(p)
    qrels: dict[str, dict[str, float]] = {}
    for row in tables["qrels"]:
        qid, docid, score = str(row["query-id"]), str(row["corpus-id"]), float(row["score"])
        if score > 0:  # dataset_utils.py lines 36-41
            qrels.setdefault(qid, {})
            qrels[qid][docid] = max(qrels[qid].get(docid, 0.0), score)
    out = V2Set(task)
    index: dict[str, int] = {}
    for row in tables["corpus"]:  # pages kept in the corpus table are written out first, as there
        image = folder / page_file(task, str(row["corpus-id"]))
        if not image.is_file() and row.get("image") is not None:
            _save_page(row["image"], image, task.name)

    def page(docid: str, where: str) -> int:
        if docid not in index:
            image = folder / page_file(task, docid)
            if not image.is_file():
                raise EvalDataError(f"{where}: page image '{image}' does not exist")
            index[docid] = len(out.pool)
            out.pool.append(items.add(Item(VISDOC_PAGE_TEXT, str(image))))
            out.names.append(docid)
        return index[docid]

    query_rows = []
    for row in tables["queries"]:
        out.total_rows += 1
        if max_rows is not None and len(query_rows) >= max_rows:
            continue
        query_rows.append(row)
    for row in query_rows:
        qid = str(row["query-id"])
        where = f"{task.name} query {qid}"
        if qid not in qrels:
            raise EvalDataError(f"{where}: no qrels with a score > 0")
        rel = {page(d, where): s for d, s in qrels[qid].items()}
        out.queries.append(items.add(Item.of(f"{VISDOC_QUERY_INSTRUCTION} {row['query']}", "", where)))
        out.rels.append(rel)
    for row in tables["corpus"]:
        page(str(row["corpus-id"]), f"{task.name} corpus")
    if not out.queries:
        raise EvalDataError(f"{task.name}: no queries in {folder}")
    return out
