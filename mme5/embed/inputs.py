"""Rows to embed: a parquet, JSONL or CSV table of texts and/or image references, or a folder of images.

A table has an id column (default ``id``; missing: the row number), a text column (default ``text``)
and/or an image column (default ``image``). An image cell is a path (relative to ``image_root``, by
default the table's folder), encoded bytes, or a Hugging Face ``{"bytes": ..., "path": ...}`` dict. A
folder yields every image file under it (sorted), its id the path relative to the folder.

Reading is lazy about images: :func:`read_rows` only lists the rows; :func:`load_side` opens a row's
image when its part is encoded and raises :class:`RowError` (a reason and a message) for a row that
cannot be embedded, which the caller skips and counts. A malformed JSONL line becomes a row that
fails in :func:`load_side` in the same way, so it is counted where it stands.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mme5.errors import ConfigError, MissingPathError
from mme5.records import RecordError, Side, compose_text, decode_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
TABLE_SUFFIXES = (".parquet", ".jsonl", ".csv")


class RowError(Exception):
    """A row that cannot be embedded: ``reason`` is its skip counter name."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Row:
    """One item to embed, as read (the image is opened by :func:`load_side`)."""

    id: str
    text: str | None = None
    image: Any = None
    """None, a path (str, relative to ``image_root``), bytes, or a ``{"bytes", "path"}`` dict."""
    error: str | None = None
    """Set when the row itself could not be read (a malformed JSONL line)."""


@dataclass
class Source:
    """The rows of one input and where its relative image paths start."""

    path: Path
    rows: list[Row]
    image_root: Path


def _cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from a CSV / pandas-written parquet
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _rows_from_records(
    records: list[Any], id_column: str, text_column: str, image_column: str, where: str
) -> list[Row]:
    present = set().union(*(r.keys() for r in records if isinstance(r, dict))) if records else set()
    if records and text_column not in present and image_column not in present:
        raise ConfigError(
            f"{where} has neither a '{text_column}' nor an '{image_column}' column (columns: "
            f"{', '.join(sorted(present)) or 'none'}); set --text_column / --image_column"
        )
    rows = []
    for i, rec in enumerate(records):
        if isinstance(rec, Row):
            rows.append(rec)
            continue
        rid = rec.get(id_column) if id_column in rec else None
        rid = str(i) if _cell(rid) is None else str(rid)
        text = _cell(rec.get(text_column))
        rows.append(Row(rid, None if text is None else str(text), _cell(rec.get(image_column))))
    return rows


def _read_jsonl(path: Path) -> list[Any]:
    out: list[Any] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append(Row(f"line{n}", error=f"malformed JSON on line {n}: {exc.msg}"))
                continue
            if not isinstance(rec, dict):
                out.append(Row(f"line{n}", error=f"line {n} is a JSON {type(rec).__name__}, not an object"))
                continue
            out.append(rec)
    return out


def read_rows(
    path: str | os.PathLike,
    id_column: str = "id",
    text_column: str = "text",
    image_column: str = "image",
    image_root: str | os.PathLike | None = None,
) -> Source:
    """The rows of a ``.parquet`` / ``.jsonl`` / ``.csv`` file or of a folder of images."""
    p = Path(path)
    if not p.exists():
        raise MissingPathError(f"input '{p}' does not exist")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"input folder '{p}' holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        rows = [Row(f.relative_to(p).as_posix(), image=str(f.resolve())) for f in files]
        return Source(p, rows, Path(image_root) if image_root is not None else p)
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ConfigError(f"input '{p}' is not a {', '.join(TABLE_SUFFIXES)} file or a folder of images")
    records: list[Any]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(p).to_pylist()
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on a damaged file
            raise ConfigError(f"input '{p}' is not a readable parquet file: {exc}") from None
    elif suffix == ".jsonl":
        records = _read_jsonl(p)
    else:
        with open(p, encoding="utf-8", errors="replace", newline="") as f:
            records = list(csv.DictReader(f))
    rows = _rows_from_records(records, id_column, text_column, image_column, f"input '{p}'")
    return Source(p, rows, Path(image_root) if image_root is not None else p.parent)


def _image_bytes(image: Any, root: Path) -> tuple[bytes, str]:
    if isinstance(image, dict):
        data, path = image.get("bytes"), image.get("path")
        if data:
            return bytes(data), Path(str(path or "x.jpg")).suffix.lstrip(".") or "jpg"
        if not path:
            raise RowError("image_missing", "image cell has neither bytes nor a path")
        image = path
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image), "jpg"
    if isinstance(image, (str, os.PathLike)):
        file = Path(image)
        file = file if file.is_absolute() else root / file
        try:
            return file.read_bytes(), file.suffix.lstrip(".") or "jpg"
        except OSError as exc:
            raise RowError("image_missing", f"cannot read image '{file}': {exc.strerror or exc}") from None
    raise RowError("image_type", f"image cell of type {type(image).__name__} (expected a path or bytes)")


def load_side(row: Row, root: Path, instruction: str | None = None) -> Side:
    """The :class:`~mme5.records.Side` the model embeds for ``row`` (``{instruction}\\n{text}``, image
    decoded); :class:`RowError` when the row cannot be embedded."""
    if row.error is not None:
        raise RowError("malformed_row", row.error)
    if row.text is None and row.image is None:
        raise RowError("empty_row", "row has neither text nor image")
    if row.image is None:
        return Side(compose_text(instruction, row.text))
    data, ext = _image_bytes(row.image, root)
    try:
        img = decode_image(data)
    except RecordError as exc:
        raise RowError(exc.reason, str(exc)) from None
    return Side(compose_text(instruction, row.text), img, data, ext)
