"""One loader: an export, a `mme5 fit` checkpoint and a backbone all load with their own settings."""

from __future__ import annotations

import json
import subprocess
import sys

import lightning as L
import pytest
import torch
from PIL import Image

import mme5
from mme5.backbones.hub import HubModelError
from mme5.errors import ConfigError, MissingPathError
from mme5.eval.models import load_model
from mme5.model.encoder import Encoder, EncoderSettings, LoraSettings
from mme5.model.export import CONFIG_FILE, export
from mme5.model.load import load
from mme5.records import Side


def sides() -> list[Side]:
    return [
        Side("a red circle"),
        Side("Кошка на столе", Image.new("RGB", (40, 30), (200, 30, 30))),
        Side(None, Image.new("RGB", (32, 32), (10, 120, 200))),
    ]


def perturb(encoder: Encoder, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in encoder.model.named_parameters():
            if "lora_" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))


def test_evaluate_loads_an_export_with_its_own_settings(tmp_path):
    encoder = Encoder(EncoderSettings("tiny-llava", pooling="mean", max_length=24, dtype="bfloat16"))
    folder = export(encoder, tmp_path / "export")
    loaded = load_model(str(folder), device="cpu")
    settings = loaded.module.settings
    assert (settings.pooling, settings.max_length, settings.dtype) == ("mean", 24, "bfloat16")
    assert "mean pooling" in loaded.description
    expected = mme5.load(str(folder), device="cpu").encode_sides(sides())
    torch.testing.assert_close(loaded.embed(sides()), expected)
    # the export is not scored as a raw backbone with Encoder defaults
    assert loaded.fingerprint != load_model("tiny-llava", device="cpu").fingerprint
    # an override is part of the identity
    assert load_model(str(folder), device="cpu", max_length=12).fingerprint != loaded.fingerprint


def test_a_trainer_checkpoint_loads_to_the_module_vectors(tmp_path):
    from mme5.training.module import EmbeddingModule

    module = EmbeddingModule(
        encoder=EncoderSettings(
            "tiny-llava", max_length=32, pooling="mean", lora=LoraSettings(rank=4, dropout=0.0)
        )
    )
    perturb(module.encoder)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    expected = module.embed_sides(sides())

    loaded = load(tmp_path / "last.ckpt", device="cpu")
    assert loaded.encoder.settings == module.encoder.settings
    torch.testing.assert_close(loaded.encode_sides(sides()), expected)
    assert loaded.fingerprint() == module.encoder.fingerprint()
    via_eval = load_model(str(tmp_path / "last.ckpt"), device="cpu")
    torch.testing.assert_close(via_eval.embed(sides()), expected)


def test_the_loader_does_not_import_training(tmp_path):
    code = (
        "import sys, mme5.model.load, mme5.eval.models; "
        "sys.exit(any(m.startswith('mme5.training') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unusable_inputs_are_one_line_errors(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match=r"junk\.ckpt' is not a usable mme5 checkpoint") as info:
        load(junk)
    assert "\n" not in str(info.value)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"lr": 1.0}}, foreign)
    with pytest.raises(ConfigError, match=r"not a checkpoint written by `mme5 fit`"):
        load(foreign)
    with pytest.raises(MissingPathError, match=r"checkpoint .*none\.ckpt' does not exist"):
        load(tmp_path / "none.ckpt")
    with pytest.raises(MissingPathError, match="model 'no_such_model' does not exist"):
        load("no_such_model")
    # a hub id that is neither cached nor reachable says how to download it (not 'does not exist')
    with pytest.raises(HubModelError, match=r"hf download no/such-model") as hub_info:
        load("no/such-model")
    assert "\n" not in str(hub_info.value)
    with pytest.raises(ConfigError, match="quantized loading needs an exported folder"):
        load(foreign, quantization="nf4")


def test_an_old_export_is_told_to_re_export(tmp_path):
    folder = export(Encoder("tiny-llava"), tmp_path / "e")
    config = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**config, "format": 1}))
    with pytest.raises(
        ConfigError, match=r"has export format 1; this mme5 reads format 2: re-export"
    ) as info:
        load(folder)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_an_export_loads_quantized(tmp_path, quantization):
    """The seam `mme5 export` -> `mme5 eval-quantized`: an export loads with bitsandbytes weights (it
    used to fail with "replace() got multiple values for keyword argument 'quantization'")."""
    pytest.importorskip("bitsandbytes")
    folder = export(Encoder("tiny-llava"), tmp_path / "e")
    full = load(folder, device="cpu").encode(["a red circle", "Кошка на столе"])
    quant = load(folder, quantization=quantization, device="cpu")
    assert quant.encoder.quantization == quantization
    got = quant.encode(["a red circle", "Кошка на столе"])
    assert got.shape == full.shape
    assert ((got * full).sum(-1) > 0.9).all()
