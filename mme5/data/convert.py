"""Convert the public parquet training sets (MMEB-train hard negatives, mmE5-synthetic) into mme5 shards.

Input layout (one parquet per subset): columns ``qry``, ``qry_image_path``, ``pos_text``,
``pos_image_path``, ``neg_text``, ``neg_image_path``; image paths are relative to an image root; the
``neg_*`` columns hold a list written as a Python literal string (``"['a', 'b']"``), parsed with
:func:`ast.literal_eval` (a literal parser, never ``eval``); a plain string is one negative.

Choices (documented here and in ``--help``):

* Texts are kept as they are, including the public ``<|image_1|>`` token and the instruction at the
  head of ``qry`` (``Example.instruction`` stays None): the backbone adapters rewrite the token to the
  backbone's own at encode time, so one converted set serves every backbone. ``image_token`` rewrites
  it at conversion instead.
* Negatives: at most ``negatives`` per row (mmE5 uses 3); a shorter, non-empty list is padded by
  repeating its last item; an empty list gives a sample without hard negatives.
* Images are copied byte for byte (no re-encoding); a row whose image is missing or not an image is
  skipped and counted (``missing_image_file``, ``bad_image``), as is a row that cannot be parsed.
* Each input's rows go to ``<out>/<source>/<source>-NNNNNN.tar`` with ``sizes.json``; the source is
  the parquet's stem (its folder's name for ``*-00000-of-00001`` style stems).
* Resume: after each shard, ``convert_state.json`` records the rows accounted for; a rerun continues
  from there (a finished source is skipped). Every run ends with rows in = samples out + skipped.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from mme5.errors import Mme5Error
from mme5.mmeb import MMEB_META_TASK
from mme5.records import IMAGE_EXTENSIONS, PUBLIC_IMAGE_TOKEN, Example, RecordError, ShardSetWriter, Side

log = logging.getLogger("mme5.data.convert")

COLUMNS = ("qry", "qry_image_path", "pos_text", "pos_image_path", "neg_text", "neg_image_path")
STATE_FILE = "convert_state.json"
REPORT_FILE = "convert_report.json"
_SHARDED_STEM = re.compile(r"^(?:[A-Za-z_]+-)?\d{5}-of-\d{5}$")

#: Training subset name (lower case) -> task; MMEB's own names, the training set's ``ImageNet_1K``
#: spelling, and the task names themselves. Other sources default to retrieval.
TASK_OF_SOURCE: dict[str, str] = {
    **{name.lower(): meta.lower() for name, meta in MMEB_META_TASK.items()},
    "imagenet_1k": "classification",
    **{task: task for task in ("classification", "vqa", "retrieval", "grounding")},
}


class ConvertError(Mme5Error, ValueError):
    """A conversion that cannot start (missing input, wrong columns): a user error, reported as one line."""


@dataclass
class ConvertReport:
    """What one source's conversion did."""

    source: str
    out_dir: str
    rows_in: int = 0
    samples_out: int = 0
    shards: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    resumed_from_row: int = 0
    complete: bool = False

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.samples_out + sum(self.skipped.values())

    def summary(self) -> str:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{self.source}: rows in {self.rows_in} = samples out {self.samples_out} + skipped "
            f"{sum(self.skipped.values())} ({skipped}); {self.shards} shards in {self.out_dir}"
        )


def parse_list(value: Any, column: str) -> list[str]:
    """A ``neg_*`` cell -> list of strings: a Python-literal list string, a real list, a string, or empty."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text[0] in "[(":
            try:
                items = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                raise RecordError("bad_list", f"column '{column}' is not a literal list: {exc}") from None
            if not isinstance(items, (list, tuple)):
                raise RecordError(
                    "bad_list", f"column '{column}' holds {type(items).__name__}, expected a list"
                )
            items = list(items)
        else:
            items = [value]
    else:
        raise RecordError(
            "bad_list", f"column '{column}' holds {type(value).__name__}, expected a list or string"
        )
    if not all(isinstance(x, str) or x is None for x in items):
        raise RecordError("bad_list", f"column '{column}' holds a non-string item")
    return [x or "" for x in items]


def pad_negatives(texts: list[str], images: list[str], limit: int | None) -> list[tuple[str, str]]:
    """Zip negative texts and image paths; cut to ``limit``, pad a short non-empty list with its last item."""
    n = max(len(texts), len(images))
    pairs = [(texts[i] if i < len(texts) else "", images[i] if i < len(images) else "") for i in range(n)]
    pairs = [p for p in pairs if p[0] or p[1]]
    if limit is None or not pairs:
        return pairs
    pairs = pairs[:limit]
    return pairs + [pairs[-1]] * (limit - len(pairs))


def modality_of(query: Side, positive: Side) -> str:
    def code(s: Side) -> str:
        return ("I" if s.has_image else "") + ("T" if s.text else "")

    return f"{code(query)}2{code(positive)}"


class ImageLoader:
    """Reads image files under a root (each file once per source, cached by path) and checks that they
    are images."""

    def __init__(self, root: str | os.PathLike | None, cache_size: int = 4096):
        self.root = Path(root) if root is not None else None
        self.cache: dict[str, tuple[bytes, str]] = {}
        self.cache_size = cache_size

    def load(self, rel: str) -> tuple[bytes, str]:
        if rel in self.cache:
            return self.cache[rel]
        if self.root is None:
            raise RecordError("missing_image_file", f"row names image '{rel}' but no image root was given")
        path = self.root / rel
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RecordError(
                "missing_image_file", f"cannot read image '{path}': {exc.strerror or exc}"
            ) from None
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt = (img.format or "").lower()
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
            raise RecordError("bad_image", f"'{path}' is not a readable image: {exc}") from None
        ext = path.suffix.lower().lstrip(".")
        if ext not in IMAGE_EXTENSIONS:
            ext = {"jpeg": "jpg"}.get(fmt, fmt) if fmt in IMAGE_EXTENSIONS else "png"
        if len(self.cache) >= self.cache_size:
            self.cache.pop(next(iter(self.cache)))
        self.cache[rel] = (data, ext)
        return data, ext


def row_to_example(
    row: dict[str, Any],
    ident: str,
    source: str,
    task: str,
    images: ImageLoader,
    negatives: int | None,
    image_token: str | None,
) -> Example:
    """One parquet row -> Example (raises :class:`RecordError`)."""

    def text(value: Any, column: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise RecordError(
                "bad_type", f"column '{column}' holds {type(value).__name__}, expected a string"
            )
        if image_token is not None:
            value = value.replace(PUBLIC_IMAGE_TOKEN, image_token)
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
    negs = pad_negatives(
        parse_list(row.get("neg_text"), "neg_text"),
        parse_list(row.get("neg_image_path"), "neg_image_path"),
        negatives,
    )
    negative_sides = [side(t or None, p or None, f"neg_text[{i}]") for i, (t, p) in enumerate(negs)]
    return Example(
        id=ident,
        query=query,
        positive=positive,
        negatives=negative_sides,
        task=task,
        modality=modality_of(query, positive),
        source=source,
        meta={"row": ident.rsplit("-", 1)[-1]},
    )


def source_name(path: str | os.PathLike) -> str:
    """A parquet's source name: its stem, or its folder's name for ``train-00000-of-00001`` style stems."""
    p = Path(path)
    stem = p.name.split(".")[0]
    return p.parent.name if _SHARDED_STEM.match(stem) and p.parent.name else stem


def iter_rows(files: Sequence[Path], start: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(global row index, row)`` over the files in order, from row ``start`` (earlier row groups unread)."""
    offset = 0
    for path in files:
        pf = pq.ParquetFile(path)
        missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise ConvertError(
                f"parquet '{path}' lacks column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}"
            )
        for g in range(pf.num_row_groups):
            rows = pf.metadata.row_group(g).num_rows
            if offset + rows <= start:
                offset += rows
                continue
            for row in pf.read_row_group(g, columns=list(COLUMNS)).to_pylist():
                if offset >= start:
                    yield offset, row
                offset += 1


def convert_source(
    files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    image_root: str | None,
    source: str,
    task: str = "auto",
    samples_per_shard: int = 1000,
    negatives: int | None = 3,
    image_token: str | None = None,
    progress: bool = True,
) -> ConvertReport:
    """Convert one source (one or more parquet files, rows in order) into ``out_dir``; resumable."""
    files = [Path(f) for f in files]
    for f in files:
        if not f.is_file():
            raise ConvertError(f"input parquet '{f}' does not exist")
    if image_root is not None and not Path(image_root).is_dir():
        raise ConvertError(f"image root '{image_root}' is not a folder")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    report = ConvertReport(source, str(out), rows_in=total)
    if state.get("complete") and state.get("rows") == total:
        report.samples_out, report.shards = state["samples"], state["next_shard"]
        report.skipped, report.complete = dict(state["skipped"]), True
        report.resumed_from_row = total
        log.info("convert: %s already complete, skipped", source)
        return report
    done_rows = int(state.get("rows_done", 0))
    skipped: Counter[str] = Counter(state.get("skipped", {}))
    samples = int(state.get("samples", 0))
    report.resumed_from_row = done_rows
    if done_rows:
        log.info("convert: %s resumes at row %d of %d", source, done_rows, total)
    resolved_task = TASK_OF_SOURCE.get(source.lower(), "retrieval") if task == "auto" else task
    images = ImageLoader(image_root)
    writer = ShardSetWriter(
        out, prefix=source, samples_per_shard=samples_per_shard, start_shard=int(state.get("next_shard", 0))
    )
    pending_skips: list[tuple[int, str]] = []  # skips of rows after the last flushed sample
    pending_rows: list[int] = []

    def save_state(rows_done: int, complete: bool) -> None:
        data = {
            "rows_done": rows_done,
            "rows": total,
            "next_shard": writer.shard_index,
            "samples": samples,
            "skipped": dict(skipped),
            "complete": complete,
            "files": [str(f) for f in files],
        }
        tmp = state_path.with_name(STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, state_path)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=done_rows, desc=f"convert {source}", unit="row")
    for index, row in iter_rows(files, done_rows):
        try:
            ex = row_to_example(
                row, f"{source}-{index}", source, resolved_task, images, negatives, image_token
            )
        except RecordError as exc:
            pending_skips.append((index, exc.reason))
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
    save_state(total, complete=True)
    if bar is not None:
        bar.close()
    report.samples_out, report.shards, report.skipped, report.complete = (
        samples,
        writer.shard_index,
        dict(skipped),
        True,
    )
    if not report.balanced:  # would be a bug in this function; never drop rows silently
        raise RuntimeError(f"convert {source}: rows do not add up: {report.summary()}")
    (out / REPORT_FILE).write_text(json.dumps({**report.__dict__, "balanced": report.balanced}, indent=1))
    return report


def convert(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    image_root: str | None = None,
    task: str = "auto",
    samples_per_shard: int = 1000,
    negatives: int | None = 3,
    image_token: str | None = None,
    progress: bool = True,
) -> list[ConvertReport]:
    """Convert parquet files (or folders of them) into one shard set per source under ``out_dir``."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(p.rglob("*.parquet"))
            if not found:
                raise ConvertError(f"input folder '{p}' holds no .parquet file")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ConvertError(f"input '{p}' does not exist (expected a parquet file or a folder of them)")
    by_source: dict[str, list[Path]] = {}
    for f in files:
        by_source.setdefault(source_name(f), []).append(f)
    return [
        convert_source(
            fs,
            Path(out_dir) / src,
            image_root,
            src,
            task,
            samples_per_shard,
            negatives,
            image_token,
            progress,
        )
        for src, fs in by_source.items()
    ]
