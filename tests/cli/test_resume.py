"""A real `mme5 fit` killed with SIGKILL mid-run and resumed from its checkpoint ends with exactly the
weights of an uninterrupted run: same data order (the DataModule's positions are in the checkpoint),
same optimiser and schedule state."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).parents[2]


def _config(tmp_path: Path, name: str, demo_root: Path) -> Path:
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    run = tmp_path / name
    trainer = config["trainer"]
    trainer.update(
        max_steps=18, max_epochs=-1, log_every_n_steps=1, default_root_dir=str(run), enable_progress_bar=False
    )
    trainer["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(run / "checkpoints"),
                "save_last": True,
                "every_n_train_steps": 4,
                "save_top_k": -1,
            },
        }
    ]
    config["data"].update(batch_size=8, num_workers=1)
    config["data"]["demo"].update(root=str(demo_root), train_samples=96)  # 12 batches: crosses an epoch
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mme5.cli", "fit", "--config", str(config), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 18
    return state["state_dict"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_fit(tmp_path):
    demo_root = tmp_path / "demo"
    straight = _fit(_config(tmp_path, "straight", demo_root))
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err.decode()[-3000:]

    config = _config(tmp_path, "killed", demo_root)
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    victim = _fit(config)
    target = ckpt_dir / "epoch=0-step=8.ckpt"
    deadline = time.monotonic() + 600
    while not target.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "the fit ended before it could be killed"
    size = -1
    while target.stat().st_size != size:  # the checkpoint is complete once its size stops changing
        size = target.stat().st_size
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL

    resumed = _fit(config, "--ckpt_path", str(target))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-3000:]

    a = _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    b = _weights(ckpt_dir / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)


def _final(ckpt: Path, step: int) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == step
    return state["state_dict"]


@pytest.mark.slow
def test_resume_with_a_higher_max_steps_equals_the_longer_fit(tmp_path):
    """`max_steps: 5` stops mid-epoch 0 (12 batches per epoch); `--ckpt_path last --trainer.max_steps 16`
    continues the rest of epoch 0 and then epoch 1, so it ends with the weights of a straight 16-step
    fit (constant learning rate: the schedule's length is the only thing max_steps changes)."""
    demo_root = tmp_path / "demo"

    def config(name: str) -> Path:
        path = _config(tmp_path, name, demo_root)
        data = yaml.safe_load(path.read_text())
        data["model"]["schedule"] = {"warmup": 0, "decay": "constant"}
        path.write_text(yaml.safe_dump(data))
        return path

    straight = _fit(config("straight"), "--trainer.max_steps", "16")
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err.decode()[-3000:]

    cut = config("cut")
    first = _fit(cut, "--trainer.max_steps", "5")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err.decode()[-3000:]
    longer = _fit(cut, "--ckpt_path", "last", "--trainer.max_steps", "16")
    _, err = longer.communicate(timeout=600)
    assert longer.returncode == 0, err.decode()[-3000:]

    a = _final(tmp_path / "straight" / "checkpoints" / "last.ckpt", 16)
    b = _final(tmp_path / "cut" / "checkpoints" / "last.ckpt", 16)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
