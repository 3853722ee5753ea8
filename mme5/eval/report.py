"""Evaluation reports: JSON, markdown tables (MMEB by meta-task, XTD by language) and plots."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mme5.atomic import atomic_open, write_text
from mme5.eval.datasets import XTD_LANGUAGES
from mme5.eval.runner import EvalResult
from mme5.mmeb import META_TASKS

MMEB_COLUMNS = ("Classification", "VQA", "Retrieval", "Grounding", "IND", "OOD", "Overall")
SHORT = {"Classification": "Class", "Retrieval": "Retr", "Grounding": "Ground"}


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def write_json(path: str | os.PathLike, **results: EvalResult | None) -> Path:
    """Write results (``mmeb=...``, ``xtd=...``) as one JSON file, atomically; returns the path."""
    path = Path(path)
    payload = {name: r.to_dict() for name, r in results.items() if r is not None}
    write_text(path, json.dumps(payload, indent=1, allow_nan=True))
    return path


def mmeb_table(result: EvalResult, per_dataset: bool = True) -> str:
    """The paper-style summary row (Class / VQA / Retr / Ground / IND / OOD / Overall) and, by
    meta-task, one row per dataset."""
    s = result.summary
    extra = [k for k in s if k not in MMEB_COLUMNS]
    cols = [c for c in MMEB_COLUMNS if c in META_TASKS or c in ("IND", "OOD", "Overall")] + extra
    head = "| " + " | ".join(SHORT.get(c, c) for c in cols) + " |"
    lines = [
        f"MMEB Precision@1 (%), {len(result.datasets)} dataset(s)"
        + (f"; missing {len(result.missing)}: {', '.join(result.missing)}" if result.missing else ""),
        "",
        head,
        "|" + "---|" * len(cols),
        "| " + " | ".join(_fmt(s.get(c)) for c in cols) + " |",
    ]
    if per_dataset:
        lines += [
            "",
            "| Meta-task | Dataset | Split | Rows | Cands | P@1 | hit@5 | MRR | nDCG@10 "
            "| ties | tie@1 | chance |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        order = list(META_TASKS) + sorted({d.meta_task for d in result.datasets} - set(META_TASKS))
        for task in order:
            for d in (d for d in result.datasets if d.meta_task == task):
                m = d.metrics
                lines.append(
                    f"| {task} | {d.name} | {'OOD' if d.ood else 'IND'} | {d.rows} | "
                    f"{d.candidates / max(d.rows, 1):.0f} | {_fmt(m['precision@1'])} | {_fmt(m['hit@5'])} | "
                    f"{_fmt(m['mrr'])} | {_fmt(m['ndcg@10'])} | {_fmt(d.ties)} | {_fmt(m.get('tie@1'))} | "
                    f"{_fmt(d.chance_p1)} |"
                )
    lines += ["", _tie_line(result), _cost_line(result)]
    return "\n".join(lines)


def _tie_line(result: EvalResult) -> str:
    rule = {
        "truth_wins": "a candidate tied with the truth ranks below it",
        "truth_loses": "a candidate tied with the truth ranks above it",
    }.get(result.tie_rule, result.tie_rule)
    return f"Tie rule {result.tie_rule} ({rule}); ties: % of rows with a candidate tied with the truth."


def xtd_table(result: EvalResult) -> str:
    """Recall@1/5/10 (%) per language and the mean Recall@10."""
    langs = [d.name for d in result.datasets]
    order = [lang for lang in XTD_LANGUAGES if lang in langs] + [
        lang for lang in langs if lang not in XTD_LANGUAGES
    ]
    lines = [
        "XTD text -> image (%)" + (f"; missing: {', '.join(result.missing)}" if result.missing else ""),
        "",
        "| Metric | " + " | ".join(order) + " | avg |",
        "|---|" + "---|" * (len(order) + 1),
    ]
    for k in (1, 5, 10):
        vals = [result.score(lang).metrics[f"hit@{k}"] for lang in order]
        lines.append(
            f"| R@{k} | " + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(sum(vals) / len(vals))} |"
        )
    ties = [result.score(lang).ties for lang in order]
    lines.append("| ties | " + " | ".join(_fmt(v) for v in ties) + f" | {_fmt(sum(ties) / len(ties))} |")
    lines += ["", _tie_line(result), _cost_line(result)]
    return "\n".join(lines)


def _cost_line(result: EvalResult) -> str:
    e = result.encode
    return (
        f"{result.rows} rows, {result.rows_x_candidates} row x candidate pairs; {e.distinct_items} distinct "
        f"items: {e.encoded} encoded, {e.from_cache} from cache; {result.seconds:.1f} s"
    )


def markdown_report(
    mmeb: EvalResult | None = None, xtd: EvalResult | None = None, title: str | None = None
) -> str:
    """One markdown document with the MMEB and/or XTD tables."""
    parts = [f"## {title}"] if title else []
    if mmeb is not None:
        parts.append(mmeb_table(mmeb))
    if xtd is not None:
        parts.append(xtd_table(xtd))
    return "\n\n".join(parts) + "\n"


def headline(mmeb: EvalResult | None = None, xtd: EvalResult | None = None) -> dict[str, float]:
    """The numbers worth logging and plotting: MMEB summary and XTD mean Recall@10 (percent)."""
    out: dict[str, float] = {}
    if mmeb is not None:
        out.update({f"mmeb/{k}": v for k, v in mmeb.summary.items()})
    if xtd is not None:
        out["xtd/mean_R@10"] = xtd.summary["mean_R@10"]
        out.update({f"xtd/{d.name}/R@10": d.metrics["hit@10"] for d in xtd.datasets})
    return out


def draw_history(ax: Any, history: Sequence[dict]) -> list[Any]:
    """One line per metric on matplotlib axes ``ax``, a point per evaluation; returns the lines.

    Each series gets its own marker and dash and is half transparent, so series with equal scores stay
    visible on top of each other.
    """
    markers = "osD^v<>ph*"
    styles = ("-", "--", "-.", ":")
    lines = []
    keys = sorted({k for h in history for k in h if k != "step"})
    for i, key in enumerate(keys):
        pts = [(h["step"], h[key]) for h in history if key in h and not math.isnan(h[key])]
        if pts:
            (line,) = ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=markers[i % len(markers)],
                linestyle=styles[(i // len(markers)) % len(styles)],
                markersize=5,
                alpha=0.75,
                label=key,
                linewidth=2.5 if key.endswith(("Overall", "mean_R@10")) else 1.2,
            )
            lines.append(line)
    return lines


def plot_history(
    history: Sequence[dict], path: str | os.PathLike, title: str = "evaluation during training"
) -> Path:
    """Scores over training steps: ``history`` is a list of ``{"step": int, "<metric>": value, ...}``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    keys = [line.get_label() for line in draw_history(ax, history)]
    ax.set_xlabel("global step")
    ax.set_ylabel("score (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
