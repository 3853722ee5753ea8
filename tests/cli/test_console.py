"""What the console shows (issue #17, items 3-4): third-party noise filtered at its source unless
``--verbose``; a fit without a TTY reports periodic progress lines with samples/s and the learning rate."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from mme5 import logs
from tests.helpers import REPO


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.delenv(logs.ENV, raising=False)
    yield logs.configure(False)
    logs.configure(False)


def _emit(name: str, msg: str, *args) -> logging.LogRecord | None:
    logger = logging.getLogger(name)
    record = logger.makeRecord(name, logging.WARNING, __file__, 1, msg, args, None)
    return record if logger.filter(record) else None


def test_quiet_filters_at_the_source_and_verbose_brings_everything_back(quiet, monkeypatch):
    assert quiet is False and os.environ[logs.ENV] == "0"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    tip = "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]"
    assert _emit("lightning.pytorch.utilities.rank_zero", tip) is None
    assert _emit("lightning.pytorch.utilities.rank_zero", "GPU available: False") is not None
    cast = "MatMul8bitLt: inputs will be cast from %s to float16 during quantization"
    first = _emit("bitsandbytes.autograd._functions", cast, "torch.float32")
    assert first is not None and "repeats hidden" in first.getMessage()
    assert all(_emit("bitsandbytes.autograd._functions", cast, "torch.float32") is None for _ in range(50))
    assert logging.getLogger("torch._dynamo").getEffectiveLevel() == logging.ERROR
    hint = "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ..."
    assert _emit("bitsandbytes.backends.cpu.ops", hint, "No module named 'kernels'") is None

    def csv_fallback_shown() -> bool:
        with warnings.catch_warnings(record=True) as seen:
            message = "Starting from v1.9.0, `tensorboardX` has been removed as a dependency"
            warnings.warn(message, stacklevel=1)
        return bool(seen)

    assert not csv_fallback_shown()
    monkeypatch.setenv(logs.ENV, "1")
    assert logs.configure() is True
    assert csv_fallback_shown()
    assert _emit("lightning.pytorch.utilities.rank_zero", tip) is not None
    assert _emit("bitsandbytes.autograd._functions", cast, "torch.float32") is not None
    assert logging.getLogger("torch._dynamo").getEffectiveLevel() != logging.ERROR


def test_take_verbose():
    assert logs.take_verbose(["--verbose", "fit", "--config", "x"]) == (True, ["fit", "--config", "x"])
    assert logs.take_verbose(["fit", "--verbose"]) == (True, ["fit"])
    assert logs.take_verbose(["fit", "--", "--verbose"]) == (False, ["fit", "--", "--verbose"])


def test_profiler_lines_are_silenced_unless_verbose(tmp_path):
    script = (
        "import torch, mme5.logs as L\n"
        "L.configure()\n"
        "with L.quiet_native_output():\n"
        "    cpu = [torch.profiler.ProfilerActivity.CPU]\n"
        "    with torch.profiler.profile(activities=cpu, profile_memory=True):\n"
        "        torch.randn(8) * 2\n"
        "print('done')\n"
    )
    for verbose, shown in (("0", False), ("1", True)):
        env = dict(os.environ, MME5_VERBOSE=verbose)
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, check=True
        )
        assert proc.stdout == "done\n"
        assert ("profiler_start" in proc.stderr) is shown, proc.stderr


def _short_fit_config(tmp_path: Path, max_steps: int) -> Path:
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    trainer = config["trainer"]
    trainer.update(max_steps=max_steps, log_every_n_steps=1, default_root_dir=str(tmp_path / "run"))
    trainer["callbacks"] = [trainer["callbacks"][0]]  # the checkpoint only: no evaluation here
    config["data"].update(batch_size=4, num_workers=0)
    config["data"]["demo"].update(root=str(tmp_path / "demo"), train_samples=64)
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_fit_through_a_pipe_prints_progress_lines_and_logs_the_learning_rate(tmp_path):
    config = _short_fit_config(tmp_path, max_steps=5)
    env = {k: v for k, v in os.environ.items() if k not in (logs.ENV, "MME5_PROGRESS")}
    proc = subprocess.run(
        [sys.executable, "-m", "mme5.cli", "fit", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    steps = [line for line in proc.stdout.splitlines() if line.startswith("step ")]
    assert steps and steps[0].startswith("step 1/5 (20.0%) | epoch 0 | ")
    assert steps[-1].startswith("step 5/5 (100.0%)")
    assert all("samples/s" in s and "train/loss" in s and "| lr " in s for s in steps[1:])
    assert "training done: 5 step(s)" in proc.stdout
    assert "💡" not in out and "Loading weights" not in out and "%|" not in out  # no tip, no bars
    assert "tensorboardX" not in out and "to estimate number of stepping batches" not in out
    metrics = next((tmp_path / "run" / "lightning_logs").rglob("metrics.csv")).read_text().splitlines()
    assert "lr-AdamW/pg1" in metrics[0].split(",")  # one column per parameter group (weight decay or not)


def test_the_python_loader_draws_no_loading_bar_unless_verbose(tmp_path):
    """``mme5.load`` (the quick start's Python line) prints no "Loading weights" bar; MME5_VERBOSE=1
    brings it back."""
    code = "import mme5; print(mme5.load('tiny-llava').encode(['un cerchio rosso']).shape)"
    env = {k: v for k, v in os.environ.items() if k not in ("MME5_VERBOSE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "(1, 64)"
    assert "Loading weights" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "MME5_VERBOSE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loud.returncode == 0 and "Loading weights" in loud.stderr
