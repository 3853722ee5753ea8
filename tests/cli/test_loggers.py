"""TensorBoard and W&B (offline) from the command line (issue #17, item 5): `pip install 'mme5[loggers]'`.

Skipped where the package is not installed; the missing-package error is tested in test_errors.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli.test_console import _short_fit_config
from tests.helpers import REPO


def _fit(config, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "mme5.cli", "fit", "--config", str(config), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_tensorboard_logger_writes_event_files_under_the_root_dir(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _short_fit_config(tmp_path, max_steps=3)
    root = tmp_path / "run"
    _fit(config, "--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", str(root))
    version = root / "lightning_logs" / "version_0"
    events = list(version.glob("events.out.tfevents.*"))
    assert events and (version / "checkpoints" / "last.ckpt").is_file()
    acc = EventAccumulator(str(version))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "lr-AdamW/pg1"} <= tags, tags


@pytest.mark.slow
def test_wandb_logger_offline_writes_a_run_folder_under_the_root_dir(tmp_path):
    pytest.importorskip("wandb")
    config = _short_fit_config(tmp_path, max_steps=3)
    root = tmp_path / "run"
    root.mkdir()
    args = ["--trainer.logger", "WandbLogger", "--trainer.logger.save_dir", str(root)]
    _fit(config, *args, "--trainer.logger.project", "mme5-test", env={"WANDB_MODE": "offline"})
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert list((root / "mme5-test").rglob("last.ckpt"))  # Lightning puts checkpoints beside: <project>/<id>/
