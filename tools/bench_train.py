"""Training-step benchmark: samples/s and peak memory of EmbeddingModule steps.

Compares the plain step with GradCache (same global batch) on the tiny twins, with 1 and 2 processes
(Lightning DDP, gloo on CPU). Each configuration runs in its own process (so peak memory is its own),
times steady-state steps with a callback (after ``warmup_steps``) and measures peak memory of a step
above what was allocated when it began: on CPU from the allocation and free events of one extra step
run under ``torch.profiler`` (``profile_memory=True``; that step is not timed), on CUDA with
``torch.cuda.max_memory_allocated``. Rows go to a CSV, plots to a PNG, both under ``out_dir``
(runs/bench unless named: benchmarks/results holds the tracked copies); the device that produced them is
in every row. With one global batch and several chunk sizes the plot's x axis is the chunk size.

    python tools/bench_train.py main --batch_sizes '[8, 32, 64]' --chunks '[null, 4]' --processes '[1, 2]'
    python tools/bench_train.py main --batch_sizes '[128]' --chunks '[null, 16, 64, 128]' --processes '[1]' \
        --name train_step_chunks
    python tools/bench_train.py replot --csv_path benchmarks/results/train_step_chunks.csv
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULT_FIELDS = [
    "model",
    "mode",
    "chunk",
    "processes",
    "batch_per_process",
    "global_batch",
    "negatives",
    "steps",
    "step_ms_median",
    "step_ms_p20",
    "step_ms_p80",
    "samples_per_s",
    "peak_mem_mb",
    "device",
    "torch",
    "lightning",
    "threads",
]


def _profiled_peak_bytes(prof: torch.profiler.profile) -> int:
    """Peak of the running sum of CPU allocations (+) and frees (-) the profiler recorded in a step."""
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run_one(
    out: str,
    model: str = "tiny-mllama",
    batch_per_process: int = 8,
    chunk: int | None = None,
    processes: int = 1,
    negatives: int = 1,
    steps: int = 6,
    warmup_steps: int = 2,
    max_length: int = 32,
    accelerator: str = "cpu",
    lora: bool = True,
    threads: int = 1,
) -> None:
    """Time one configuration (a worker; ``main`` calls it in a fresh process) and write JSON rows."""
    import lightning as L

    torch.set_num_threads(threads)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests is a package
    from torch.utils.data import DataLoader

    from mme5.data.collate import Collator
    from mme5.logs import quiet_native_output
    from mme5.model.settings import EncoderSettings, LoraSettings
    from mme5.training.module import EmbeddingModule, OptimizerSettings, ScheduleSettings
    from tests.training.test_module import make_examples

    cuda = accelerator in ("cuda", "gpu")

    memory_step = warmup_steps + steps  # one extra step, profiled for memory on CPU, not timed

    class StepMeter(L.Callback):
        def __init__(self):
            self.times: list[float] = []
            self.peaks: list[float] = []
            self.prof = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                self.base = torch.cuda.memory_allocated()
            elif batch_idx == memory_step:
                self.prof = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
                )
                with quiet_native_output():  # profiler_start / profiler_stop lines
                    self.prof.__enter__()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - self.t0
            if cuda:
                if batch_idx >= warmup_steps:
                    self.peaks.append((torch.cuda.max_memory_allocated() - self.base) / 2**20)
            elif self.prof is not None:
                with quiet_native_output():
                    self.prof.__exit__(None, None, None)
                self.peaks.append(_profiled_peak_bytes(self.prof) / 2**20)
                self.prof = None
            if warmup_steps <= batch_idx < memory_step:
                self.times.append(dt)

    L.seed_everything(0, verbose=False)
    module = EmbeddingModule(
        encoder=EncoderSettings(
            model=model,
            max_length=max_length,
            lora=LoraSettings(rank=8, alpha=64, dropout=0.1) if lora else None,
        ),
        optimizer=OptimizerSettings(lr=1e-5),
        schedule=ScheduleSettings(warmup=0),
        grad_cache_chunk=chunk,
    )
    total = warmup_steps + steps + 1
    examples = make_examples(batch_per_process * processes * total, negatives=negatives)
    data = DataLoader(
        examples, batch_size=batch_per_process, collate_fn=Collator(model, max_length=max_length)
    )
    meter = StepMeter()
    trainer = L.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=processes,
        strategy="ddp" if processes > 1 else "auto",
        max_steps=total,
        callbacks=[meter],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    row = {
        "model": model,
        "mode": "gradcache" if chunk else "plain",
        "chunk": chunk or "",
        "processes": processes,
        "batch_per_process": batch_per_process,
        "global_batch": batch_per_process * processes,
        "negatives": negatives,
        "steps": len(meter.times),
        "step_ms_median": 1e3 * statistics.median(meter.times),
        "step_ms_p20": 1e3 * _quantile(meter.times, 0.2),
        "step_ms_p80": 1e3 * _quantile(meter.times, 0.8),
        "samples_per_s": batch_per_process * processes / statistics.median(meter.times),
        "peak_mem_mb": statistics.median(meter.peaks),
        "device": torch.cuda.get_device_name() if cuda else f"{_cpu_name()} ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "lightning": L.__version__,
        "threads": threads,
    }
    Path(f"{out}.rank{trainer.global_rank}.json").write_text(json.dumps(row))


def main(
    models: list[str] = ["tiny-mllama"],  # noqa: B006 - jsonargparse reads the default
    batch_sizes: list[int] = [8, 32, 64],  # noqa: B006
    chunks: list[int | None] = [None, 4],  # noqa: B006
    processes: list[int] = [1, 2],  # noqa: B006
    negatives: int = 1,
    steps: int = 6,
    warmup_steps: int = 2,
    max_length: int = 32,
    accelerator: str = "cpu",
    lora: bool = True,
    threads: int = 1,
    out_dir: str = "runs/bench",
    name: str = "train_step",
) -> list[dict]:
    """Run every (model, global batch, chunk, processes) configuration; write CSV + PNG.

    Args:
        models: backbones (tiny twins or local folders).
        batch_sizes: global batch sizes (queries per optimiser step); split evenly over processes.
        chunks: GradCache chunk sizes; null is the plain step.
        processes: process counts (Lightning DDP when > 1).
        negatives: hard negatives per query.
        steps: measured steps per configuration (after ``warmup_steps``).
        warmup_steps: steps run but not measured.
        max_length: text tokens per side.
        accelerator: ``cpu`` or ``cuda``.
        lora: train LoRA adapters (mmE5 setting) instead of all weights.
        threads: torch intra-op threads per process (1 keeps CPU runs comparable across process counts).
        out_dir: where ``<name>.csv`` and ``<name>.png`` go (benchmarks/results is the tracked copy).
        name: file stem of the outputs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            for global_batch in batch_sizes:
                for procs in processes:
                    if global_batch % procs:
                        continue
                    for chunk in chunks:
                        stem = os.path.join(tmp, f"{model}-{global_batch}-{procs}-{chunk}")
                        cmd = [
                            sys.executable,
                            __file__,
                            "run_one",
                            stem,
                            "--model",
                            model,
                            "--batch_per_process",
                            str(global_batch // procs),
                            "--processes",
                            str(procs),
                            "--negatives",
                            str(negatives),
                            "--steps",
                            str(steps),
                            "--warmup_steps",
                            str(warmup_steps),
                            "--max_length",
                            str(max_length),
                            "--accelerator",
                            accelerator,
                            "--lora",
                            str(lora).lower(),
                            "--threads",
                            str(threads),
                        ]
                        if chunk is not None:
                            cmd += ["--chunk", str(chunk)]
                        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
                        if proc.returncode != 0:
                            print(
                                f"FAILED {model} batch={global_batch} procs={procs} chunk={chunk}:\n"
                                f"{proc.stderr[-3000:]}",
                                file=sys.stderr,
                            )
                            continue
                        per_rank = [
                            json.loads(p.read_text())
                            for p in sorted(Path(tmp).glob(Path(stem).name + ".rank*.json"))
                        ]
                        row = dict(per_rank[0])
                        row["peak_mem_mb"] = max(r["peak_mem_mb"] for r in per_rank)
                        rows.append(row)
                        print(
                            f"{model} batch={global_batch} procs={procs} chunk={chunk}: "
                            f"{row['step_ms_median']:.0f} ms/step, {row['samples_per_s']:.1f} samples/s, "
                            f"peak +{row['peak_mem_mb']:.1f} MiB",
                            flush=True,
                        )
    csv_path = out / f"{name}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    _plot(rows, out / f"{name}.png")
    _summary(rows)
    print(f"wrote {csv_path} and {out / (name + '.png')}")
    return rows


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    if len({r["global_batch"] for r in rows}) == 1 and len({str(r["chunk"]) for r in rows}) > 1:
        _plot_chunks(rows, path)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    keys = sorted({(r["model"], r["mode"], str(r["chunk"]), r["processes"]) for r in rows})
    for model, mode, chunk, procs in keys:
        sel = sorted(
            (
                r
                for r in rows
                if (r["model"], r["mode"], str(r["chunk"]), r["processes"]) == (model, mode, chunk, procs)
            ),
            key=lambda r: r["global_batch"],
        )
        label = f"{model} {mode}{'/' + chunk if chunk else ''} x{procs}"
        xs = [r["global_batch"] for r in sel]
        axes[0].plot(xs, [r["samples_per_s"] for r in sel], marker="o", label=label)
        axes[1].plot(xs, [r["peak_mem_mb"] for r in sel], marker="o", label=label)
    axes[0].set(xlabel="global batch (queries)", ylabel="samples / s", title="throughput")
    axes[1].set(
        xlabel="global batch (queries)",
        ylabel="MiB above the step's start",
        title="peak memory per step (max over ranks)",
    )
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"EmbeddingModule training step on {rows[0]['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_chunks(rows: list[dict], path: Path) -> None:
    """One global batch, several GradCache chunk sizes: throughput and peak memory against the chunk size,
    the plain step (no GradCache) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (model, procs) in enumerate(sorted({(r["model"], r["processes"]) for r in rows})):
        sel = [r for r in rows if (r["model"], r["processes"]) == (model, procs)]
        cached = sorted((r for r in sel if r["mode"] == "gradcache"), key=lambda r: int(r["chunk"]))
        color = f"C{i}"
        for ax, key in zip(axes, ("samples_per_s", "peak_mem_mb"), strict=True):
            xs = [int(r["chunk"]) for r in cached]
            ax.plot(
                xs, [r[key] for r in cached], marker="o", color=color, label=f"{model} GradCache x{procs}"
            )
            for r in sel:
                if r["mode"] == "plain":
                    ax.axhline(r[key], color=color, ls="--", lw=1, label=f"{model} plain step x{procs}")
    batch = rows[0]["global_batch"]
    axes[0].set(xlabel="GradCache chunk size (queries)", ylabel="samples / s", title="throughput")
    axes[1].set(
        xlabel="GradCache chunk size (queries)",
        ylabel="MiB above the step's start",
        title="peak memory per step (max over ranks)",
    )
    chunks = sorted({int(r["chunk"]) for r in rows if r["mode"] == "gradcache"})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(chunks, [str(c) for c in chunks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"EmbeddingModule training step, global batch {batch}, on {rows[0]['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


#: GradCache's step time over the plain step's at the same global batch, at most.
TIME_RATIO_TARGET = 1.5


def _summary(rows: list[dict]) -> None:
    """Print the two targets: GradCache / plain step time at equal batch, and memory vs batch."""
    for r in rows:
        if r["mode"] != "gradcache":
            continue
        base = [
            p
            for p in rows
            if p["mode"] == "plain"
            and p["model"] == r["model"]
            and p["global_batch"] == r["global_batch"]
            and p["processes"] == r["processes"]
        ]
        if base:
            ratio = r["step_ms_median"] / base[0]["step_ms_median"]
            mem = (r["peak_mem_mb"], base[0]["peak_mem_mb"])
            time_ok = "met" if ratio <= TIME_RATIO_TARGET else "MISSED"
            mem_ok = "met" if mem[0] < mem[1] else "MISSED"
            print(
                f"  {r['model']} batch={r['global_batch']} x{r['processes']} chunk={r['chunk']}: "
                f"time ratio gradcache/plain = {ratio:.2f} (target <= {TIME_RATIO_TARGET}: {time_ok}); "
                f"peak MiB gradcache {mem[0]:.1f} vs plain {mem[1]:.1f} (target: below plain: {mem_ok})"
            )


def replot(csv_path: str = "benchmarks/results/train_step.csv") -> None:
    """Redraw the PNG beside a CSV written by ``main``."""
    numeric = {"processes", "batch_per_process", "global_batch", "negatives", "steps", "threads"}
    rows = []
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            for k, v in r.items():
                if k in numeric:
                    r[k] = int(v)
                elif k.startswith(("step_ms", "samples", "peak")):
                    r[k] = float(v)
            rows.append(r)
    _plot(rows, Path(csv_path).with_suffix(".png"))


if __name__ == "__main__":
    from mme5 import logs
    from mme5.cli.parsing import run_function
    from mme5.errors import run_command

    verbose, argv = logs.take_verbose(sys.argv[1:])
    logs.configure(True if verbose else None)
    functions = [main, run_one, replot]
    prog = "tools/bench_train.py"
    sys.exit(run_command(prog, lambda: run_function(functions, argv, prog, positional=True)))
