"""Encoder: pooling, LoRA/DoRA, gradient checkpointing, dtypes, quantized loading, encode_sides,
fingerprint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata

from mme5.backbones import BackboneError
from mme5.errors import ConfigError
from mme5.model.encoder import Encoder, EncoderSettings, LoraSettings, pool_hidden
from mme5.model.fingerprint import fingerprint
from mme5.records import PUBLIC_IMAGE_TOKEN, Side


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


def sides() -> list[Side]:
    return [
        Side(f"{PUBLIC_IMAGE_TOKEN}\nRepresent the given image.", photo("astronaut")),
        Side("A short text."),
        Side(
            "Una frase più lunga con parecchie parole, per avere padding diversi nel batch.", photo("coffee")
        ),
        Side("Короткий текст"),
        Side(None, photo("chelsea")),
    ]


def test_pool_hidden_last_and_mean_match_hand_computation():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 5)
    right = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1]])
    torch.testing.assert_close(
        pool_hidden(hidden, right, "last"), torch.stack([hidden[0, 2], hidden[1, 6], hidden[2, 0]])
    )
    torch.testing.assert_close(
        pool_hidden(hidden, left, "last"), torch.stack([hidden[0, 6], hidden[1, 6], hidden[2, 6]])
    )
    torch.testing.assert_close(
        pool_hidden(hidden, right, "mean"),
        torch.stack([hidden[0, :3].mean(0), hidden[1].mean(0), hidden[2, 0]]),
    )
    with pytest.raises(ValueError, match="no attended token"):
        pool_hidden(hidden, torch.zeros_like(right), "last")


@pytest.fixture(scope="module")
def llava() -> Encoder:
    return Encoder("tiny-llava", normalize=False)


@pytest.mark.parametrize("side", ["left", "right"])
def test_encoder_last_token_pooling_left_and_right_padding(llava: Encoder, side: str):
    llava.processor.tokenizer.padding_side = side
    try:
        inputs = llava.build_inputs(sides())
        mask = inputs["attention_mask"]
        assert not bool(mask.all())  # the batch really is padded
        with torch.no_grad():
            hidden = llava.adapter.last_hidden_state(llava.model, inputs)
            emb = llava(inputs)
        expected = []
        for row in range(mask.shape[0]):
            last = max(i for i in range(mask.shape[1]) if mask[row, i] == 1)
            if side == "left":
                assert last == mask.shape[1] - 1
            expected.append(hidden[row, last])
        torch.testing.assert_close(emb, torch.stack(expected))
    finally:
        llava.processor.tokenizer.padding_side = llava.adapter.padding_side


@pytest.mark.parametrize("model", ["tiny-mllama", "tiny-llava-next"])
@pytest.mark.parametrize("use_dora", [False, True])
def test_lora_and_dora_train_only_adapter_weights(model: str, use_dora: bool):
    enc = Encoder(model, lora=LoraSettings(rank=4, alpha=16, dropout=0.0, use_dora=use_dora))
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    if use_dora:
        assert any("lora_magnitude_vector" in n for n in trainable)
    emb = enc(enc.build_inputs(sides()))
    assert emb.shape == (5, 64)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(5))
    (emb @ emb.T).sum().backward()
    for name, p in enc.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    assert any(p.grad.abs().sum() > 0 for n, p in enc.named_parameters() if p.requires_grad and "vision" in n)


def test_unknown_lora_target_is_a_clear_error():
    with pytest.raises(BackboneError, match=r"LoRA targets \['no_such_proj'\] match no module"):
        Encoder("tiny-llava", lora=LoraSettings(targets=["no_such_proj"]))


def test_gradient_checkpointing_gives_the_same_embeddings_and_gradients():
    torch.manual_seed(0)
    plain = Encoder("tiny-mllama", lora=LoraSettings(dropout=0.0))
    torch.manual_seed(0)
    ckpt = Encoder("tiny-mllama", lora=LoraSettings(dropout=0.0), gradient_checkpointing=True)
    base = ckpt.base_model()
    assert (
        base.is_activation_checkpointing
        if hasattr(base, "is_activation_checkpointing")
        else base.is_gradient_checkpointing
    )
    inputs = plain.build_inputs(sides())
    outs = []
    for enc in (plain, ckpt):
        enc.train()
        emb = enc(inputs)
        (emb * torch.linspace(-1, 1, emb.numel()).view_as(emb)).sum().backward()
        grads = {n: p.grad.clone() for n, p in enc.named_parameters() if p.requires_grad}
        outs.append((emb.detach(), grads))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    assert outs[0][1].keys() == outs[1][1].keys()
    for name in outs[0][1]:
        torch.testing.assert_close(outs[0][1][name], outs[1][1][name], atol=1e-6, rtol=1e-4)


def test_bfloat16_encoder_runs_and_agrees_with_float32():
    f32 = Encoder("tiny-llava").encode_sides(sides())
    enc = Encoder("tiny-llava", dtype="bfloat16")
    assert next(enc.model.parameters()).dtype == torch.bfloat16
    bf16 = enc.encode_sides(sides())
    assert bf16.dtype == torch.float32
    assert F.cosine_similarity(f32, bf16).min() > 0.98


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_quantized_loading_runs_on_cpu(quantization: str):
    import bitsandbytes as bnb

    reference = Encoder("tiny-llava").encode_sides(sides())
    enc = Encoder("tiny-llava", quantization=quantization)
    layer = bnb.nn.Linear8bitLt if quantization == "int8" else bnb.nn.Linear4bit
    assert any(isinstance(m, layer) for m in enc.modules())
    emb = enc.encode_sides(sides())
    assert emb.shape == reference.shape and torch.isfinite(emb).all()
    assert F.cosine_similarity(reference, emb).mean() > 0.9


def test_qlora_forward_backward_on_cpu():
    enc = Encoder("tiny-llava", quantization="nf4", lora=LoraSettings(rank=4, dropout=0.0))
    emb = enc(enc.build_inputs(sides()))
    emb.sum().backward()
    trainable = [p for p in enc.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)


def test_encode_sides_batches_without_grad_and_restores_mode(llava: Encoder):
    llava.train()
    all_at_once = llava.encode_sides(sides(), batch_size=8)
    in_twos = llava.encode_sides(sides(), batch_size=2)
    assert llava.training and not all_at_once.requires_grad
    assert all_at_once.dtype == torch.float32 and all_at_once.device.type == "cpu"
    torch.testing.assert_close(all_at_once, in_twos, atol=1e-5, rtol=1e-4)
    assert llava.encode_sides([]).shape == (0, 64)


def test_fingerprint_is_stable_and_follows_weights_and_settings():
    a, b = Encoder("tiny-llava"), Encoder("tiny-llava")
    assert a.fingerprint() == b.fingerprint()
    assert Encoder("tiny-llava", pooling="mean").fingerprint() != a.fingerprint()
    assert Encoder("tiny-llava", max_length=17).fingerprint() != a.fingerprint()
    assert Encoder("tiny-llava", dtype="bfloat16").fingerprint() != a.fingerprint()
    # the settings count even where the weights are the same
    assert fingerprint(a.model, "x") != fingerprint(a.model, "y")
    with torch.no_grad():
        next(b.model.parameters()).add_(1e-3)
    assert a.fingerprint() != b.fingerprint()


def test_bad_settings_are_clear_errors():
    expected = r"pooling 'cls' is not supported; expected one of \['last', 'mean'\]"
    with pytest.raises(ConfigError, match=expected):
        Encoder(EncoderSettings("tiny-llava", pooling="cls"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dtype 'float8'"):
        Encoder("tiny-llava", dtype="float8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="quantization 'int3'"):
        Encoder("tiny-llava", quantization="int3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_length must be an integer >= 1, got 0"):
        EncoderSettings(max_length=0)
    with pytest.raises(ConfigError, match=r"lora\.rank must be >= 1, got 0"):
        EncoderSettings(lora={"rank": 0})  # type: ignore[arg-type]


def test_encoder_is_built_from_its_settings_whole():
    settings = EncoderSettings("tiny-llava", pooling="mean", max_length=40, lora=LoraSettings(rank=2))
    enc = Encoder(settings)
    assert enc.settings == settings and enc.pooling == "mean" and enc.max_length == 40 and enc.lora.rank == 2
    assert (
        Encoder("tiny-llava", pooling="mean", max_length=40, lora=LoraSettings(rank=2)).settings == settings
    )


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("model", ["tiny-mllama", "tiny-llava", "tiny-llava-next", "tiny-qwen2-vl"])
def test_cuda_bfloat16_lora_matches_cpu_float32(model: str):
    reference = Encoder(model).encode_sides(sides())
    enc = Encoder(
        model, dtype="bfloat16", lora=LoraSettings(use_dora=True), gradient_checkpointing=True
    ).cuda()
    enc.train()
    emb = enc(enc.build_inputs(sides()))  # CPU inputs are moved to the encoder's device
    assert emb.device.type == "cuda" and emb.dtype == torch.bfloat16
    emb.float().pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in enc.parameters() if p.requires_grad)
    got = enc.encode_sides(sides())
    assert got.device.type == "cpu" and enc.training
    # Gaussian-initialised adapters start as the identity: the same function as the plain model.
    assert F.cosine_similarity(reference, got).min() > 0.98


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_cuda_quantized_encoder(quantization: str):
    pytest.importorskip("bitsandbytes")
    reference = Encoder("tiny-llava").encode_sides(sides())
    enc = Encoder("tiny-llava", quantization=quantization, dtype="bfloat16", lora=LoraSettings(rank=4))
    assert enc.device.type == "cuda"
    emb = enc(enc.build_inputs(sides()))
    emb.float().sum().backward()
    assert F.cosine_similarity(reference, enc.encode_sides(sides())).mean() > 0.9


@pytest.mark.parametrize(
    "model", ["tiny-mllama", "tiny-llava", "tiny-llava-next", "tiny-qwen2-vl", "tiny-qwen3-vl"]
)
def test_lockstep_forwards_embed_like_plain_ones_and_reach_every_adapter(model: str):
    """Lockstep (sharded training) splits each batch into image rows and text rows and fills a missing
    kind with a dummy side: same embeddings as the plain forward, and every trainable weight gets a
    gradient whatever the batch holds."""
    torch.manual_seed(0)
    enc = Encoder(model, lora=LoraSettings(rank=4, alpha=8, dropout=0.0, init="gaussian"))
    enc.eval()
    batches = {
        "mixed": sides(),
        "text-only": [s for s in sides() if not s.has_image],
        "image-only": [s for s in sides() if s.has_image],
    }
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    for kind, batch in batches.items():
        inputs = enc.build_inputs(batch)
        enc.lockstep = False
        plain = enc(inputs).detach()
        enc.lockstep = True
        enc.zero_grad(set_to_none=True)
        out = enc(inputs)
        torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-5, msg=f"{model} {kind}")
        out.sum().backward()
        missing = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, (model, kind, missing[:3], len(trainable))
