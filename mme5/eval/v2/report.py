"""The MMEB-V2 summary as markdown and JSON (per kind, per meta-task, overall; every task's score)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from mme5.atomic import write_text
from mme5.eval.v2.runner import V2Result
from mme5.eval.v2.tasks import KIND_METRIC, KINDS, V2_META_TASKS, V2_TASKS


def _fmt(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.1f}"


def v2_table(result: V2Result) -> str:
    """Markdown: the kind / overall row, the meta-task rows, one row per task, what is missing."""
    s, n = result.summary, result.counts
    total = {k: sum(1 for t in V2_TASKS.values() if t.kind == k) for k in KINDS}
    official = sum(t.name in V2_TASKS for t in result.tasks)
    custom = len(result.tasks) - official  # a custom MMEB folder's own image tasks (datasets.json)
    extra = f", and {custom} custom image tasks" if custom else ""
    lines = [
        f"MMEB-V2 ({official} of {len(V2_TASKS)} tasks scored{extra}" + "; image and video hit@1, "
        "visual documents ndcg_linear@5, %)",
        "",
        "| "
        + " | ".join(f"{k} ({n.get(k, 0)}/{total[k]})" for k in KINDS)
        + f" | Overall ({n.get('Overall', 0)}) |",
        "|" + "---|" * (len(KINDS) + 1),
        "| " + " | ".join(_fmt(s.get(k)) for k in KINDS) + f" | {_fmt(s.get('Overall'))} |",
        "",
        "| Kind | Meta-task | Tasks | Mean |",
        "|---|---|---|---|",
    ]
    for kind in KINDS:
        for meta in V2_META_TASKS[kind]:
            key = f"{kind}/{meta}"
            if key in s:
                lines.append(f"| {kind} | {meta} | {n[key]} | {_fmt(s[key])} |")
    lines += [
        "",
        "| Kind | Meta-task | Task | Mode | Rows | Skipped | Cands | Main | Score | hit@1 | hit@5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result.tasks:
        lines.append(
            f"| {t.kind} | {t.meta_task} | {t.name} | {t.eval_type} | {t.rows} | {t.skipped} | "
            f"{t.candidates} | {KIND_METRIC[t.kind]} | {_fmt(t.score)} | {_fmt(t.metrics.get('hit@1'))} | "
            f"{_fmt(t.metrics.get('hit@5'))} |"
        )
    if result.missing:
        lines += ["", f"Missing tasks ({len(result.missing)}): {', '.join(result.missing)}"]
    if result.missing_frames:
        lines += ["", f"Missing or incomplete frame folders ({len(result.missing_frames)}):"]
        lines += [f"- {m}" for m in result.missing_frames]
    if any(t.kind == "video" for t in result.tasks):
        how = {
            "frames": "as the list of their 8 sampled frames (one image per frame, as the official collator)",
            "tiled": "as their 8 sampled frames tiled into one image (not the official input)",
        }.get(result.frame_input, result.frame_input)
        if result.frame_input == "frames" and getattr(result, "video_input", False):
            how = "through the backbone's video input (their 8 sampled frames as one video, as VLM2Vec-V2)"
        lines += ["", f"Videos reach the encoder {how}."]
    return "\n".join(lines)


def write_v2(out_dir: str | os.PathLike, result: V2Result, stem: str = "mmeb_v2") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    js, md = out / f"{stem}.json", out / f"{stem}.md"
    write_text(js, json.dumps(result.to_dict(), indent=1, allow_nan=True))
    write_text(md, v2_table(result))
    return js, md
