"""Speed and memory of the InfoNCE implementations: CSV rows + PNG plots under runs/bench/ (``--out``
names another CSV, e.g. benchmarks/results/kernels.csv to update the tracked results on purpose).

Example (CPU target):
    python tools/bench_kernels.py --sizes '[8192]' --dims '[1024]' --dtype float32
Example (GPU):
    python tools/bench_kernels.py --sizes '[4096, 16384, 32768]' --dims '[4096]' --dtype bfloat16

Every provider gets fresh inputs; time is the median (and 20th/80th percentiles) of ``repeats`` runs
after ``warmup`` runs; peak memory is the most memory allocated beyond the inputs during one run
(CUDA: the caching allocator's peak statistics; CPU: the allocator's events recorded by the PyTorch
profiler, summed in order). Achieved TFLOP/s counts the nominal GEMM work: 2BND forward, 6BND
backward, 8BND for a full step.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mme5.kernels import InfoNCEConfig, infonce
from mme5.kernels.config import default_config, resolve_config, with_overrides

KERNEL = "infonce"
FIELDS = [
    "kernel",
    "provider",
    "mode",
    "metric",
    "unit",
    "x_name",
    "x",
    "values",
    "dtype",
    "B",
    "N",
    "D",
    "symmetric",
    "device",
    "torch",
    "triton",
    "timestamp",
]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
NOMINAL_FLOPS = {"forward": 2, "backward": 6, "full": 8}  # times B*N*D
PROVIDERS = ("reference", "compile", "chunked", "triton", "triton-recompute", "triton-fp32", "inf_cl")
KERNEL_PROVIDERS = ("chunked", "triton", "triton-recompute", "triton-fp32")  # mme5.kernels with a config


def _reference_loss(q, c, labels, t, symmetric):
    return infonce(q, c, labels, t, symmetric=symmetric, impl="reference")


_compiled_reference = None


def _kernel_setting(provider: str, config: InfoNCEConfig | None) -> tuple[str, InfoNCEConfig]:
    """``impl`` and configuration of a kernel provider: ``config`` (None: the defaults) with the
    variant's switch set (triton-recompute: no one-pass path; triton-fp32: both fp32 one-pass switches)."""
    cfg = resolve_config(config)
    if provider == "triton-recompute":
        return "triton", dataclasses.replace(cfg, one_pass=False)
    if provider == "triton-fp32":
        fp32 = dataclasses.replace(cfg.onepass, fp32_scores=True, fp32_grad_accumulator=True)
        return "triton", dataclasses.replace(cfg, onepass=fp32)
    return provider, cfg


def _loss_fn(provider: str, config: InfoNCEConfig | None = None) -> Callable:
    """The loss of ``provider``; kernel providers run with ``config`` (see ``_kernel_setting``)."""
    global _compiled_reference
    if provider == "reference":
        return _reference_loss
    if provider == "compile":
        if _compiled_reference is None:
            _compiled_reference = torch.compile(_reference_loss)
        return _compiled_reference
    if provider in KERNEL_PROVIDERS:
        impl, cfg = _kernel_setting(provider, config)
        return lambda q, c, labels, t, symmetric: infonce(
            q, c, labels, t, symmetric=symmetric, impl=impl, config=cfg
        )
    if provider == "inf_cl":
        from inf_cl import cal_inf_loss  # the Inf-CL package, when installed

        def inf_cl_loss(q, c, labels, t, symmetric):
            if symmetric:
                return 0.5 * (
                    cal_inf_loss(q, c, labels=labels, scale=1.0 / t)
                    + cal_inf_loss(c, q, labels=labels, scale=1.0 / t)
                )
            return cal_inf_loss(q, c, labels=labels, scale=1.0 / t).mean()

        return inf_cl_loss
    raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")


def _provider_runs_here(provider: str, device: torch.device) -> str | None:
    """None if the provider can run on this device, else why not."""
    if provider.startswith("triton") and device.type != "cuda":
        return f"{provider} needs CUDA (the interpreter is for tests, not timing)"
    if provider == "inf_cl":
        if device.type != "cuda":
            return "Inf-CL needs CUDA"
        try:
            import inf_cl  # noqa: F401
        except ImportError:
            return "the inf_cl package is not installed"
    return None


def peer_disagreement(
    provider: str, device: torch.device, dtype: torch.dtype, size: int = 512, dim: int = 256
) -> float:
    """Relative difference of a provider's loss and gradients from the reference's on small random inputs
    (a peer's time only compares if it computes the same loss)."""
    g = torch.Generator(device=device).manual_seed(1)
    q0 = torch.nn.functional.normalize(torch.randn(size, dim, device=device, generator=g), dim=1).to(dtype)
    c0 = torch.nn.functional.normalize(torch.randn(size, dim, device=device, generator=g), dim=1).to(dtype)
    labels = torch.randperm(size, device=device, generator=g)
    t = torch.tensor(0.05, device=device)
    results = []
    for fn in (_loss_fn(provider), _reference_loss):
        q, c = q0.clone().requires_grad_(), c0.clone().requires_grad_()
        loss = fn(q, c, labels, t, False)
        loss.backward()
        results.append((loss.detach().float(), q.grad.float(), c.grad.float()))
    return max(float((a - b).norm() / b.norm().clamp_min(1e-12)) for a, b in zip(*results, strict=False))


class _Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], None]) -> float:
        """Milliseconds of one call of fn."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def _cpu_peak_bytes(fn: Callable[[], None]) -> int:
    """Peak of live CPU-allocator bytes while fn runs, from the profiler's allocation/free events."""
    from torch.profiler import ProfilerActivity, profile

    from mme5.logs import quiet_native_output

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with quiet_native_output():  # the profiler prints profiler_start / profiler_stop on every use
        prof.__enter__()
    try:
        fn()
    finally:
        with quiet_native_output():
            prof.__exit__(None, None, None)
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for e in events:
        live += e.nbytes()  # > 0 for an allocation, < 0 for a free
        peak = max(peak, live)
    return peak


def _peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return _cpu_peak_bytes(fn)


def _make_step(
    provider: str,
    mode: str,
    B: int,
    N: int,
    D: int,
    dtype: torch.dtype,
    device: torch.device,
    symmetric: bool,
    config: InfoNCEConfig | None = None,
) -> Callable[[], None]:
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(B, D, device=device, generator=g), dim=1).to(dtype)
    c = torch.nn.functional.normalize(torch.randn(N, D, device=device, generator=g), dim=1).to(dtype)
    q.requires_grad_(mode != "forward")
    c.requires_grad_(mode != "forward")
    labels = torch.arange(B, device=device) % N
    t = torch.tensor(0.02, device=device)
    loss_fn = _loss_fn(provider, config)
    if mode == "forward":

        def step():
            with torch.no_grad():
                loss_fn(q, c, labels, t, symmetric)

        return step
    if mode == "full":

        def step():
            loss_fn(q, c, labels, t, symmetric).backward()
            q.grad = c.grad = None

        return step
    # backward only: the forward runs untimed before each measured call
    state = {}

    def prepare():
        state["loss"] = loss_fn(q, c, labels, t, symmetric)

    def step():
        state.pop("loss").backward()
        q.grad = c.grad = None

    step.prepare = prepare
    return step


def provider_runs(
    providers: Sequence[str], onepass: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
) -> list[tuple[str, str, InfoNCEConfig | None]]:
    """(label, provider, config) per timed provider. ``onepass`` holds overrides of the default
    OnePassConfig, one mapping or a list of candidates to sweep; triton and triton-fp32 run once per
    candidate, labelled with it ("triton[block_m=8,block_n=2048]"), the other providers once with the
    defaults. Every candidate is checked first (an unknown field or bad value is a ConfigError)."""
    candidates = [onepass] if isinstance(onepass, Mapping) else list(onepass or [])
    configs = []
    for overrides in candidates:
        onepass_cfg = with_overrides(default_config().onepass, overrides, "--onepass")
        suffix = "[" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) + "]"
        configs.append((suffix, InfoNCEConfig(onepass=onepass_cfg)))
    runs: list[tuple[str, str, InfoNCEConfig | None]] = []
    for provider in providers:
        if provider in ("triton", "triton-fp32") and configs:
            runs.extend((provider + suffix, provider, config) for suffix, config in configs)
        else:
            runs.append((provider, provider, None))
    return runs


def _measure(step, device, warmup: int, repeats: int) -> tuple[list[float], int]:
    timer = _Timer(device)
    prepare = getattr(step, "prepare", None)
    times = []
    for i in range(warmup + repeats):
        if prepare:
            prepare()
        ms = timer(step)
        if i >= warmup:
            times.append(ms)
    if prepare:
        prepare()
    peak = _peak_bytes(step, device)
    return times, peak


def _quantile(values: list[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p * 100) - 1]


def measure_matmul_rate(
    device: torch.device, dtype: torch.dtype, size: int = 8192, repeats: int = 20
) -> float:
    """Measured dense matmul rate (TFLOP/s, median) for square products of this size and dtype."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    timer = _Timer(device)
    for _ in range(3):
        a @ b
    times = [timer(lambda: a @ b) for _ in range(repeats)]
    return 2 * size**3 / (statistics.median(times) * 1e-3) / 1e12


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(
    providers: Sequence[str] = ("reference", "compile", "chunked", "triton", "inf_cl"),
    modes: Sequence[str] = ("full",),
    sizes: Sequence[int] = (2048, 4096),
    dims: Sequence[int] = (512,),
    dtype: str = "float32",
    symmetric: bool = False,
    device: str = "auto",
    warmup: int = 1,
    repeats: int = 5,
    matmul_rate: bool = False,
    skip_reference_above: int = 65536,
    onepass: dict | list[dict] | None = None,
    out: Path = Path("runs/bench/kernels.csv"),
    plot: bool = True,
) -> list[dict]:
    """Benchmark InfoNCE providers over B=N sizes and embedding sizes D; append CSV rows and plot.

    Args:
        providers: any of reference (eager), compile (reference under torch.compile), chunked, triton
            (one-pass for the row loss with gradients, else the fused kernels), triton-recompute (the fused
            forward / recompute-backward kernels for every case), triton-fp32 (one-pass with fp32 scores
            and an fp32 grad_c master), inf_cl (Inf-CL's loss, when installed); providers that cannot run
            on the device are skipped with a printed reason.
        modes: forward (no grad), backward (timed alone after an untimed forward), full (both).
        sizes: B = N values to sweep.
        dims: embedding sizes D to sweep.
        dtype: float32, float16 or bfloat16.
        symmetric: benchmark the symmetric loss.
        device: "auto" (cuda if available), "cuda" or "cpu".
        warmup: untimed runs per point.
        repeats: timed runs per point (median, p20, p80 are reported).
        matmul_rate: also measure the dense matmul rate of this dtype (one "matmul" row).
        skip_reference_above: do not run reference/compile when B = N exceeds this (they materialise B x N).
        onepass: overrides of the one-pass path's default OnePassConfig (kernels/config.py), e.g.
            '{"block_m": 8, "block_n": 2048, "chunk_fraction": 0.02}', or a list of such candidates to
            sweep; triton and triton-fp32 run once per candidate, their rows labelled with it (provider
            "triton[block_m=8,...]").
        out: CSV file the rows are appended to; plots are written next to it (the default is untracked;
            benchmarks/results/kernels.csv is the tracked one).
        plot: draw PNG plots of time and peak memory per D and mode.
    """
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    torch_dtype = DTYPES[dtype]
    import triton

    runs = provider_runs(providers, onepass)
    common = {
        "kernel": KERNEL,
        "dtype": dtype,
        "symmetric": symmetric,
        "device": _device_name(dev),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    rows: list[dict] = []
    peer_checked: dict[str, float] = {}
    if matmul_rate:
        rate = measure_matmul_rate(dev, torch_dtype)
        print(f"matmul {dtype} 8192^3: {rate:.1f} TFLOP/s on {common['device']}")
        rows.append(
            dict(
                common,
                provider="torch.mm",
                mode="matmul",
                metric="tflops",
                unit="TFLOP/s",
                x_name="M=N=K",
                x=8192,
                values=json.dumps([rate]),
                B=8192,
                N=8192,
                D=8192,
            )
        )
    for D in dims:
        for size in sizes:
            for mode in modes:
                for name, provider, config in runs:
                    why = _provider_runs_here(provider, dev)
                    if why is None and provider in ("reference", "compile") and size > skip_reference_above:
                        why = f"B=N={size} is above skip_reference_above={skip_reference_above}"
                    if why is None and provider == "inf_cl":
                        if provider not in peer_checked:
                            peer_checked[provider] = peer_disagreement(provider, dev, torch_dtype)
                            print(
                                f"{provider}: loss and gradients differ from the reference by "
                                f"{peer_checked[provider]:.2e} (relative)"
                            )
                        if peer_checked[provider] > 2e-2:
                            why = (
                                f"it computes another loss (relative difference {peer_checked[provider]:.2e})"
                            )
                    if why:
                        print(f"skip {name} {mode} B=N={size} D={D}: {why}")
                        continue
                    try:
                        step = _make_step(provider, mode, size, size, D, torch_dtype, dev, symmetric, config)
                        times, peak = _measure(step, dev, warmup, repeats)
                    except torch.OutOfMemoryError as err:
                        reason = str(err).splitlines()[0]
                        print(f"skip {name} {mode} B=N={size} D={D}: out of memory ({reason})")
                        continue
                    finally:
                        step = None
                        if dev.type == "cuda":
                            torch.cuda.empty_cache()
                    med, p20, p80 = statistics.median(times), _quantile(times, 0.2), _quantile(times, 0.8)
                    tflops = NOMINAL_FLOPS[mode] * size * size * D / (med * 1e-3) / 1e12
                    point = dict(common, provider=name, mode=mode, x_name="B=N", x=size, B=size, N=size, D=D)
                    rows.append(dict(point, metric="time", unit="ms", values=json.dumps([med, p20, p80])))
                    rows.append(
                        dict(point, metric="peak_memory", unit="MiB", values=json.dumps([peak / 2**20]))
                    )
                    rows.append(dict(point, metric="tflops", unit="TFLOP/s", values=json.dumps([tflops])))
                    print(
                        f"{name:16s} {mode:8s} B=N={size:6d} D={D:5d} {dtype}: {med:9.2f} ms "
                        f"[{p20:.2f}, {p80:.2f}]  peak +{peak / 2**20:9.1f} MiB  {tflops:7.2f} TFLOP/s"
                    )
    out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not out.exists()
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        writer.writerows(rows)
    print(f"appended {len(rows)} rows to {out}")
    if plot:
        for path in plot_results(out):
            print(f"wrote {path}")
    return rows


def plot_results(csv_path: Path) -> list[Path]:
    """One PNG per (device, dtype, D, mode): time and peak memory against B=N, one line per provider."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as f:
        rows = [r for r in csv.DictReader(f) if r["kernel"] == KERNEL and r["mode"] != "matmul"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["dtype"], r["D"], r["mode"], r["symmetric"]), []).append(r)
    written = []
    for (device, dtype, D, mode, symmetric), items in sorted(groups.items()):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, metric in zip(axes, ("time", "peak_memory"), strict=False):
            latest: dict[tuple, dict] = {}
            for r in items:
                if r["metric"] == metric:
                    latest[(r["provider"], int(r["x"]))] = r  # the last run of a point wins
            for provider in sorted({p for p, _ in latest}):
                pts = sorted((x, json.loads(r["values"])) for (p, x), r in latest.items() if p == provider)
                xs = [x for x, _ in pts]
                ax.plot(xs, [v[0] for _, v in pts], marker="o", label=provider)
                if metric == "time":
                    ax.fill_between(xs, [v[1] for _, v in pts], [v[2] for _, v in pts], alpha=0.2)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("B = N")
            ax.set_ylabel("median time (ms)" if metric == "time" else "peak memory beyond inputs (MiB)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        sym = ", symmetric" if symmetric == "True" else ""
        fig.suptitle(f"InfoNCE {mode}, {dtype}, D={D}{sym} on {device}", fontsize=10)
        fig.tight_layout()
        slug = "".join(ch if ch.isalnum() else "-" for ch in device.split("(")[0].strip().lower()).strip("-")
        path = (
            csv_path.parent
            / f"{KERNEL}_{slug}_{dtype}_D{D}_{mode}{'_sym' if symmetric == 'True' else ''}.png"
        )
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    from mme5 import logs
    from mme5.cli.parsing import run_function
    from mme5.errors import run_command

    verbose, argv = logs.take_verbose(sys.argv[1:])  # --verbose: dynamo and profiler output too
    logs.configure(True if verbose else None)
    prog = "tools/bench_kernels.py"
    sys.exit(run_command(prog, lambda: run_function(main, argv, prog=prog)))
