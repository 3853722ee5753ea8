"""The MMEB and XTD benchmarks: dataset tables and readers for their public on-disk layouts.

MMEB layout (one dataset per entry of a folder)::

    <mmeb_dir>/<Dataset>/test-*.parquet      the Hugging Face hub layout (TIGER-Lab/MMEB-eval)
    <mmeb_dir>/<Dataset>.parquet             one file per dataset
    <mmeb_dir>/<Dataset>/                    a `datasets.save_to_disk` folder (``*.arrow`` files)
    <mmeb_dir>/datasets.json                 optional: meta-task / OOD / chance of extra datasets

Columns: ``qry_text`` (str), ``qry_img_path`` (str, "" = no image), ``tgt_text`` (list[str]),
``tgt_img_path`` (list[str]); candidate 0 is the ground truth; image paths are relative to an image
root. XTD uses the same columns with one entry per language (``<xtd_dir>/<lang>...``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mme5.errors import ConfigError, MissingPathError, Mme5Error
from mme5.eval.items import Item, ItemTable
from mme5.mmeb import MMEB_DATASETS, MMEB_META_TASK, MMEB_OOD

XTD_LANGUAGES: tuple[str, ...] = ("it", "es", "ru", "zh", "pl", "tr", "ko")
EXTRA_TABLE = "datasets.json"
COLUMNS = ("qry_text", "qry_img_path", "tgt_text", "tgt_img_path")


class EvalDataError(Mme5Error, ValueError):
    """An evaluation folder or row that does not follow the public layout."""


@dataclass(frozen=True)
class DatasetInfo:
    """Where a benchmark entry lives and how it is grouped."""

    name: str
    meta_task: str
    ood: bool
    files: tuple[Path, ...]
    chance_p1: float | None = None


@dataclass
class RetrievalSet:
    """One dataset's rows as item ids: ``queries[r]`` against ``candidates[r]`` (truth first)."""

    name: str
    queries: list[int]
    candidates: list[list[int]]
    total_rows: int
    meta: DatasetInfo | None = None

    @property
    def num_pairs(self) -> int:
        """Rows x candidates (what a naive evaluator encodes besides the queries)."""
        return sum(len(c) for c in self.candidates)


def dataset_files(root: Path, name: str) -> tuple[Path, ...] | None:
    single = root / f"{name}.parquet"
    if single.is_file():
        return (single,)
    folder = root / name
    if not folder.is_dir():
        return None
    for pattern in (
        "test-*.parquet",
        "test/*.parquet",
        "*.parquet",
        "data/test-*.parquet",
        "*.arrow",
        "test/*.arrow",
    ):
        found = sorted(folder.glob(pattern))
        if found:
            return tuple(found)
    return None


def read_extra_table(root: str | Path) -> dict[str, dict]:
    """``<root>/datasets.json``: meta-task / ood / chance_p1 of datasets outside the built-in table."""
    path = Path(root) / EXTRA_TABLE
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise EvalDataError(f"{path}: expected an object {{dataset: {{meta_task, ood, chance_p1}}}}")
    return table


def discover_datasets(root: str | Path) -> list[str]:
    """Dataset names present in a folder (built-in order first, then the others sorted)."""
    root = Path(root)
    present = {
        p.stem if p.suffix == ".parquet" else p.name
        for p in root.iterdir()
        if (p.is_file() and p.suffix == ".parquet") or p.is_dir()
    }
    present = {n for n in present if dataset_files(root, n) is not None}
    known = [n for n in MMEB_DATASETS if n in present]
    return known + sorted(present - set(known))


def resolve_mmeb(
    root: str | os.PathLike, names: Iterable[str] | None = None
) -> tuple[list[DatasetInfo], list[str]]:
    """Find the requested MMEB datasets in ``root``; returns (found, missing).

    ``names=None`` means the 36 official datasets plus any listed in ``datasets.json`` (only the
    latter when the folder holds none of the 36: a custom benchmark such as the demo corpus).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingPathError(f"MMEB folder '{root}' does not exist (expected one parquet per dataset)")
    extra = read_extra_table(root)
    if names is not None:
        wanted = list(names)
    else:
        extras = [n for n in extra if n not in MMEB_META_TASK]
        has_official = any(dataset_files(root, n) is not None for n in MMEB_DATASETS)
        wanted = (list(MMEB_DATASETS) if has_official or not extras else []) + extras
    found, missing = [], []
    for name in wanted:
        if name in extra:
            spec = extra[name]
            meta_task = str(spec.get("meta_task", ""))
            ood = bool(spec.get("ood", False))
            chance = spec.get("chance_p1")
        elif name in MMEB_META_TASK:
            meta_task, ood, chance = MMEB_META_TASK[name], name in MMEB_OOD, None
        else:
            raise ConfigError(
                f"MMEB dataset '{name}' is not one of the 36 official names and has no entry "
                f"in {root / EXTRA_TABLE}"
            )
        files = dataset_files(root, name)
        if files is None:
            missing.append(name)
            continue
        found.append(DatasetInfo(name, meta_task, ood, files, float(chance) if chance is not None else None))
    return found, missing


def resolve_xtd(
    root: str | os.PathLike, languages: Iterable[str] = XTD_LANGUAGES
) -> tuple[list[DatasetInfo], list[str]]:
    """Find the per-language XTD entries in ``root``; returns (found, missing)."""
    root = Path(root)
    if not root.is_dir():
        raise MissingPathError(
            f"XTD folder '{root}' does not exist (expected <lang>.parquet or <lang>/test-*.parquet)"
        )
    found, missing = [], []
    for lang in languages:
        files = dataset_files(root, lang)
        if files is None:
            missing.append(lang)
        else:
            found.append(DatasetInfo(lang, "XTD", False, files))
    return found, missing


def _read_table(path: Path) -> pa.Table:
    try:
        if path.suffix == ".arrow":
            with pa.memory_map(str(path)) as source:
                try:
                    return pa.ipc.open_stream(source).read_all()
                except pa.ArrowInvalid:
                    return pa.ipc.open_file(source).read_all()
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in COLUMNS if c in names])
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvalDataError(
            f"{path}: cannot read as an evaluation table with columns {', '.join(COLUMNS)} ({exc})"
        ) from None


def read_retrieval_set(info: DatasetInfo, items: ItemTable, max_rows: int | None = None) -> RetrievalSet:
    """Read one dataset's rows into ``items`` (distinct (text, image path) pairs get one id)."""
    queries: list[int] = []
    candidates: list[list[int]] = []
    total = 0
    for path in info.files:
        table = _read_table(path)
        absent = [c for c in COLUMNS if c not in table.column_names]
        if absent:
            raise EvalDataError(
                f"{path}: missing column(s) {', '.join(absent)}; expected {', '.join(COLUMNS)}"
            )
        cols = {c: table.column(c).to_pylist() for c in COLUMNS}
        for r in range(table.num_rows):
            total += 1
            if max_rows is not None and len(queries) >= max_rows:
                continue
            where = f"{info.name} ({path.name} row {r})"
            texts, images = cols["tgt_text"][r], cols["tgt_img_path"][r]
            if not isinstance(texts, list) or not isinstance(images, list) or len(texts) != len(images):
                raise EvalDataError(f"{where}: tgt_text and tgt_img_path must be lists of equal length")
            if not texts:
                raise EvalDataError(f"{where}: no candidates")
            queries.append(items.add(Item.of(cols["qry_text"][r], cols["qry_img_path"][r], where)))
            candidates.append([items.add(Item.of(t, i, where)) for t, i in zip(texts, images, strict=False)])
    if not queries:
        raise EvalDataError(f"{info.name}: no rows in {', '.join(str(p) for p in info.files)}")
    return RetrievalSet(info.name, queries, candidates, total, info)


@dataclass
class Benchmark:
    """Several datasets sharing one item table (so items common to datasets are encoded once)."""

    sets: list[RetrievalSet] = field(default_factory=list)
    items: ItemTable = field(default_factory=ItemTable)
    missing: list[str] = field(default_factory=list)


def load_benchmark(infos: list[DatasetInfo], missing: list[str], max_rows: int | None = None) -> Benchmark:
    """Read the given datasets into one :class:`Benchmark`."""
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1 or None, got {max_rows}")
    bench = Benchmark(missing=list(missing))
    for info in infos:
        bench.sets.append(read_retrieval_set(info, bench.items, max_rows))
    return bench
