"""A small Lightning fit over shards that records every batch's sample ids (used by test_resume.py).

    python -m tests.helpers.resume_fit --shards SPEC --out ids.txt --ckpt-dir DIR \
        [--kill-at-step N] [--resume CKPT] [--max-steps N] [--final-ckpt PATH]

Each training step appends ``<global_step> <epoch> <id,id,...>`` to ``--out`` (``--out.rank<r>`` under
DDP), flushed and fsynced, so a SIGKILL loses nothing already written. ``--kill-at-step N`` sends
SIGKILL to the process itself at
the start of step N, mid-epoch, with DataLoader workers running. ``--final-ckpt`` saves the state at the
end of the fit there, as ``mme5 fit`` saves ``last.ckpt`` (after a ``--max-steps`` stop Lightning's loop
state says the epoch completed).
"""

from __future__ import annotations

import argparse
import os
import signal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mme5.data import ShardDataModule, ShardSet
from mme5.training.checkpoints import AtomicCheckpointIO
from tests.helpers.shard_fixtures import list_collate


def make_datamodule(sets: list[ShardSet], workers: int = 2, batch_size: int = 3) -> ShardDataModule:
    """The data settings of this fit (the test builds the same module in process for the reference)."""
    return ShardDataModule(
        train=sets,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list_collate,
        shuffle_buffer=5,
        shuffle_shards=2,
        seed=7,
    )


class RecordingModule(L.LightningModule):
    def __init__(self, out: str, kill_at_step: int | None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.out = out
        self.kill_at_step = kill_at_step

    def training_step(self, batch: list[str], batch_idx: int) -> torch.Tensor:
        if self.kill_at_step is not None and self.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        out = self.out if self.trainer.world_size == 1 else f"{self.out}.rank{self.global_rank}"
        with open(out, "a") as f:
            f.write(f"{self.global_step} {self.current_epoch} {','.join(batch)}\n")
            f.flush()
            os.fsync(f.fileno())
        return (self.w**2).sum() * len(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shards", nargs="+", required=True, help="SPEC[:WEIGHT] per shard set")
    p.add_argument("--out", required=True)
    p.add_argument("--ckpt-dir", required=True)
    p.add_argument("--kill-at-step", type=int)
    p.add_argument("--resume")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=3)
    p.add_argument("--devices", type=int, default=1, help="CPU processes; > 1 runs DDP (gloo)")
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--final-ckpt", help="save the end-of-fit state here (as mme5 fit's last.ckpt)")
    a = p.parse_args()
    sets = [
        ShardSet(s.rsplit(":", 1)[0], float(s.rsplit(":", 1)[1])) if ":" in s else ShardSet(s)
        for s in a.shards
    ]
    dm = make_datamodule(sets, a.workers, a.batch_size)
    ckpt = ModelCheckpoint(dirpath=a.ckpt_dir, every_n_train_steps=a.every, save_top_k=-1, save_last=True)
    trainer = L.Trainer(
        max_epochs=a.epochs,
        max_steps=a.max_steps,
        accelerator="cpu",
        devices=a.devices,
        strategy="ddp" if a.devices > 1 else "auto",
        callbacks=[ckpt],
        plugins=[AtomicCheckpointIO()],  # as mme5 fit: atomic saves, weights_only loads
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(RecordingModule(a.out, a.kill_at_step), datamodule=dm, ckpt_path=a.resume)
    if a.final_ckpt:
        trainer.save_checkpoint(a.final_ckpt)


if __name__ == "__main__":
    main()
