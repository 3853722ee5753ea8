"""Resumable shard output of a synthesis run, and its stats report.

Plan index range ``[k * U, (k + 1) * U)`` is "unit" ``k``; its accepted samples become shard
``shard-{k:06d}.tar``. A unit counts as done only when its progress record ``_progress/unit-{k}.json``
exists, and that record is written after the shard (both atomically). A run killed at any point and
started again therefore redoes at most the unit it was in, writing exactly what an uninterrupted run
writes: same ids, no duplicates, no gaps.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mme5.atomic import write_text
from mme5.errors import ConfigError
from mme5.records import Example, write_shard, write_sizes

PROGRESS_DIR = "_progress"
RUN_FILE = "run.json"


@dataclass
class UnitRecord:
    """What one unit produced (its progress record)."""

    unit: int
    start: int
    stop: int
    accepted: int = 0
    attempted: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    by_task: dict[str, int] = field(default_factory=dict)
    by_modality: dict[str, int] = field(default_factory=dict)
    by_lang: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    truncated: bool = False
    """The unit stopped early because the run's target was reached inside it."""
    ids: list[str] = field(default_factory=list)
    dedup_texts: list[str] = field(default_factory=list)
    """What the near-duplicate index holds for this unit's accepted samples (rebuilt on resume)."""


def _atomic_json(path: Path, obj: Any) -> None:
    # a unique temp name beside the target (mme5.atomic): two runs on one folder never share a temp file
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=1))


class ShardOutput:
    """The output folder: shards, ``sizes.json``, progress records, ``run.json`` and the stats report."""

    def __init__(self, folder: str | os.PathLike, prefix: str = "shard"):
        self.folder = Path(folder)
        self.prefix = prefix
        self.progress = self.folder / PROGRESS_DIR
        self.progress.mkdir(parents=True, exist_ok=True)

    def shard_path(self, unit: int) -> Path:
        return self.folder / f"{self.prefix}-{unit:06d}.tar"

    def check_run(self, run: dict[str, Any]) -> None:
        """Record the run's configuration, or refuse to resume a folder made with a different one."""
        path = self.folder / RUN_FILE
        if path.exists():
            old = json.loads(path.read_text())
            diff = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
            if diff:
                raise ConfigError(
                    f"output folder '{self.folder}' holds a run with a different configuration "
                    f"({', '.join(diff)} differ); use a new output_dir or set overwrite"
                )
        else:
            _atomic_json(path, run)

    def clear(self) -> None:
        """Remove a previous run's shards, records and report (``overwrite``)."""
        for p in [
            *self.folder.glob(f"{self.prefix}-*.tar"),
            *self.progress.glob("unit-*.json"),
            self.folder / RUN_FILE,
            self.folder / "sizes.json",
            self.folder / "stats.json",
            self.folder / "stats.md",
        ]:
            if p.exists():
                p.unlink()

    def done(self) -> dict[int, UnitRecord]:
        """Progress records of the completed units."""
        out = {}
        for p in sorted(self.progress.glob("unit-*.json")):
            rec = UnitRecord(**json.loads(p.read_text()))
            out[rec.unit] = rec
        return out

    def commit(self, record: UnitRecord, examples: list[Example]) -> None:
        """Write the unit's shard (if it accepted any sample), then its record, then ``sizes.json``."""
        shard = self.shard_path(record.unit)
        if examples:
            write_shard(shard, examples)
        elif shard.exists():
            shard.unlink()
        _atomic_json(self.progress / f"unit-{record.unit:06d}.json", asdict(record))
        self.write_sizes()

    def write_sizes(self) -> None:
        sizes = {self.shard_path(r.unit).name: r.accepted for r in self.done().values() if r.accepted}
        write_sizes(self.folder, sizes)

    def report(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Aggregate the progress records into ``stats.json`` and ``stats.md``; returns the stats."""
        recs = list(self.done().values())
        totals: dict[str, Counter] = {k: Counter() for k in ("rejects", "by_task", "by_modality", "by_lang")}
        for r in recs:
            for k, counter in totals.items():
                counter.update(getattr(r, k))
        seconds = sum(r.seconds for r in recs)
        accepted = sum(r.accepted for r in recs)
        attempted = sum(r.attempted for r in recs)
        completion = sum(r.completion_tokens for r in recs)
        prompt = sum(r.prompt_tokens for r in recs)
        stats: dict[str, Any] = {
            "accepted": accepted,
            "attempted": attempted,
            "shards": sum(1 for r in recs if r.accepted),
            "acceptance_rate": accepted / attempted if attempted else 0.0,
            "rejects": dict(totals["rejects"].most_common()),
            "by_task": dict(totals["by_task"].most_common()),
            "by_modality": dict(totals["by_modality"].most_common()),
            "by_lang": dict(totals["by_lang"].most_common()),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "generation_seconds": round(seconds, 3),
            "samples_per_second": accepted / seconds if seconds else 0.0,
            "attempts_per_second": attempted / seconds if seconds else 0.0,
            "completion_tokens_per_second": completion / seconds if seconds else 0.0,
            **(extra or {}),
        }
        _atomic_json(self.folder / "stats.json", stats)
        write_text(self.folder / "stats.md", render_markdown(stats))
        return stats


def _table(title: str, counts: dict[str, int], total: int) -> list[str]:
    lines = [f"### {title}", "", "| value | samples | share |", "| --- | ---: | ---: |"]
    for k, v in counts.items():
        lines.append(f"| {k} | {v} | {v / total:.1%} |" if total else f"| {k} | {v} | - |")
    return [*lines, ""]


def render_markdown(stats: dict[str, Any]) -> str:
    """The stats report as markdown tables."""
    a, n = stats["accepted"], stats["attempted"]
    lines = [
        "# Synthesis report",
        "",
        f"- accepted {a} of {n} attempts ({stats['acceptance_rate']:.1%}) in {stats['shards']} shard(s)",
        (
            f"- {stats['samples_per_second']:.3f} accepted samples/s, "
            f"{stats['attempts_per_second']:.3f} attempts/s, "
            f"{stats['completion_tokens_per_second']:.1f} generated tokens/s "
            f"over {stats['generation_seconds']:.1f} s"
        ),
        f"- tokens: {stats['prompt_tokens']} prompt, {stats['completion_tokens']} generated",
    ]
    if "backend_start_seconds" in stats:
        lines.append(
            f"- backend start (model load / engine start, not in the rates): "
            f"{stats['backend_start_seconds']:.1f} s"
        )
    lines.append("")
    lines += _table("Rejects by reason", stats["rejects"], n)
    lines += _table("By task", stats["by_task"], a)
    lines += _table("By modality", stats["by_modality"], a)
    lines += _table("By language", stats["by_lang"], a)
    return "\n".join(lines)
