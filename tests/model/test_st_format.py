"""An export loads in sentence-transformers 6 and embeds exactly as `mme5.load(folder).encode` does.

Every family whose processor imports here is checked: LLaVA, LLaVA-NeXT and Mllama in the main
environment; Qwen2-VL needs torchvision (transformers' Qwen2-VL processor owns a video processor),
so its case is marked `vllm` and runs in the vLLM environment, which has it:

    .venv-vllm/bin/python -m pytest -q -m vllm tests/model/test_st_format.py
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import mme5
from mme5.model.encoder import Encoder, EncoderSettings
from mme5.model.export import export
from mme5.model.st_format import embedding_chat_template
from mme5.records import Side, compose_text

st = pytest.importorskip("sentence_transformers", reason="needs sentence-transformers (the dev extra)")

FAMILIES = [
    pytest.param("tiny-llava", id="llava"),
    pytest.param("tiny-llava-next", id="llava-next"),
    pytest.param("tiny-mllama", id="mllama"),
    pytest.param("tiny-qwen2-vl", id="qwen2-vl", marks=pytest.mark.vllm),
]


def noise(seed: int, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


TEXTS = ["a red circle", "Кошка на столе", "一杯咖啡 on a wooden table"]
IMAGES = [noise(0, (40, 30)), noise(1, (64, 50))]
PAIRS = [{"image": IMAGES[0], "text": "a photo of noise"}, {"text": "what is shown?", "image": IMAGES[1]}]


def st_model(folder):
    if "qwen2" in str(folder):
        pytest.importorskip("torchvision", reason="transformers' Qwen2-VL processor needs torchvision")
    return st.SentenceTransformer(str(folder), device="cpu")


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_sentence_transformers_embeds_as_mme5(tmp_path, name, pooling):
    folder = export(Encoder(EncoderSettings(name, pooling=pooling, max_length=48)), tmp_path / "export")
    ours = mme5.load(str(folder), device="cpu")
    theirs = st_model(folder)
    assert theirs.get_embedding_dimension() == ours.encoder.hidden_size
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]
    pool = json.loads((folder / "1_Pooling" / "config.json").read_text())
    assert pool["pooling_mode"] == {"last": "lasttoken", "mean": "mean"}[pooling]
    assert {k: theirs.prompts[k] for k in ours.prompts} == ours.prompts  # (it adds empty query / document)
    for kwargs in ({}, {"prompt_name": "retrieval"}, {"prompt": "Represent the given image."}):
        # texts, images and image+text inputs, each kind in its own call (Mllama needs that, see below)
        for inputs in (TEXTS, IMAGES, PAIRS):
            want = ours.encode(inputs, **kwargs)
            got = theirs.encode(inputs, **kwargs)
            assert got.shape == want.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the instruction reaches the prompt exactly as in training: {instruction}\n{text}
    instruction = ours.prompts["retrieval"]
    direct = ours.encode_sides([Side(compose_text(instruction, TEXTS[0]))]).numpy()
    np.testing.assert_allclose(theirs.encode([TEXTS[0]], prompt_name="retrieval"), direct, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", [p for p in FAMILIES if p.id != "mllama"])
def test_mixed_batches_match_too(tmp_path, name):
    """Texts, images and pairs in one call (one batch) embed as mme5 embeds them."""
    folder = export(Encoder(name, max_length=48), tmp_path / "export")
    inputs = [TEXTS[0], IMAGES[0], PAIRS[0], TEXTS[1], PAIRS[1]]
    want = mme5.load(str(folder), device="cpu").encode(inputs, prompt_name="vqa")
    got = st_model(folder).encode(inputs, prompt_name="vqa")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_the_chat_template_renders_the_training_prompt(tmp_path):
    """Rendering through the processor's chat template gives mme5's formatted prompt."""
    encoder = Encoder("tiny-llava", max_length=48)
    folder = export(encoder, tmp_path / "export")
    template = (folder / "chat_template.jinja").read_text()
    assert template == embedding_chat_template(encoder.adapter)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(folder))
    adapter = encoder.adapter
    cases = [
        ("Find it:", "a red circle", None),
        (None, "a red circle", None),
        ("Find it:", "a cat", IMAGES[0]),
        (None, None, IMAGES[0]),
        ("Represent the given image.", None, IMAGES[0]),
    ]
    for instruction, text, image in cases:
        messages = []
        if instruction:
            messages.append({"role": "system", "content": [{"type": "text", "text": instruction}]})
        content = ([{"type": "image"}] if image is not None else []) + (
            [{"type": "text", "text": text}] if text else []
        )
        messages.append({"role": "user", "content": content})
        rendered = processor.apply_chat_template(messages, tokenize=False)
        assert rendered == adapter.format_text(Side(compose_text(instruction, text), image))


def test_an_unnormalised_export_has_no_normalize_module(tmp_path):
    folder = export(Encoder(EncoderSettings("tiny-llava", normalize=False)), tmp_path / "export")
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling"]
    want = mme5.load(str(folder), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(st_model(folder).encode(TEXTS), want, atol=1e-5, rtol=0)


def test_mllama_mixed_batches_are_the_documented_limit(tmp_path):
    """transformers' Mllama lets the text rows of a batch with images attend to a blank image; mme5 runs
    them apart. The export says so in its one-line note; images and texts in separate calls match."""
    from mme5.model.st_format import sentence_transformers_note

    assert "Mllama" in (sentence_transformers_note("mllama") or "")
    assert sentence_transformers_note("llava") is None
