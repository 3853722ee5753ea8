"""Data-path throughput: samples/s of read + decode + collate, 1 and 2 DataLoader workers.

    python tools/bench_data.py                      # writes runs/bench/data_throughput.{csv,png}
    python tools/bench_data.py --out_dir benchmarks/results   # updates the tracked results, on purpose

Two shard sets are generated with the demo corpus generator (``mme5.demo``): the demo itself (64 px
images) and the same corpus drawn at 512 px. For each (set, workers) the ShardDataModule streams one
epoch through the default Collator (tiny-mllama processor) ``repeats`` times; the steady-state clock
starts once every worker has delivered its first batch (worker start-up, which loads the processor,
is left out). It also times the demo training step (EmbeddingModule forward + backward on one batch,
same process) so that the ratio "data samples/s over training samples/s" says whether the data path
keeps up. Worker CPU per sample (the same for 1 and 2 workers when nothing is shared between them)
and main-process CPU per batch separate the pipeline's scaling from the machine's free cores; the
CSV names the CPU that produced every number and the load average while it ran.
"""

from __future__ import annotations

import csv
import os
import platform
import resource
import shutil
import statistics
import time
from pathlib import Path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores visible)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores visible)"


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    s = sorted(values)

    def q(p: float) -> float:
        k = (len(s) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    return statistics.median(s), q(0.2), q(0.8)


def _epoch_rate(dm, batch_size: int, warmup: int) -> tuple[float, float, float]:
    """Steady-state samples/s (the clock starts when ``warmup`` batches, one per worker, have arrived),
    worker CPU ms per sample and main-process CPU ms per batch over the whole epoch (start-up included).
    """
    loader = dm.train_dataloader()
    first = last = None
    batches = 0
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    main0 = time.process_time()
    for seen, _ in enumerate(loader, start=1):
        now = time.perf_counter()
        if seen == warmup:
            first = now
        elif seen > warmup:
            batches += 1
        last = now
    main_cpu = time.process_time() - main0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers are reaped at the end of the epoch
    worker_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    if not batches or last is None or first is None or last <= first:
        raise RuntimeError("epoch too short to time: raise --samples")
    total = batches + warmup
    return (
        batches * batch_size / (last - first),
        1000 * worker_cpu / (total * batch_size),
        1000 * main_cpu / total,
    )


def _train_step_rate(model: str, batch, repeats: int) -> float | None:
    """Samples/s of the demo training step (forward + backward), or None if the module cannot run here."""
    try:
        import warnings

        from mme5.training.module import EmbeddingModule

        warnings.filterwarnings("ignore", message=r"You are trying to `self.log\(\)` but the `self.trainer`")
        module = EmbeddingModule()  # stepped by hand: no trainer, so its self.log calls do nothing
        module.train()
        times = []
        for i in range(repeats + 2):  # two warm-up steps
            t = time.perf_counter()
            loss = module.training_step(batch, i)
            loss = loss["loss"] if isinstance(loss, dict) else loss
            loss.backward()
            module.zero_grad(set_to_none=True)
            if i >= 2:
                times.append(time.perf_counter() - t)
        return len(batch["ids"]) / statistics.median(times)
    except Exception as exc:
        print(f"bench_data: training step not timed ({type(exc).__name__}: {exc})")
        return None


def main(
    out_dir: str = "runs/bench",
    work_dir: str = ".mme5-cache/bench-data",
    samples: int = 2400,
    samples_512: int = 640,
    batch_size: int = 8,
    workers: tuple[int, ...] = (1, 2),
    repeats: int = 3,
    model: str = "tiny-mllama",
    max_length: int = 64,
) -> None:
    """Measure read + decode + collate throughput of the data path and write CSV + plot.

    Args:
        out_dir: where ``data_throughput.csv`` and ``data_throughput.png`` go (benchmarks/results is the
            tracked copy: name it to update it).
        work_dir: where the generated shard sets are kept (reused by later runs).
        samples: samples of the 64 px demo set (one epoch per repeat).
        samples_512: samples of the 512 px set.
        batch_size: batch size per step.
        workers: DataLoader worker counts to compare.
        repeats: epochs timed per configuration.
        model: backbone whose Collator (processor) prepares the batches.
        max_length: maximum text tokens per side.
    """
    import logging

    import lightning
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mme5.data import ShardDataModule, ShardSet
    from mme5.demo import DemoCorpusError, ensure_demo_corpus

    logging.getLogger("mme5").setLevel(logging.WARNING)
    work = Path(work_dir)
    sets = {"demo 64px": (64, samples), "demo 512px": (512, samples_512)}
    device = _cpu_name()
    rows: list[dict] = []
    rates: dict[tuple[str, int], float] = {}
    spread: dict[tuple[str, int], tuple[float, float]] = {}
    first_batch = None
    for label, (size, n) in sets.items():
        t = time.perf_counter()
        root = work / f"demo{size}-{n}"
        kwargs = {"seed": 0, "train_samples": n, "image_size": size, "eval_rows": 4, "xtd_pool": 10}
        try:
            paths = ensure_demo_corpus(root, **kwargs)
        except DemoCorpusError:  # made by another demo version: this cache folder is ours to redo
            shutil.rmtree(root)
            paths = ensure_demo_corpus(root, **kwargs)
        print(f"{label}: corpus ready in {time.perf_counter() - t:.1f}s ({paths.train_pattern})")
        for w in workers:
            values, worker_ms, main_ms = [], [], []
            for r in range(repeats):
                dm = ShardDataModule(
                    model=model,
                    train=[ShardSet(paths.train_pattern, name=label)],
                    batch_size=batch_size,
                    num_workers=w,
                    max_length=max_length,
                    seed=r,
                )
                dm.setup("fit")
                rate, wcpu, mcpu = _epoch_rate(dm, batch_size, warmup=max(1, w))
                values.append(rate)
                worker_ms.append(wcpu)
                main_ms.append(mcpu)
                if first_batch is None:
                    first_batch = next(iter(dm.loader(rank=0, world_size=1)))
            med, p20, p80 = _quantiles(values)
            rates[(label, w)] = med
            spread[(label, w)] = (med - p20, p80 - med)
            rows.append(
                {
                    "what": "data read+decode+collate",
                    "provider": f"{w} worker{'s' * (w > 1)}",
                    "size": label,
                    "unit": "samples/s",
                    "median": round(med, 1),
                    "p20": round(p20, 1),
                    "p80": round(p80, 1),
                    "worker_cpu_ms_per_sample": round(statistics.median(worker_ms), 2),
                    "main_cpu_ms_per_batch": round(statistics.median(main_ms), 2),
                    "load_avg_1min": round(os.getloadavg()[0], 1),
                    "device": device,
                    "version": f"lightning {lightning.__version__}",
                }
            )
            print(
                f"{label} workers={w}: {med:.1f} samples/s (p20 {p20:.1f}, p80 {p80:.1f}); worker CPU "
                f"{statistics.median(worker_ms):.2f} ms/sample, "
                f"main CPU {statistics.median(main_ms):.2f} ms/batch, "
                f"load average {os.getloadavg()[0]:.1f}"
            )
    step = _train_step_rate(model, first_batch, repeats=8) if first_batch is not None else None
    if step is not None:
        rows.append(
            {
                "what": "demo training step (fwd+bwd)",
                "provider": "EmbeddingModule",
                "size": "demo 64px",
                "unit": "samples/s",
                "median": round(step, 1),
                "p20": "",
                "p80": "",
                "worker_cpu_ms_per_sample": "",
                "main_cpu_ms_per_batch": "",
                "load_avg_1min": round(os.getloadavg()[0], 1),
                "device": device,
                "version": f"lightning {lightning.__version__}",
            }
        )
        most = max(workers)
        print(
            f"demo training step: {step:.1f} samples/s; data/step ratio with {most} "
            f"worker{'s' * (most != 1)}: {rates.get(('demo 64px', most), float('nan')) / step:.1f}x"
        )
    for label in sets:
        if (label, 1) in rates and (label, 2) in rates:
            print(f"{label}: 2 workers / 1 worker = {rates[(label, 2)] / rates[(label, 1)]:.2f}x")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "data_throughput.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / len(workers)
    for j, w in enumerate(workers):
        xs = [i + j * width for i in range(len(sets))]
        err = [[spread[(label, w)][0] for label in sets], [spread[(label, w)][1] for label in sets]]
        ax.bar(
            xs,
            [rates[(label, w)] for label in sets],
            width,
            yerr=err,
            capsize=3,
            label=f"{w} worker{'s' * (w > 1)}",
        )
    if step is not None:
        ax.axhline(step, color="k", ls="--", lw=1, label="demo training step")
    ax.set_xticks([i + width * (len(workers) - 1) / 2 for i in range(len(sets))], list(sets))
    ax.set_ylabel("samples / s (median, p20-p80)")
    ax.set_title(f"mme5 data path, batch {batch_size}\n{device}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "data_throughput.png", dpi=120)
    print(f"wrote {out / 'data_throughput.csv'} and {out / 'data_throughput.png'}")


if __name__ == "__main__":
    import sys

    from mme5 import logs
    from mme5.cli.parsing import run_function
    from mme5.errors import run_command

    verbose, argv = logs.take_verbose(sys.argv[1:])
    logs.configure(True if verbose else None)
    prog = "tools/bench_data.py"
    sys.exit(run_command(prog, lambda: run_function(main, argv, prog)))
