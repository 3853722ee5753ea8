"""EmbeddingModule with the real Encoder + Collator (tiny random twins) in a Lightning Trainer on CPU."""

from __future__ import annotations

import itertools
import math

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch.utils.data import DataLoader

from mme5.data.collate import Collator
from mme5.errors import ConfigError
from mme5.model.encoder import LoraSettings
from mme5.records import Example, Side
from mme5.training.losses import LossSettings
from mme5.training.module import (
    EmbeddingModule,
    EncoderSettings,
    OptimizerSettings,
    ScheduleSettings,
    warmup_linear,
)

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse")


def photo(name: str, size: int = 48) -> Image.Image:
    arr = getattr(skdata, name)()
    if arr.dtype != np.uint8:
        arr = (arr * 255).astype(np.uint8) if arr.max() <= 1 else arr.astype(np.uint8)
    img = Image.fromarray(arr)
    return img.convert("RGB").resize((size, size))


def make_examples(n: int, negatives: int = 1, images: bool = True) -> list[Example]:
    """Mixed modalities: text->image, image->text, text->text, with hard negatives."""
    out = []
    for i in range(n):
        img = photo(PHOTOS[i % len(PHOTOS)]) if images else None
        kind = i % 3
        q = Side(text=f"query number {i} about {PHOTOS[i % len(PHOTOS)]}") if kind != 1 else Side(image=img)
        pos = (
            Side(image=img, text=None)
            if kind == 0
            else Side(text=f"a photo of {PHOTOS[i % len(PHOTOS)]} {i}")
        )
        negs = [Side(text=f"unrelated text {i} {j}") for j in range(negatives)]
        out.append(
            Example(
                id=f"ex{i}",
                query=q,
                positive=pos,
                negatives=negs,
                instruction="Find the matching item",
                task="retrieval",
            )
        )
    return out


def loader(model: str, examples: list[Example], batch_size: int) -> DataLoader:
    return DataLoader(
        examples, batch_size=batch_size, collate_fn=Collator(model, max_length=32), shuffle=False
    )


def trainer(**kw) -> L.Trainer:
    base = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    base.update(kw)
    return L.Trainer(**base)


def trainable_snapshot(module: EmbeddingModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_fit_logs_metrics_and_checkpoint_round_trip(tmp_path):
    module = EmbeddingModule(
        encoder=EncoderSettings(model="tiny-mllama", max_length=32),
        loss=LossSettings(learnable_temperature=True),
        optimizer=OptimizerSettings(lr=1e-3),
        schedule=ScheduleSettings(warmup=0.5),
    )
    before = trainable_snapshot(module)
    t = trainer(max_steps=2, log_every_n_steps=1, default_root_dir=tmp_path)
    t.fit(module, loader("tiny-mllama", make_examples(8), batch_size=4))
    logged = t.logged_metrics
    for key in (
        "train/loss",
        "train/accuracy",
        "train/temperature",
        "train/grad_norm",
        "train/samples_per_sec",
    ):
        assert key in logged and math.isfinite(float(logged[key])), key
    after = dict(module.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert float(logged["train/temperature"]) != pytest.approx(0.02, abs=0)  # learnable temperature moved
    ckpt = tmp_path / "m.ckpt"
    t.save_checkpoint(ckpt)
    loaded = EmbeddingModule.load_from_checkpoint(ckpt)
    sides = [Side(text="hello world"), Side(image=photo("coffee"), text="a cup")]
    torch.testing.assert_close(loaded.embed_sides(sides), module.embed_sides(sides))
    assert loaded.hparams["loss"]["learnable_temperature"] is True


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_lora_step_changes_only_adapter_weights(use_dora):
    module = EmbeddingModule(
        encoder=EncoderSettings(
            model="tiny-mllama",
            max_length=32,
            lora=LoraSettings(rank=4, alpha=8, dropout=0.1, use_dora=use_dora, init=True),
        ),
        optimizer=OptimizerSettings(lr=1e-2, weight_decay=0.1),
        schedule=ScheduleSettings(warmup=0),
    )
    before = trainable_snapshot(module)
    trainer(max_steps=1).fit(module, loader("tiny-mllama", make_examples(4), batch_size=4))
    changed = {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed, "a training step changed nothing"
    assert all("lora_" in n for n in changed), sorted(n for n in changed if "lora_" not in n)[:5]
    if use_dora:
        assert any("lora_magnitude_vector" in n for n in changed)
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    assert frozen and all(n not in changed for n in frozen)


def test_warmup_then_linear_decay_to_zero():
    total, warm = 20, 5
    lrs = [warmup_linear(s, total, warm) for s in range(total)]
    assert lrs[0] == pytest.approx(1 / 5) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert warmup_linear(total, total, warm) == 0.0
    assert warmup_linear(7, total, warm, decay="constant") == 1.0


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="grad_cache_chunk"):
        EmbeddingModule(grad_cache_chunk=0)
    with pytest.raises(ConfigError, match="hard_negatives"):
        EmbeddingModule(loss=LossSettings(hard_negatives="all"))  # type: ignore[arg-type]
