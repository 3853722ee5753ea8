"""Where the official hub datasets of the 18 MMEB-V2 video tasks lie under an MMEB-V2 root, and their
rows read from there.

Each video task's rows come from one hub dataset (``src/constant/dataset_hf_path.py`` lines 2-29,
``(repo, subset, split)``, keyed by video.yaml's ``dataset_name``; TIGER-AI-Lab/VLM2Vec at 6e1e1d4).
VLM2Vec's download script clones a dataset repository into ``<root>/video-tasks/<repo name>``
(``adhoc/data/download_datasets.py`` lines 209-227 with lines 244-255; its list of video repositories
lines 44-68) or saves its split as ``<name>/<split>.parquet`` and ``.jsonl`` (lines 116-127, 148-161).
mme5 looks, for a task, in the first of these folders under ``video-tasks/`` that exists: the
repository's name (both lists' spellings, e.g. ``egoschema`` and ``EgoSchema``), the official
``dataset_name`` (``Kinetics-700``) and the mme5 task name (``K700``). In that folder the split's files
are ``<split>.parquet`` / ``<split>-*.parquet`` (the hub's shards, read in name order), else
``<split>.jsonl`` / ``<split>-*.jsonl`` / ``.json``, else ``<split>/*.parquet`` (the hub's parquet
conversion), in the first folder that holds any of: ``<subset>/`` and ``data/<subset>/`` (a dataset
with a subset: MSR-VTT ``test_1k``, NExTQA ``MC``, EgoSchema ``Subset``) or ``default/`` (one
without), then the folder itself and ``data/``. MVBench is one subset per folder
(``<folder>/<subset>/`` or ``<folder>/data/<subset>/``; its 20 subsets of ``mvbench_dataset.py`` lines
24-45, loaded and concatenated in that order with a ``subset`` column, ``dataset_utils.py`` lines
78-91); a subset without files is an error naming it.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mme5.eval.datasets import EvalDataError
from mme5.eval.v2.convert import MVBENCH_SUBSETS


@dataclass(frozen=True)
class HubSource:
    """A task's hub dataset: ``repos`` (the ``dataset_hf_path.py`` one first, then the download
    script's), ``dataset_name`` (video.yaml), ``subset`` and ``split``."""

    dataset_name: str
    repos: tuple[str, ...]
    subset: str | None
    split: str


#: mme5 task -> hub dataset (dataset_hf_path.py lines 2-29; download_datasets.py lines 44-68)
HUB_SOURCES: dict[str, HubSource] = {
    "MSR-VTT": HubSource("MSR-VTT", ("VLM2Vec/MSR-VTT",), "test_1k", "test"),  # line 4
    "MSVD": HubSource("MSVD", ("VLM2Vec/MSVD",), None, "test"),  # line 5
    "DiDeMo": HubSource("DiDeMo", ("VLM2Vec/DiDeMo",), None, "test"),  # line 6
    "YouCook2": HubSource("YouCook2", ("lmms-lab/YouCook2", "VLM2Vec/YouCook2"), None, "val"),  # line 8
    "VATEX": HubSource("VATEX", ("VLM2Vec/VATEX",), None, "test"),  # line 9
    "HMDB51": HubSource("HMDB51", ("VLM2Vec/HMDB51",), None, "test"),  # line 12
    "UCF101": HubSource("UCF101", ("VLM2Vec/UCF101",), None, "test"),  # line 13
    "Breakfast": HubSource("Breakfast", ("VLM2Vec/Breakfast",), None, "test"),  # line 14
    "K700": HubSource("Kinetics-700", ("VLM2Vec/Kinetics-700",), None, "test"),  # line 15
    "SmthSmthV2": HubSource("SmthSmthV2", ("VLM2Vec/SmthSmthV2",), None, "test"),  # line 16
    "QVHighlight": HubSource("QVHighlight", ("VLM2Vec/QVHighlight",), None, "test"),  # line 19
    "Charades-STA": HubSource("Charades-STA", ("VLM2Vec/Charades-STA",), None, "test"),  # line 20
    "MomentSeeker": HubSource("MomentSeeker", ("VLM2Vec/MomentSeeker",), None, "test"),  # line 21
    "NExTQA": HubSource("NExTQA", ("VLM2Vec/NExTQA",), "MC", "test"),  # line 25
    "EgoSchema": HubSource("EgoSchema", ("VLM2Vec/EgoSchema", "VLM2Vec/egoschema"), "Subset", "test"),  # 26
    "MVBench": HubSource("MVBench", ("VLM2Vec/MVBench",), None, "train"),  # line 27
    "Video-MME": HubSource("Video-MME", ("VLM2Vec/Video-MME",), None, "test"),  # line 28
    "ActivityNetQA": HubSource("ActivityNetQA", ("VLM2Vec/ActivityNetQA",), None, "test"),  # line 29
}


def folder_names(task: str) -> list[str]:
    """The folder names under ``video-tasks/`` where a task's hub snapshot is looked for, in order."""
    src = HUB_SOURCES[task]
    return list(dict.fromkeys([*(r.split("/")[-1] for r in src.repos), src.dataset_name, task]))


def _split_files(folder: Path, split: str) -> list[Path]:
    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for exts in ((".parquet",), (".jsonl", ".json")):
        hits = [p for p in files if p.suffix in exts and (p.stem == split or p.stem.startswith(f"{split}-"))]
        if hits:
            return hits
    if (folder / split).is_dir():  # the hub's parquet conversion: <config>/<split>/0000.parquet
        return sorted(p for p in (folder / split).iterdir() if p.is_file() and p.suffix == ".parquet")
    return []


def _files_in(folder: Path, subset: str | None, split: str) -> list[Path]:
    dirs = [folder / subset, folder / "data" / subset] if subset else [folder / "default"]
    for d in [*dirs, folder, folder / "data"]:
        hits = _split_files(d, split)
        if hits:
            return hits
    return []


def hub_folder(root: str | os.PathLike, task: str) -> Path | None:
    """The task's hub snapshot folder under ``<root>/video-tasks`` (None when there is none)."""
    if task not in HUB_SOURCES:
        return None
    base = Path(root) / "video-tasks"
    for name in folder_names(task):
        if (base / name).is_dir():
            return base / name
    return None


def hub_files(root: str | os.PathLike, task: str) -> list[tuple[str | None, list[Path]]]:
    """The split files of the task's hub snapshot, as ``(subset column or None, files)`` groups in
    the official order; [] when the snapshot or its split is absent (MVBench: present when any of its
    subsets is)."""
    folder = hub_folder(root, task)
    if folder is None:
        return []
    src = HUB_SOURCES[task]
    if task == "MVBench":
        groups: list[tuple[str | None, list[Path]]] = [
            (s, _split_files(folder / s, src.split) or _split_files(folder / "data" / s, src.split))
            for s in MVBENCH_SUBSETS
        ]
        return groups if any(files for _, files in groups) else []
    files = _files_in(folder, src.subset, src.split)
    return [(None, files)] if files else []


def hub_present(root: str | os.PathLike, task: str) -> bool:
    """Whether the task's hub snapshot (with its split) is under ``root``."""
    return bool(hub_files(root, task))


def _read_table(path: Path) -> list[dict]:
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        raise EvalDataError(f"{path}: cannot be read ({exc})") from None
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(rows, list):
            raise EvalDataError(f"{path}: not a list of rows")
        return rows
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"{path} line {n}: not valid JSON ({exc})") from None
    return rows


@dataclass
class HubRows:
    """A task's hub rows in the official order, with the file each came from (for error messages)."""

    rows: list[dict] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    root: Path = Path()

    def where(self, r: int) -> str:
        """``<file relative to the root> row <n>`` of row ``r`` (``n`` counted within its file)."""
        i = bisect.bisect_right(self.starts, r) - 1
        path = self.files[i]
        try:
            shown = path.relative_to(self.root)
        except ValueError:
            shown = path
        return f"{shown} row {r - self.starts[i]}"


def read_hub_rows(root: str | os.PathLike, task: str) -> HubRows:
    """The rows of a task's hub snapshot (MVBench: with the ``subset`` column its loader adds)."""
    root = Path(root)
    groups = hub_files(root, task)
    if not groups:
        raise EvalDataError(
            f"{task}: no hub snapshot under {root / 'video-tasks'} ({', '.join(folder_names(task))})"
        )
    if task == "MVBench":
        absent = [s for s, files in groups if not files]
        if absent:
            raise EvalDataError(
                f"MVBench: subset '{absent[0]}' has no {HUB_SOURCES[task].split} files in "
                f"{hub_folder(root, task)}" + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else "")
            )
    out = HubRows(root=root)
    for subset, files in groups:
        for path in files:
            rows = _read_table(path)
            if subset is not None:
                rows = [{**r, "subset": subset} if isinstance(r, dict) else r for r in rows]
            out.files.append(path)
            out.starts.append(len(out.rows))
            out.rows.extend(rows)
    return out
