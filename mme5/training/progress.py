"""Training progress on the console, true to the run: ``mme5 fit`` installs one of these by default.

- On a terminal (a TTY), :class:`StepBar`: one bar over the whole run, counted in optimiser steps, whose
  total and ETA respect ``max_steps`` (and ``max_epochs``: Lightning's ``estimated_stepping_batches``),
  with the loss, samples/s and the learning rate beside it.
- Without a TTY (SLURM, a pipe, CI), :class:`ProgressLines`: a plain line every ``every_n_seconds`` (and
  at the first and last step)::

      step 120/1496 (8.0%) | epoch 0 | 45.2 samples/s | train/loss 2.3141 | lr 4.90e-04 | 2m10s, ETA 24m51s

``MME5_PROGRESS=bar`` or ``lines`` chooses one regardless of the console; a ``trainer.callbacks`` entry
that is a Lightning progress bar, or ``trainer.enable_progress_bar: false``, replaces it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

#: ``bar`` or ``lines``: the progress display regardless of whether stdout is a terminal.
ENV = "MME5_PROGRESS"


def format_duration(seconds: float) -> str:
    """``3h02m``, ``12m05s``, ``42s`` (``?`` when unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def batch_samples(batch: Any) -> int:
    """Samples (queries) in one batch on one rank: the collator's ``ids``, else Lightning's guess."""
    if isinstance(batch, dict) and isinstance(batch.get("ids"), (list, tuple)):
        return len(batch["ids"])
    try:
        from lightning.pytorch.utilities.data import extract_batch_size

        return int(extract_batch_size(batch))
    except Exception:  # a batch Lightning cannot size: samples/s is then not shown
        return 0


def learning_rate(trainer: pl.Trainer) -> float | None:
    """The first parameter group's learning rate of the first optimiser (what the schedule set last)."""
    optimizers = getattr(trainer, "optimizers", None) or []
    if not optimizers or not optimizers[0].param_groups:
        return None
    return float(optimizers[0].param_groups[0]["lr"])


def total_steps(trainer: pl.Trainer) -> float:
    """Optimiser steps the run will make (``max_steps`` or the epochs' worth, whichever ends first)."""
    try:
        return float(trainer.estimated_stepping_batches)
    except Exception:  # no length known (an iterable without __len__ and no max_steps)
        return math.inf


class _Meter:
    """Samples and steps since the start of training, for samples/s and the ETA."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.start_step = 0
        self.first_step_time: float | None = None
        self.first_step = 0
        self.samples = 0
        self.window_time = self.start
        self.window_samples = 0

    def reset(self, step: int) -> None:
        self.__init__()
        self.start_step = step

    def add(self, samples: int, step: int) -> None:
        self.samples += samples
        self.window_samples += samples
        if self.first_step_time is None and step > self.start_step:
            self.first_step_time, self.first_step = time.perf_counter(), step

    def rate(self) -> float:
        """Samples/s since the last call (the recent throughput)."""
        now = time.perf_counter()
        elapsed = now - self.window_time
        value = self.window_samples / elapsed if elapsed > 0 and self.window_samples else math.nan
        self.window_time, self.window_samples = now, 0
        return value

    def eta(self, step: int, total: float) -> float:
        """Seconds left, from the pace of the steps after the first (which includes warm-up)."""
        if self.first_step_time is None or not math.isfinite(total) or step <= self.first_step:
            return math.nan
        pace = (time.perf_counter() - self.first_step_time) / (step - self.first_step)
        return max(0.0, (total - step) * pace)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _metrics_text(metrics: dict[str, Any]) -> list[str]:
    parts = []
    for key, value in metrics.items():
        if key == "v_num":
            continue
        try:
            parts.append(f"{key} {float(value):.4f}")
        except (TypeError, ValueError):
            parts.append(f"{key} {value}")
    return parts


class ProgressLines(ProgressBar):
    """Periodic progress lines for a console without a TTY: step / total, epoch, samples/s (all ranks),
    the progress-bar metrics (the loss), learning rate, elapsed time and ETA."""

    def __init__(self, every_n_seconds: float = 30.0, every_n_steps: int | None = None) -> None:
        """
        Args:
            every_n_seconds: at most one line per this many seconds (0: a line every step).
            every_n_steps: also a line every this many steps (None: by time only).
        """
        super().__init__()
        if every_n_seconds < 0 or (every_n_steps is not None and every_n_steps < 1):
            from mme5.errors import ConfigError

            raise ConfigError(
                f"ProgressLines: every_n_seconds >= 0 and every_n_steps >= 1 or None, got "
                f"{every_n_seconds}, {every_n_steps}"
            )
        self.every_n_seconds = every_n_seconds
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._meter = _Meter()
        self._last_print = -math.inf
        self._last_step = -1
        self._total = math.inf
        self.stream: TextIO = sys.stdout

    # ProgressBar's interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._meter.reset(trainer.global_step)
        self._last_print = time.perf_counter()
        self._last_step = trainer.global_step
        self._total = total_steps(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        self._meter.add(batch_samples(batch) * trainer.world_size, step)
        if not self.is_enabled or step == self._last_step:
            return
        now = time.perf_counter()
        due = now - self._last_print >= self.every_n_seconds
        if self.every_n_steps is not None and step % self.every_n_steps == 0:
            due = True
        if due or step == self._meter.start_step + 1 or step >= self._total:
            self._print(trainer, pl_module, step)
            self._last_print = now
        self._last_step = step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.is_enabled:
            return
        if trainer.global_step != self._last_step:
            self._print(trainer, pl_module, trainer.global_step)
        done = trainer.global_step - self._meter.start_step
        rate = self._meter.samples / self._meter.elapsed() if self._meter.elapsed() > 0 else math.nan
        print(
            f"training done: {done} step(s) in {format_duration(self._meter.elapsed())} "
            f"({rate:.1f} samples/s overall)",
            file=self.stream,
            flush=True,
        )

    def line(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> str:
        """The progress line at ``step``."""
        total = self._total
        head = (
            f"step {step}/{int(total)} ({100 * step / total:.1f}%)"
            if math.isfinite(total)
            else f"step {step}"
        )
        parts = [head, f"epoch {trainer.current_epoch}"]
        rate = self._meter.rate()
        if math.isfinite(rate):
            parts.append(f"{rate:.1f} samples/s")
        parts += _metrics_text(self.get_metrics(trainer, pl_module))
        lr = learning_rate(trainer)
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        eta = self._meter.eta(step, total)
        parts.append(
            f"{format_duration(self._meter.elapsed())}"
            + (f", ETA {format_duration(eta)}" if math.isfinite(eta) else "")
        )
        return " | ".join(parts)

    def _print(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        print(self.line(trainer, pl_module, step), file=self.stream, flush=True)


class StepBar(TQDMProgressBar):
    """Lightning's tqdm bar over the whole run in optimiser steps (total and ETA respect ``max_steps``),
    with samples/s and the learning rate beside the loss."""

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self._meter = _Meter()
        self._rate = math.nan
        self._rate_time = 0.0

    def on_train_start(self, *args: Any) -> None:
        super().on_train_start(*args)
        trainer = args[0]
        self._meter.reset(trainer.global_step)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        total = total_steps(trainer)
        bar.reset(total=int(total) if math.isfinite(total) else None)
        bar.initial = 0
        bar.n = trainer.global_step
        bar.set_description(f"Epoch {trainer.current_epoch}")
        bar.refresh()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        self._meter.add(batch_samples(batch) * trainer.world_size, step)
        bar = self.train_progress_bar
        if bar is None or not self._should_update(step, bar.total):
            return
        if not bar.disable:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics: dict[str, Any] = dict(super().get_metrics(trainer, pl_module))
        metrics.pop("v_num", None)
        now = time.perf_counter()
        if now - self._rate_time >= 1.0:  # a steadier number than per batch
            self._rate, self._rate_time = self._meter.rate(), now
        if math.isfinite(self._rate):
            metrics["samples/s"] = f"{self._rate:.1f}"
        lr = learning_rate(trainer)
        if lr is not None:
            metrics["lr"] = f"{lr:.2e}"
        return metrics


def default_progress_bar(stream: TextIO | None = None) -> ProgressBar:
    """:class:`StepBar` on a terminal, :class:`ProgressLines` otherwise (``MME5_PROGRESS`` overrides)."""
    choice = os.environ.get(ENV, "").strip().lower()
    if choice not in ("bar", "lines"):
        out = stream if stream is not None else sys.stdout
        choice = "bar" if getattr(out, "isatty", lambda: False)() else "lines"
    return StepBar() if choice == "bar" else ProgressLines()
