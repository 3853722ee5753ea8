"""mme5.training.progress: periodic lines without a TTY, one bar over the run on a terminal; both count
optimiser steps up to max_steps and show samples/s and the learning rate."""

from __future__ import annotations

import io
import re

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from mme5.training.progress import (
    ProgressLines,
    StepBar,
    default_progress_bar,
    format_duration,
)


class Tiny(pl.LightningModule):
    """A linear regression whose batches are collator-like dicts (``ids`` sizes them)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(batch["x"]), batch["y"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["ids"]))
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _data(batches: int, batch_size: int = 3) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batches * batch_size, 4, generator=g)
    rows = [{"x": x[i], "y": x[i, :1], "id": str(i)} for i in range(len(x))]

    def collate(items):
        return {
            "x": torch.stack([r["x"] for r in items]),
            "y": torch.stack([r["y"] for r in items]),
            "ids": [r["id"] for r in items],
        }

    return DataLoader(rows, batch_size=batch_size, collate_fn=collate)


def _fit(bar, max_steps: int, batches: int, accumulate: int = 1, max_epochs: int = 10) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        max_epochs=max_epochs,
        accumulate_grad_batches=accumulate,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), _data(batches))
    return trainer


def test_lines_count_steps_to_max_steps_with_rate_loss_lr_and_eta():
    bar = ProgressLines(every_n_seconds=0)
    bar.stream = io.StringIO()
    _fit(bar, max_steps=7, batches=4)  # two epochs of 4 batches, stopped by max_steps at 7
    lines = bar.stream.getvalue().splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [int(re.match(r"step (\d+)/7 ", s).group(1)) for s in steps] == list(range(1, 8))
    last = steps[-1]
    assert "(100.0%)" in last and "epoch 1" in last and "train/loss " in last
    assert re.search(r"\d+\.\d samples/s", last)
    lrs = [float(re.search(r"\| lr ([0-9.e+-]+) \|", s).group(1)) for s in steps]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 0.1  # the schedule's value at each step
    assert "ETA 0s" in last
    assert lines[-1].startswith("training done: 7 step(s) in ")


def test_lines_by_time_print_the_first_and_last_step_only_when_fast():
    bar = ProgressLines(every_n_seconds=3600)
    bar.stream = io.StringIO()
    _fit(bar, max_steps=-1, batches=5, max_epochs=2)
    steps = [line.split(" |")[0] for line in bar.stream.getvalue().splitlines() if line.startswith("step")]
    assert steps == ["step 1/10 (10.0%)", "step 10/10 (100.0%)"]


def test_lines_count_optimizer_steps_under_gradient_accumulation():
    bar = ProgressLines(every_n_seconds=0)
    bar.stream = io.StringIO()
    trainer = _fit(bar, max_steps=3, batches=8, accumulate=2)
    steps = [line.split(" |")[0] for line in bar.stream.getvalue().splitlines() if line.startswith("step")]
    assert trainer.global_step == 3 and steps == ["step 1/3 (33.3%)", "step 2/3 (66.7%)", "step 3/3 (100.0%)"]


def test_bar_total_and_position_are_optimizer_steps_of_the_whole_run():
    bar = StepBar()
    seen = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            seen.append((bar.train_progress_bar.n, bar.train_progress_bar.total))

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=6,
        callbacks=[bar, Watch()],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), _data(4))
    assert seen == [(n, 6) for n in range(1, 7)]  # not reset at the second epoch; total = max_steps
    metrics = bar.get_metrics(trainer, trainer.lightning_module)
    assert metrics["lr"] == f"{trainer.optimizers[0].param_groups[0]['lr']:.2e}" and "train/loss" in metrics


def test_the_console_chooses_the_display(monkeypatch):
    monkeypatch.delenv("MME5_PROGRESS", raising=False)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(default_progress_bar(io.StringIO()), ProgressLines)  # a pipe, a SLURM log
    assert isinstance(default_progress_bar(Terminal()), StepBar)
    monkeypatch.setenv("MME5_PROGRESS", "lines")
    assert isinstance(default_progress_bar(Terminal()), ProgressLines)


@pytest.mark.parametrize(("seconds", "text"), [(42.2, "42s"), (725, "12m05s"), (10920, "3h02m"), (-1, "?")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
