"""The same model at full precision and quantized (bitsandbytes int8 / nf4), the same evaluation.

For each setting: load, evaluate MMEB and/or XTD without the embedding cache (so every item is
really encoded), and measure the peak memory and the encoding throughput. The report gives the
scores per meta-task and per XTD language with their deltas against the first setting.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the setting (load + evaluation). On
the CPU with ``isolate=True`` (each setting in a fresh process), that process's peak resident set
size; without isolation, the peak resident size sampled every 5 ms during the setting minus the size
before loading, which memory kept by the allocator from an earlier setting can understate.
``memory_kind`` says which was measured.

Embedding precision: beside the weight settings, the first (reference) setting's embeddings are also
scored after Matryoshka truncation (``dims``, re-normalised) and quantization (``embedding_precisions``,
as sentence-transformers' ``quantize_embeddings`` defines them, :mod:`mme5.embed.precision`), without
encoding again: the reference run's embeddings are replayed through each transform. Scoring stays
cosine / inner product: int8 vectors are dequantized (bucket lower edges, as sentence-transformers
rescoring does) and re-normalised; binary vectors become +-1/sqrt(d), whose inner product
``1 - 2 hamming / d`` ranks exactly as Hamming distance. int8 ranges are calibrated on the evaluated
items' own float embeddings (per-dimension min / max over every item of the run, at each dimension): the
most favourable calibration, so int8 rows are an upper bound of a fixed-calibration deployment. Each row
reports its storage in bytes per vector (float32 4 d, int8 d, binary ceil(d / 8)).
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from typing_extensions import Self

from mme5.embed.precision import (
    bytes_per_vector,
    calibration_ranges,
    check_dim,
    check_precision,
    dequantize_int8,
    quantize,
    truncate,
)
from mme5.errors import ConfigError
from mme5.eval.datasets import XTD_LANGUAGES
from mme5.eval.models import load_model, pick_device
from mme5.eval.runner import EvalResult, evaluate_mmeb, evaluate_xtd
from mme5.model.settings import QUANTIZATIONS, DType, Quantization

SETTINGS = ("full", *QUANTIZATIONS)
MMEB_GROUPS = ("Classification", "VQA", "Retrieval", "Grounding", "IND", "OOD", "Overall")


@dataclass
class SettingResult:
    """One precision setting: its scores, memory and speed."""

    setting: str
    dtype: str
    mmeb: EvalResult | None
    xtd: EvalResult | None
    peak_memory_bytes: int
    memory_kind: str
    weights_bytes: int | None
    items_per_second: float
    load_seconds: float
    scores: dict[str, float] = field(default_factory=dict)
    embedding: str = "float32"
    """Embedding precision of this row (float32, int8, uint8, binary, ubinary)."""
    dim: int = 0
    """Embedding dimension of this row (the model's, or a Matryoshka truncation)."""
    bytes_per_vector: int = 0
    """Storage of one embedding at this row's dimension and precision."""
    name: str = ""
    """The row's label: the weight setting, plus ``/dimD`` and ``/emb-P`` for embedding rows."""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.setting


class _RssPeak:
    """Samples this process's resident set size in a thread; ``peak`` is the largest seen."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def headline_scores(mmeb: EvalResult | None, xtd: EvalResult | None) -> dict[str, float]:
    """Per meta-task / IND / OOD / Overall (MMEB P@1) and per-language + mean XTD Recall@10 (percent)."""
    out: dict[str, float] = {}
    if mmeb is not None:
        out.update({f"MMEB {g}": mmeb.summary[g] for g in MMEB_GROUPS if g in mmeb.summary})
        out.update({f"MMEB {g}": v for g, v in mmeb.summary.items() if f"MMEB {g}" not in out})
    if xtd is not None:
        out.update({f"XTD {d.name} R@10": d.metrics["hit@10"] for d in xtd.datasets})
        out["XTD mean R@10"] = xtd.summary["mean_R@10"]
    return out


def evaluate_setting(
    model: str,
    setting: str,
    dtype: DType,
    device: str,
    mmeb_dir: str | None,
    xtd_dir: str | None,
    image_root: str | None,
    datasets: Sequence[str] | None,
    languages: Sequence[str],
    max_rows: int | None,
    batch_size: int,
    embedding_precisions: Sequence[str] = (),
    dims: Sequence[int] | None = (),
    xtd_image_root: str | None = None,
) -> list[SettingResult]:
    """Load ``model`` in one setting and evaluate it (no embedding cache); then, for each embedding
    variant (``dims`` x (float32 + ``embedding_precisions``), and each precision at the full dimension),
    the same evaluation on the replayed, transformed embeddings. ``dims=None``: d/4 and d/2.
    ``image_root`` is MMEB's image folder and XTD's unless ``xtd_image_root`` gives XTD its own."""
    xtd_root = xtd_image_root if xtd_image_root is not None else image_root
    if setting not in SETTINGS:
        raise ConfigError(f"setting '{setting}' is not supported; expected one of {SETTINGS}")
    dev = pick_device(device)
    gc.collect()
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    with _RssPeak() as rss:
        t0 = time.perf_counter()
        loaded = load_model(
            model,
            quantization=None if setting == "full" else cast(Quantization, setting),
            device=device,
            dtype=dtype,
            batch_size=batch_size,
        )
        load_seconds = time.perf_counter() - t0
        full_dim = int(getattr(loaded.module, "hidden_size", 0) or 0)
        variants = embedding_variants(embedding_precisions, dims, full_dim) if full_dim else []
        recorder = _Recorder(loaded.embed) if variants else None
        embed = recorder if recorder is not None else loaded.embed
        mmeb = xtd = None
        if mmeb_dir is not None:
            mmeb = evaluate_mmeb(
                embed,
                mmeb_dir,
                image_root,
                datasets=datasets,
                max_rows=max_rows,
                batch_size=batch_size,
            )
        if xtd_dir is not None:
            xtd = evaluate_xtd(
                embed,
                xtd_dir,
                xtd_root,
                languages=languages,
                max_rows=max_rows,
                batch_size=batch_size,
            )
    if cuda:
        peak, kind = torch.cuda.max_memory_allocated(dev) - base_cuda, "cuda_max_allocated"
    else:
        peak, kind = rss.peak - rss.base, "cpu_rss_peak_over_baseline"
    weights = None
    module = loaded.module
    base_model = getattr(module, "base_model", None)
    base: Any = base_model() if callable(base_model) else module
    footprint: Any = getattr(base, "get_memory_footprint", None)
    if footprint is not None:
        weights = int(footprint())
    encoded = sum(r.encode.encoded for r in (mmeb, xtd) if r is not None)
    seconds = sum(r.encode.seconds for r in (mmeb, xtd) if r is not None)
    del loaded, module, base
    gc.collect()
    result = SettingResult(
        setting,
        dtype,
        mmeb,
        xtd,
        int(peak),
        kind,
        weights,
        encoded / seconds if seconds > 0 else float("nan"),
        load_seconds,
        headline_scores(mmeb, xtd),
        dim=full_dim,
        bytes_per_vector=bytes_per_vector(full_dim, "float32") if full_dim else 0,
    )
    out = [result]
    if recorder is not None:
        recorded = recorder.all()
        for dim, precision in variants:
            replay = _Replay(recorder.outputs, dim, precision, recorded)
            v_mmeb = v_xtd = None
            if mmeb_dir is not None:
                v_mmeb = evaluate_mmeb(
                    replay, mmeb_dir, image_root, datasets=datasets, max_rows=max_rows, batch_size=batch_size
                )
            if xtd_dir is not None:
                v_xtd = evaluate_xtd(
                    replay, xtd_dir, xtd_root, languages=languages, max_rows=max_rows, batch_size=batch_size
                )
            replay.finish()
            d = dim if dim is not None else full_dim
            out.append(
                replace(
                    result,
                    mmeb=v_mmeb,
                    xtd=v_xtd,
                    scores=headline_scores(v_mmeb, v_xtd),
                    embedding=precision,
                    dim=d,
                    bytes_per_vector=bytes_per_vector(d, precision),
                    name=variant_name(setting, dim, precision),
                )
            )
    return out


def variant_name(setting: str, dim: int | None, precision: str) -> str:
    """``full/dim64/emb-int8``-style label of an embedding row."""
    return (
        setting
        + (f"/dim{dim}" if dim is not None else "")
        + (f"/emb-{precision}" if precision != "float32" else "")
    )


def embedding_variants(
    precisions: Sequence[str], dims: Sequence[int] | None, full_dim: int
) -> list[tuple[int | None, str]]:
    """The (dim or None for the full one, precision) embedding rows, checked (one-line errors)."""
    precisions = [check_precision(p) for p in precisions if p != "float32"]
    if dims is None:
        dims = sorted({d for d in (full_dim // 4, full_dim // 2) if 1 <= d < full_dim})
    cut = [check_dim(int(d), full_dim) for d in dims]
    cut = [d for d in dict.fromkeys(cut) if d != full_dim]
    rows: list[tuple[int | None, str]] = [(None, p) for p in precisions]
    for d in cut:
        rows += [(d, "float32")] + [(d, p) for p in precisions]
    return rows


class _Recorder:
    """An embedding function that keeps every output, in call order, for :class:`_Replay`."""

    def __init__(self, embed: Any) -> None:
        self.embed = embed
        self.outputs: list[torch.Tensor] = []

    def __call__(self, sides: list[Any]) -> torch.Tensor:
        out = self.embed(sides)
        self.outputs.append(out.detach().float().cpu())
        return out

    def all(self) -> torch.Tensor:
        return torch.cat(self.outputs) if self.outputs else torch.zeros(0, 0)


class _Replay:
    """The recorded embeddings again, call by call, truncated / quantized and turned back into vectors
    that the runner scores by inner product (see the module docstring)."""

    def __init__(self, outputs: list[torch.Tensor], dim: int | None, precision: str, every: torch.Tensor):
        self.outputs, self.dim, self.precision, self.calls = outputs, dim, precision, 0
        floats = truncate(every.numpy(), dim)
        self.ranges = calibration_ranges(floats) if precision in ("int8", "uint8") else None

    def __call__(self, sides: list[Any]) -> torch.Tensor:
        if self.calls >= len(self.outputs) or self.outputs[self.calls].shape[0] != len(sides):
            raise RuntimeError("embedding replay: the evaluation asked for other items than it recorded")
        x = truncate(self.outputs[self.calls].numpy(), self.dim)
        self.calls += 1
        return torch.from_numpy(np.ascontiguousarray(as_vectors(x, self.precision, self.ranges)))

    def finish(self) -> None:
        if self.calls != len(self.outputs):
            raise RuntimeError(f"embedding replay: {self.calls} of {len(self.outputs)} recorded batches used")


def as_vectors(x: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float embeddings -> the unit vectors whose inner products score them at ``precision``."""
    if precision == "float32":
        return x
    if precision in ("int8", "uint8"):
        deq = dequantize_int8(quantize(x, precision, ranges), ranges, precision)  # type: ignore[arg-type]
        return deq / np.maximum(np.linalg.norm(deq, axis=-1, keepdims=True), 1e-12)
    bits = np.unpackbits(quantize(x, "ubinary"), axis=-1)[:, : x.shape[1]].astype(np.float32)
    return (2 * bits - 1) / np.sqrt(x.shape[1])


def _isolated(args: tuple) -> list[SettingResult]:
    import resource

    results = evaluate_setting(*args)
    for result in results:
        if result.memory_kind != "cuda_max_allocated":
            result.peak_memory_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            result.memory_kind = "cpu_process_peak_rss"
    return results


def compare_quantized(
    model: str,
    settings: Sequence[str] = ("full", "int8", "nf4"),
    mmeb_dir: str | None = None,
    xtd_dir: str | None = None,
    image_root: str | None = None,
    datasets: Sequence[str] | None = None,
    languages: Sequence[str] = XTD_LANGUAGES,
    max_rows: int | None = None,
    batch_size: int = 64,
    dtype: DType | Literal["auto"] = "auto",
    device: str = "auto",
    output_dir: str | None = None,
    isolate: bool = False,
    embedding_precisions: Sequence[str] = ("int8", "ubinary"),
    dims: Sequence[int] | None = None,
    xtd_image_root: str | None = None,
) -> list[SettingResult]:
    """Evaluate ``model`` in each setting; write ``quantized.json|.md|.csv|.png`` into ``output_dir``.

    ``image_root`` is MMEB's image folder, and XTD's unless ``xtd_image_root`` gives XTD its own.

    ``dtype="auto"`` is bfloat16 on CUDA and float32 on the CPU (the full-precision setting's weights
    and the 4-bit compute dtype). ``isolate`` runs each setting in a fresh process (exact peak memory
    per setting; the caller's script needs an ``if __name__ == "__main__":`` guard). The first setting
    also gets the embedding rows: each of ``embedding_precisions`` at the full dimension, and at each of
    ``dims`` (None: d/4 and d/2; empty: none) float32 and each precision (module docstring).
    """
    for p in embedding_precisions:
        check_precision(p)
    if not settings:
        raise ConfigError("settings must name at least one of " + ", ".join(SETTINGS))
    if mmeb_dir is None and xtd_dir is None:
        raise ConfigError("nothing to evaluate: give mmeb_dir and/or xtd_dir")
    if dtype == "auto":
        dtype = "bfloat16" if pick_device(device).type == "cuda" else "float32"
    jobs: list[tuple[Any, ...]] = [
        (model, s, dtype, device, mmeb_dir, xtd_dir, image_root, datasets, languages, max_rows, batch_size)
        + ((tuple(embedding_precisions), None if dims is None else tuple(dims)) if i == 0 else ((), ()))
        + (xtd_image_root,)
        for i, s in enumerate(settings)
    ]
    results: list[SettingResult] = []
    if isolate:
        import multiprocessing

        for job in jobs:
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                results += pool.apply(_isolated, (job,))
    else:
        for job in jobs:
            results += evaluate_setting(*job)
    if output_dir is not None:
        write_comparison(results, output_dir, model)
    return results


def _delta(value: float, ref: float) -> str:
    if math.isnan(value) or math.isnan(ref):
        return "-"
    return f"{value - ref:+.1f}"


def comparison_table(results: Sequence[SettingResult], device_name: str = "") -> str:
    """Markdown: scores per meta-task and language with deltas against the first setting; cost per setting."""
    ref = results[0]
    keys = list(ref.scores)
    head = ["Score"] + [r.name if i == 0 else f"{r.name} (Δ vs {ref.name})" for i, r in enumerate(results)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for key in keys:
        cells = [key]
        for i, r in enumerate(results):
            v = r.scores.get(key, float("nan"))
            cells.append(f"{v:.1f}" if i == 0 else f"{v:.1f} ({_delta(v, ref.scores[key])})")
        lines.append("| " + " | ".join(cells) + " |")
    headline = [k for k in ("MMEB Overall", "XTD mean R@10") if k in ref.scores] or keys[:1]
    lines += [
        "",
        "| Setting | embedding | dim | bytes / vector | "
        + " | ".join(f"{k} (Δ)" for k in headline)
        + " | rows tied with the truth (%) | weights (MiB) | peak memory (MiB) | memory measured as "
        "| items/s | load (s) |",
        "|---" * (10 + len(headline)) + "|",
    ]
    seen: set[str] = set()
    for r in results:
        w = "-" if r.weights_bytes is None else f"{r.weights_bytes / 2**20:.2f}"
        cells = [
            f"{r.scores.get(k, float('nan')):.1f} ({_delta(r.scores.get(k, float('nan')), ref.scores[k])})"
            for k in headline
        ]
        # embedding rows reuse their weight setting's run: its cost columns are not repeated
        same = r.setting in seen
        seen.add(r.setting)
        cost = (
            ["same run"] * 5
            if same
            else [
                w,
                f"{r.peak_memory_bytes / 2**20:.1f}",
                r.memory_kind,
                f"{r.items_per_second:.1f}",
                f"{r.load_seconds:.1f}",
            ]
        )
        ties = f"{tied_share(r):.1f}"
        lines.append(
            "| "
            + " | ".join([r.name, r.embedding, str(r.dim), str(r.bytes_per_vector), *cells, ties, *cost])
            + " |"
        )
    lines += [
        "",
        "A tie with the truth is a hit on MMEB and a miss on XTD (each benchmark's official rule): coarse "
        "embeddings (binary at a low dimension) tie often, which raises MMEB and lowers XTD scores.",
    ]
    if device_name:
        lines += ["", f"Device: {device_name}"]
    return "\n".join(lines) + "\n"


def tied_share(r: SettingResult) -> float:
    """Percent of evaluated rows whose truth ties with another candidate at the top (both benchmarks)."""
    sets = [d for res in (r.mmeb, r.xtd) if res is not None for d in res.datasets]
    rows = sum(d.rows for d in sets)
    return sum(d.ties * d.rows for d in sets) / rows if rows else float("nan")


def device_name() -> str:
    """The device the numbers come from (GPU name, else the CPU model)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return "CPU: " + line.split(":", 1)[1].strip() + f" ({os.cpu_count()} threads visible)"
    except OSError:
        pass
    return "CPU"


def plot_comparison(results: Sequence[SettingResult], path: str | os.PathLike, title: str = "") -> Path:
    """Scores per group (bars per setting), and peak memory / items per second per setting."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    keys = list(results[0].scores)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [4, 1, 1]})
    width = 0.8 / len(results)
    x = np.arange(len(keys))
    for i, r in enumerate(results):
        ax1.bar(x + i * width, [r.scores.get(k, float("nan")) for k in keys], width, label=r.name)
    ax1.set_xticks(
        x + width * (len(results) - 1) / 2,
        [k.replace("MMEB ", "").replace("XTD ", "xtd ") for k in keys],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax1.set_ylabel("score (%)")
    ax1.legend(fontsize=8)
    ax1.set_title(title or "scores by setting", fontsize=9)
    names = [r.name for r in results]
    ax2.bar(names, [r.peak_memory_bytes / 2**20 for r in results], color="tab:gray")
    ax2.set_title("peak memory (MiB)", fontsize=9)
    ax3.bar(names, [r.bytes_per_vector for r in results], color="tab:green")
    ax3.set_title("bytes / vector", fontsize=9)
    for ax in (ax2, ax3):
        ax.tick_params(axis="x", labelrotation=70, labelsize=6)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_comparison(results: Sequence[SettingResult], output_dir: str | os.PathLike, model: str) -> None:
    """``quantized.json`` (everything), ``quantized.md`` (tables), ``quantized.csv`` and ``quantized.png``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = device_name()
    payload = {
        "model": model,
        "device": dev,
        "settings": [
            {
                "setting": r.setting,
                "name": r.name,
                "embedding": r.embedding,
                "dim": r.dim,
                "bytes_per_vector": r.bytes_per_vector,
                "dtype": r.dtype,
                "scores": r.scores,
                "deltas": {k: r.scores.get(k, float("nan")) - v for k, v in results[0].scores.items()},
                "peak_memory_bytes": r.peak_memory_bytes,
                "memory_kind": r.memory_kind,
                "weights_bytes": r.weights_bytes,
                "items_per_second": r.items_per_second,
                "load_seconds": r.load_seconds,
                "mmeb": r.mmeb.to_dict() if r.mmeb else None,
                "xtd": r.xtd.to_dict() if r.xtd else None,
            }
            for r in results
        ],
    }
    (out / "quantized.json").write_text(json.dumps(payload, indent=1))
    (out / "quantized.md").write_text(
        f"## {model}: full precision vs quantized weights and embeddings\n\n" + comparison_table(results, dev)
    )
    with open(out / "quantized.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "dtype", "metric", "value", "delta", "device"])
        for r in results:
            for k, v in r.scores.items():
                w.writerow([r.name, r.dtype, k, f"{v:.4f}", f"{v - results[0].scores[k]:.4f}", dev])
            w.writerow([r.name, r.dtype, "peak_memory_bytes", r.peak_memory_bytes, "", dev])
            w.writerow([r.name, r.dtype, "items_per_second", f"{r.items_per_second:.3f}", "", dev])
            w.writerow([r.name, r.dtype, "bytes_per_vector", r.bytes_per_vector, "", dev])
    plot_comparison(results, out / "quantized.png", title=f"{model} on {dev}")
