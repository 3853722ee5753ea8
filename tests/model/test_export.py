"""Export -> load -> encode reproduces the encoder's embeddings (plain, LoRA and DoRA)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from mme5.backbones import BackboneError
from mme5.errors import MissingPathError
from mme5.model.encoder import Encoder, LoraSettings
from mme5.model.export import CONFIG_FILE, DEFAULT_INSTRUCTIONS, export, export_checkpoint, load
from mme5.records import Side, compose_text


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


TEXTS = ["a photo of an astronaut", None, "Кошка на столе", "一杯咖啡"]
IMAGES = [photo("astronaut"), photo("chelsea"), None, photo("coffee")]


def perturb_adapters(encoder: Encoder, seed: int = 0) -> None:
    """Give every adapter weight random values (gaussian init leaves lora_B at zero: a no-op adapter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in encoder.model.named_parameters():
            if "lora_" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize(
    "model,lora",
    [
        ("tiny-llava", None),
        ("tiny-mllama", LoraSettings(rank=4, alpha=16, dropout=0.1)),
        ("tiny-qwen2-vl", LoraSettings(rank=4, alpha=16, use_dora=True)),
        ("tiny-qwen3-vl", LoraSettings(rank=4, alpha=16)),
    ],
    ids=["llava-plain", "mllama-lora", "qwen2vl-dora", "qwen3vl-lora"],
)
def test_export_load_encode_round_trip(tmp_path, model, lora):
    encoder = Encoder(model, lora=lora, max_length=48)
    if lora is not None:
        perturb_adapters(encoder)
    instruction = "Find me an everyday image that matches the given caption:"
    sides = [Side(compose_text(instruction, t), im) for t, im in zip(TEXTS, IMAGES, strict=False)]
    expected = encoder.encode_sides(sides)
    if lora is not None:  # the adapters really change the embeddings
        base = Encoder(model, max_length=48).encode_sides(sides)
        assert (base - expected).abs().max() > 5e-2

    folder = export(encoder, tmp_path / "export", instructions={"retrieval": instruction, "custom": "Do X:"})
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["format"] == 2 and config["encoder"] == asdict(encoder.settings)
    assert config["family"] == encoder.adapter.family and config["encoder"]["pooling"] == "last"
    assert config["encoder"]["normalize"] and config["encoder"]["max_length"] == 48
    assert config["instructions"]["retrieval"] == instruction and config["instructions"]["custom"] == "Do X:"
    assert config["instructions"]["vqa"] == DEFAULT_INSTRUCTIONS["vqa"]
    assert not any("lora" in p.name for p in folder.iterdir())

    loaded = load(folder)
    assert not any("lora_" in n for n, _ in loaded.named_parameters())
    got = loaded.encode(
        texts=TEXTS, images=IMAGES, instruction="retrieval", batch_size=3, convert_to_tensor=True
    )
    # Merged weights round the adapter's contribution differently (DoRA's norms above all): ~1e-4.
    torch.testing.assert_close(got, expected, atol=3e-4, rtol=1e-3)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(loaded.encode_sides(sides), got)
    # The live encoder is untouched by the export (its adapters are not merged away).
    torch.testing.assert_close(encoder.encode_sides(sides), expected)


def test_encode_inputs_and_errors(tmp_path):
    folder = export(Encoder("tiny-llava"), tmp_path / "e")
    model = load(folder)
    text_only = model.encode(texts=["one", "two", "three"], batch_size=2)
    assert text_only.shape == (3, 64)
    image_path = tmp_path / "coffee.png"
    photo("coffee").save(image_path)
    from_path = model.encode(images=[str(image_path)])
    from_pil = model.encode(images=[photo("coffee")])
    assert from_path.shape == from_pil.shape == (1, 64)
    np.testing.assert_allclose(from_path, from_pil, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="2 texts but 1 images"):
        model.encode(texts=["a", "b"], images=[photo("coffee")])
    with pytest.raises(ValueError, match="needs texts, images"):
        model.encode()
    with pytest.raises(MissingPathError, match=r"nope\.png"):
        model.encode(images=[str(tmp_path / "nope.png")])


def test_load_errors_name_the_folder(tmp_path):
    with pytest.raises(MissingPathError, match="does not exist"):
        load(tmp_path / "missing")
    with pytest.raises(BackboneError, match=f"not an mme5 export: {CONFIG_FILE} is missing"):
        load(tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_export_on_cpu_load_on_cuda(tmp_path):
    encoder = Encoder("tiny-mllama", lora=LoraSettings(rank=4, use_dora=True))
    perturb_adapters(encoder)
    expected = encoder.encode_sides([Side(t, im) for t, im in zip(TEXTS, IMAGES, strict=False)])
    loaded = load(export(encoder, tmp_path / "e"), device="cuda")
    assert loaded.encoder.device.type == "cuda"
    got = loaded.encode(texts=TEXTS, images=IMAGES, convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)


def test_mme5_export_command_on_a_training_checkpoint(tmp_path, capsys):
    import lightning as L

    from mme5.cli.main import main as mme5_main
    from mme5.training.module import EmbeddingModule, EncoderSettings

    module = EmbeddingModule(encoder=EncoderSettings(model="tiny-llava", lora=LoraSettings(rank=4)))
    perturb_adapters(module.encoder)
    ckpt = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        ckpt,
    )
    sides = [Side(t, im) for t, im in zip(TEXTS, IMAGES, strict=False)]
    expected = module.embed_sides(sides)
    assert (
        mme5_main(
            [
                "export",
                "--ckpt",
                str(ckpt),
                "--out",
                str(tmp_path / "out"),
                "--instructions",
                '{"retrieval": "Find it:"}',
            ]
        )
        == 0
    )
    loaded = load(tmp_path / "out")
    assert loaded.instructions["retrieval"] == "Find it:"
    torch.testing.assert_close(loaded.encode_sides(sides), expected, atol=3e-4, rtol=1e-3)
    capsys.readouterr()
    assert mme5_main(["export", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "x")]) == 2
    assert re.search(r"checkpoint .* does not exist", capsys.readouterr().err)
    with pytest.raises(MissingPathError, match=r"checkpoint .* does not exist"):
        export_checkpoint(str(tmp_path / "none.ckpt"), str(tmp_path / "x"))
