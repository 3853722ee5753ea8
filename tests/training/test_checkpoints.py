"""Checkpoint files (mme5.training.checkpoints): weights_only loading with one-line refusals, and
atomic in-folder saves that a kill cannot tear."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mme5.atomic import TEMP_SUFFIX
from mme5.data import ShardSet
from mme5.training.checkpoints import AtomicCheckpointIO, CheckpointError, load_checkpoint_file
from tests.helpers import repo_env
from tests.helpers.resume_fit import RecordingModule, make_datamodule
from tests.helpers.shard_fixtures import write_set


class _RunsCode:
    """Pickles as a call of ``os.system``: loading it with plain pickle would run the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _malicious(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": 0, "x": _RunsCode(f"touch {marker}")}, path)
    return path


def _trainer(tmp_path: Path, **kw) -> L.Trainer:
    kw = {"max_epochs": 1, "max_steps": 4, **kw}
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        **kw,
    )


def _data(tmp_path: Path):
    return make_datamodule([ShardSet(write_set(tmp_path / "s", "s", 4, 6))], workers=0)


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    evil = _malicious(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(evil)
    message = str(info.value)
    assert "\n" not in message and str(evil) in message and "refused" in message, message
    assert "os.system" in message or "posix.system" in message, message
    assert not marker.exists()


def test_lightning_resume_path_refuses_it_too(tmp_path):
    """``Trainer.fit(ckpt_path=...)`` reads through the CheckpointIO: refused, nothing ran."""
    marker = tmp_path / "ran"
    evil = _malicious(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        _trainer(tmp_path).fit(RecordingModule(str(tmp_path / "ids"), None), _data(tmp_path), ckpt_path=evil)
    assert not marker.exists()


def test_mme5_fit_refuses_a_malicious_or_missing_ckpt_path_in_one_line(tmp_path, capsys, monkeypatch):
    from mme5.cli.main import main

    monkeypatch.setattr("sys.argv", ["mme5"])
    marker = tmp_path / "ran"
    evil = _malicious(tmp_path / "evil.ckpt", marker)
    base = [
        "fit",
        "--config",
        "configs/demo.yaml",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--data.demo.root",
        str(tmp_path / "demo"),
    ]
    assert main([*base, "--ckpt_path", str(evil)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and str(evil) in err[0], err
    assert not marker.exists()
    missing = tmp_path / "nowhere" / "last.ckpt"
    assert main([*base, "--ckpt_path", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mme5 fit: error: checkpoint '{missing}' does not exist"], err
    assert not (tmp_path / "demo").exists()  # stopped before any data was prepared


def test_an_empty_or_cut_last_ckpt_names_the_newest_that_loads(tmp_path):
    ck = tmp_path / "ck"
    trainer = _trainer(
        tmp_path, callbacks=[ModelCheckpoint(dirpath=ck, every_n_train_steps=2, save_top_k=-1)]
    )
    trainer.fit(RecordingModule(str(tmp_path / "ids"), None), _data(tmp_path))
    good = ck / "epoch=0-step=4.ckpt"
    assert good.is_file() and (ck / "epoch=0-step=2.ckpt").is_file()
    assert load_checkpoint_file(good)["global_step"] == 4  # what Lightning writes passes weights_only
    last = ck / "last.ckpt"
    for content in (b"", good.read_bytes()[: good.stat().st_size // 2]):
        last.write_bytes(content)
        os.utime(last)  # the newest file in the folder
        with pytest.raises(CheckpointError) as info:
            load_checkpoint_file(last)
        message = str(info.value)
        assert "\n" not in message and str(last) in message and f"'{good}'" in message, message
    # Lightning's own `ckpt_path="last"` resolves to last.ckpt, then reads it through the CheckpointIO
    resumed = _trainer(tmp_path, callbacks=[ModelCheckpoint(dirpath=ck, save_last=True)], max_steps=6)
    with pytest.raises(CheckpointError, match="the newest checkpoint in its folder that loads is"):
        resumed.fit(RecordingModule(str(tmp_path / "ids"), None), _data(tmp_path), ckpt_path="last")


def test_saves_leave_no_temporary_file_anywhere(tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    ck = tmp_path / "ck"
    callback = ModelCheckpoint(dirpath=ck, every_n_train_steps=1, save_top_k=-1, save_last=True)
    _trainer(tmp_path, callbacks=[callback]).fit(
        RecordingModule(str(tmp_path / "ids"), None), _data(tmp_path)
    )
    assert sorted(p.name for p in ck.iterdir()) == [f"epoch=0-step={s}.ckpt" for s in range(1, 5)] + [
        "last.ckpt"
    ]
    assert list(tmpdir.iterdir()) == []


_SAVER = textwrap.dedent(
    """
    import sys, torch
    from mme5.training.checkpoints import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), sys.argv[1]
    weights = torch.randn(4_000_000)  # 16 MB: a save takes a while
    step = 0
    while True:
        step += 1
        io.save_checkpoint({"step": step, "w": weights + step}, path)
        print(step, flush=True)
    """
)


def test_a_kill_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    path = tmp_path / "ck" / "last.ckpt"
    env = repo_env({**os.environ, "TMPDIR": str(tmpdir)})
    for attempt in range(3):
        saver = subprocess.Popen(
            [sys.executable, "-c", _SAVER, str(path)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert saver.stdout is not None
        for _ in range(2 + attempt):  # a few complete saves, then kill during the next one
            assert saver.stdout.readline(), "the saver ended"
        time.sleep(0.01 * attempt)
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=60)
        state = load_checkpoint_file(path)  # never torn: the previous complete save, or the new one
        torch.testing.assert_close(state["w"] - state["w"][0], state["w"] - state["w"][0])
        assert state["step"] >= 2 + attempt - 1
        assert list(tmpdir.iterdir()) == []
    AtomicCheckpointIO().save_checkpoint({"step": 0}, path)  # the next save removes a killed save's temp
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert not any(p.name.endswith(TEMP_SUFFIX) for p in path.parent.iterdir())
