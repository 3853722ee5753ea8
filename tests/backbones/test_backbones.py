"""Backbone adapters: formatting, adapter choice and errors, tiny twins, mixed text/image batches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from mme5.backbones import ADAPTERS, TINY_NAMES, BackboneError, get_adapter
from mme5.backbones.base import TINY_INFO_FILE, matching_modules
from mme5.backbones.llava import LlavaAdapter
from mme5.backbones.tokenizer import MULTILINGUAL_TEXT, build_tokenizer
from mme5.records import PUBLIC_IMAGE_TOKEN, Side

TINY = list(TINY_NAMES)


def photo(name: str = "astronaut", size: tuple[int, int] | None = None) -> Image.Image:
    img = Image.fromarray(getattr(skdata, name)()).convert("RGB")
    return img.resize(size) if size else img


def mixed_sides() -> list[Side]:
    return [
        Side(
            f"{PUBLIC_IMAGE_TOKEN}\nRepresent the given image with the following question: what is this?",
            photo("astronaut"),
        ),
        Side("Find me an everyday image that matches the given caption: a cup of coffee"),
        Side("Zdjęcie kota. Кошка. 一只猫。고양이. Köpek.", photo("chelsea", (70, 45))),
        Side(None, photo("coffee", (40, 90))),
        Side("text only, second"),
    ]


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    adapter = get_adapter(request.param)
    processor = adapter.load_processor(adapter.source)
    model = adapter.load_model(adapter.source)
    return adapter, processor, model


# ---- formatting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [c for c in ADAPTERS if c.family != "qwen3_vl"], ids=lambda c: c.family)
def test_format_text_rewrites_places_and_strips_image_tokens(cls):
    ad = cls()
    img = photo("camera", (8, 8))
    tok = ad.image_token
    # What follows the image token: mmE5 turns Mllama's newline into a BOS (tests/backbones/test_prompts.py).
    sep = "<|begin_of_text|>" if ad.family == "mllama" else "\n"
    assert (
        ad.format_text(Side(f"{PUBLIC_IMAGE_TOKEN}\nRepresent the image.", img))
        == f"{tok}{sep}Represent the image."
    )
    assert ad.format_text(Side("A caption", img)) == f"{tok}{sep}A caption"
    assert ad.format_text(Side(None, img)) == tok
    assert ad.format_text(Side("", img)) == tok
    # Text-only sides never carry an image token, even when the raw text has one.
    assert ad.format_text(Side("plain text")) == "plain text"
    assert ad.format_text(Side(f"{PUBLIC_IMAGE_TOKEN}\nno image here")) == "no image here"
    # One image per side: extra tokens are dropped, the first stays where it was.
    assert ad.format_text(Side(f"Look {PUBLIC_IMAGE_TOKEN} and {tok}", img)) == f"Look {tok} and "


def test_qwen3_vl_prompt_is_the_embedding_chat():
    pytest.importorskip("transformers.models.qwen3_vl")
    from mme5.backbones.qwen3_vl import Qwen3VLAdapter

    ad = Qwen3VLAdapter()
    img = photo("camera", (8, 8))
    head = "<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\n"
    tail = "<|im_end|>\n<|im_start|>assistant\n"
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    # The image comes first in the user turn, the public token and its newline are dropped.
    assert ad.format_text(Side(f"{PUBLIC_IMAGE_TOKEN}\nRepresent the image.", img)) == (
        f"{head}{vision}Represent the image.{tail}"
    )
    assert ad.format_text(Side(f"Look {PUBLIC_IMAGE_TOKEN} here", img)) == f"{head}{vision}Look  here{tail}"
    assert ad.format_text(Side(None, img)) == f"{head}{vision}{tail}"
    assert ad.format_text(Side("plain text")) == f"{head}plain text{tail}"
    assert ad.format_text(Side("")) == f"{head}NULL{tail}"


def test_image_tokens_per_family():
    tokens = {cls.family: cls.image_token for cls in ADAPTERS}
    assert tokens["mllama"] == "<|image|>"
    assert tokens["llava"] == tokens["llava_next"] == "<image>"
    if "qwen2_vl" in tokens:
        assert tokens["qwen2_vl"] == "<|image_pad|>"  # VLM2Vec: no vision start / end markers


# ---- choosing an adapter ---------------------------------------------------------------------------


def test_unknown_model_type_is_one_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(BackboneError, match=r"unsupported model_type 'bert'.*mllama.*llava") as info:
        get_adapter(str(tmp_path))
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(BackboneError, match=r"'.*nowhere' not found.*supported model types: mllama"):
        get_adapter(str(tmp_path / "nowhere"))
    with pytest.raises(BackboneError, match=r"no config\.json"):
        get_adapter(str(tmp_path))
    with pytest.raises(BackboneError, match="tiny twins: tiny-mllama"):
        get_adapter("tiny-gpt")


def test_folder_is_chosen_by_model_type(tiny):
    adapter, _, _ = tiny
    again = get_adapter(adapter.path)
    assert type(again) is type(adapter) and again.path == adapter.path


# ---- tiny twins ------------------------------------------------------------------------------------


def test_tiny_twin_is_cached_reused_and_rebuilt_on_version_change(tmp_path, monkeypatch):
    monkeypatch.setenv("MME5_CACHE", str(tmp_path))
    first = get_adapter("tiny-llava").source
    assert first == str(tmp_path / "tiny" / f"llava-v{LlavaAdapter.tiny_version}")
    weights = os.path.join(first, "model.safetensors")
    stamp = os.stat(weights).st_mtime_ns
    assert get_adapter("tiny-llava").path == first and os.stat(weights).st_mtime_ns == stamp
    # A folder holding another version's twin (or a half-written one) is replaced.
    info = Path(first) / TINY_INFO_FILE
    meta = json.loads(info.read_text())
    meta["version"] = 0
    info.write_text(json.dumps(meta))
    assert get_adapter("tiny-llava").path == first
    assert json.loads(info.read_text())["version"] == LlavaAdapter.tiny_version
    assert [p.name for p in (tmp_path / "tiny").iterdir()] == [
        f"llava-v{LlavaAdapter.tiny_version}"
    ]  # no temp dirs left behind


def test_tiny_twin_is_deterministic_from_seed(tmp_path):
    from safetensors.torch import load_file

    ad = LlavaAdapter()
    a = load_file(os.path.join(ad.build_tiny(tmp_path / "a", seed=3), "model.safetensors"))
    b = load_file(os.path.join(ad.build_tiny(tmp_path / "b", seed=3), "model.safetensors"))
    c = load_file(os.path.join(ad.build_tiny(tmp_path / "c", seed=4), "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_tiny_twin_loads_like_a_real_checkpoint(tiny):
    from transformers import AutoConfig, AutoProcessor

    adapter, processor, model = tiny
    if adapter.family in ("qwen2_vl", "qwen3_vl"):
        try:  # Qwen-VL's full processor needs torchvision (for videos); the adapter works without it.
            AutoProcessor.from_pretrained(adapter.path)
        except ImportError as exc:
            assert "torchvision" in str(exc).lower()
    else:
        assert type(AutoProcessor.from_pretrained(adapter.path)) is type(processor)
    assert type(processor).__name__.lower().startswith(adapter.family.replace("_", ""))
    for token in (adapter.placeholder_token or adapter.image_token,):
        assert processor.tokenizer.convert_tokens_to_ids(token) == model.config.image_token_id
    assert AutoConfig.from_pretrained(adapter.path).model_type in adapter.model_types
    assert type(model).__name__.endswith("ForConditionalGeneration")
    text = model.config.get_text_config()
    assert text.hidden_size == 64 and sum(p.numel() for p in model.parameters()) < 2_000_000


def test_offline_tokenizer_covers_demo_languages():
    tok = build_tokenizer(
        ["<s>", "</s>", "<image>"],
        bos_token="<s>",
        eos_token="</s>",
        extra_attributes={"image_token": "<image>"},
    )
    samples = [
        "Il cane corre nel parco",
        "Собака бежит по парку",
        "两只狗在雪地里玩耍",
        "Pies biegnie, żółć",
        "Köpek parkta koşuyor, ışık",
        "개가 공원에서 뛰고 있습니다",
        "¿Dónde está la estación?",
        "unseen: ÆØÅ ☃",
    ]
    for text in samples:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # The trained merges compress the built-in text well below one token per byte.
    ids = tok(MULTILINGUAL_TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(MULTILINGUAL_TEXT.encode()) / 3
    assert tok("<image>hi", add_special_tokens=False)["input_ids"][0] == tok.image_token_id


def test_lora_targets_exist_in_the_model(tiny):
    adapter, _, model = tiny
    names = matching_modules(model, adapter.lora_target_regex())
    assert names and all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in names)
    for pattern in adapter.lora_targets:
        assert matching_modules(model, adapter.lora_target_regex([pattern])), pattern
    joined = " ".join(names)
    vision = {
        "mllama": "vision_model",
        "llava": "vision_tower",
        "llava_next": "vision_tower",
        "qwen2_vl": "visual",
        "qwen3_vl": "visual",
    }
    assert vision[adapter.family] in joined and "language_model" in joined and "down_proj" in joined
    if adapter.family == "mllama":
        assert "cross_attn.q_proj" in joined and "cross_attn.o_proj" in joined
    assert "lm_head" not in joined and "multi_modal_projector" not in joined


# ---- inputs and forward ----------------------------------------------------------------------------


def test_mixed_batch_forward_backward(tiny):
    adapter, processor, model = tiny
    sides = mixed_sides()
    inputs = adapter.build_inputs(processor, sides, max_length=64)
    assert inputs["input_ids"].shape[0] == len(sides)
    model.zero_grad()
    hidden = adapter.last_hidden_state(model, inputs)
    assert hidden.shape[:2] == inputs["input_ids"].shape and torch.isfinite(hidden).all()
    (hidden * torch.randn_like(hidden)).sum().backward()
    vision = {
        "mllama": "vision_model",
        "llava": "vision_tower",
        "llava_next": "vision_tower",
        "qwen2_vl": "visual",
        "qwen3_vl": "visual",
    }
    vision_grads = [p.grad for n, p in model.named_parameters() if vision[adapter.family] in n]
    assert any(g is not None and g.abs().sum() > 0 for g in vision_grads)


def test_text_only_row_of_a_mixed_batch_matches_a_text_only_batch(tiny):
    adapter, processor, model = tiny
    sides = mixed_sides()
    mixed = adapter.build_inputs(processor, sides, max_length=64)
    alone = adapter.build_inputs(processor, [sides[1]], max_length=64)
    with torch.no_grad():
        h_mixed = adapter.last_hidden_state(model, mixed)
        h_alone = adapter.last_hidden_state(model, alone)
    n = int(alone["attention_mask"].sum())
    row = h_mixed[1][mixed["attention_mask"][1].bool()]
    assert row.shape[0] == n
    torch.testing.assert_close(row, h_alone[0][alone["attention_mask"][0].bool()], atol=1e-5, rtol=1e-4)


def test_all_text_and_all_image_batches(tiny):
    adapter, processor, model = tiny
    for sides in (
        [Side("only text"), Side("more text here")],
        [Side(None, photo()), Side("x", photo("coffee"))],
    ):
        inputs = adapter.build_inputs(processor, sides, max_length=16)
        with torch.no_grad():
            assert torch.isfinite(adapter.last_hidden_state(model, inputs)).all()


def test_max_length_bounds_text_tokens_and_keeps_the_image(tiny):
    adapter, processor, _ = tiny
    long_text = " ".join(["word", "słowo", "слово", "단어"] * 100)
    # The family's own tokens around a side's text (BOS, chat turns, vision markers).
    overhead = adapter.build_inputs(processor, [Side("")], max_length=20)["input_ids"].shape[1]
    text_only = adapter.build_inputs(processor, [Side(long_text)], max_length=20)
    assert text_only["input_ids"].shape[1] <= 20 + overhead
    image_id = processor.tokenizer.convert_tokens_to_ids(adapter.placeholder_token or adapter.image_token)
    bare = adapter.build_inputs(processor, [Side(None, photo())], max_length=20)["input_ids"]
    image_overhead = int((bare != image_id).sum())
    for max_length in (20, 1):
        for text in (long_text, f"{long_text} {PUBLIC_IMAGE_TOKEN} {long_text}"):
            with_image = adapter.build_inputs(processor, [Side(text, photo())], max_length=max_length)
            assert (with_image["input_ids"] == image_id).any()
            text_tokens = (with_image["input_ids"] != image_id).sum()
            assert text_tokens <= max_length + image_overhead


def test_concurrent_tiny_builds_do_not_corrupt_the_cache(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("MME5_CACHE", str(tmp_path))
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: LlavaAdapter().ensure_tiny(), range(2)))
    assert paths[0] == paths[1]
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [f"llava-v{LlavaAdapter.tiny_version}"]
    ad = get_adapter("tiny-llava")
    model = ad.load_model(ad.source)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_qwen2_vl_processor_without_torchvision_expands_image_tokens():
    pytest.importorskip("transformers.models.qwen2_vl")
    adapter = get_adapter("tiny-qwen2-vl")
    processor = adapter.load_processor(adapter.source)
    sides = [Side("a", photo("astronaut")), Side("text only"), Side(None, photo("coffee", (100, 40)))]
    inputs = adapter.build_inputs(processor, sides, max_length=16)
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = processor.image_processor.merge_size**2
    per_image = (inputs["image_grid_thw"].prod(dim=1) // merge).tolist()
    per_row = (inputs["input_ids"] == pad_id).sum(dim=1).tolist()
    assert per_row == [per_image[0], 0, per_image[1]]
    assert inputs["pixel_values"].shape[0] == int(inputs["image_grid_thw"].prod(dim=1).sum())
    # Left padding: every row ends with a real token.
    assert bool(inputs["attention_mask"][:, -1].all())


def test_qwen2_5_vl_checkpoint_uses_the_qwen_adapter(tmp_path):
    pytest.importorskip("transformers.models.qwen2_5_vl")
    import shutil

    from transformers import AutoConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from mme5.model.encoder import Encoder, LoraSettings

    tiny = get_adapter("tiny-qwen2-vl").source
    for name in os.listdir(tiny):
        if not name.startswith(("model", "config")):
            shutil.copy(os.path.join(tiny, name), tmp_path / name)
    qwen2 = AutoConfig.from_pretrained(tiny)
    config = Qwen2_5_VLConfig(
        text_config=qwen2.text_config.to_dict(),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "out_hidden_size": 64,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 32,
            "fullatt_block_indexes": [1],
        },
        image_token_id=qwen2.image_token_id,
        video_token_id=qwen2.video_token_id,
        vision_start_token_id=qwen2.vision_start_token_id,
        vision_end_token_id=qwen2.vision_end_token_id,
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(tmp_path)
    adapter = get_adapter(str(tmp_path))
    assert adapter.family == "qwen2_vl"
    encoder = Encoder(str(tmp_path), lora=LoraSettings(rank=2))
    assert type(encoder.base_model()).__name__ == "Qwen2_5_VLForConditionalGeneration"
    lora_names = [n for n, _ in encoder.model.named_modules() if n.endswith("lora_A")]
    assert any("visual.blocks.0.attn.qkv" in n for n in lora_names)
    assert any("visual.blocks.0.mlp.down_proj" in n for n in lora_names)
    emb = encoder(encoder.build_inputs(mixed_sides()[:3]))
    emb.sum().backward()
    assert emb.shape == (3, 64) and torch.isfinite(emb).all()


def test_qwen2_vl_fallback_processor_equals_the_full_processor():
    try:
        import torchvision  # noqa: F401  # pyright: ignore[reportMissingImports]
    except Exception:
        pytest.skip("torchvision does not import here: the full Qwen2-VL processor cannot be built")
    from transformers import AutoProcessor

    from mme5.backbones.qwen2_vl import processor_without_video

    adapter = get_adapter("tiny-qwen2-vl")
    full = adapter.load_processor(adapter.source)
    assert hasattr(full, "video_processor")
    fallback = adapter._configure_processor(
        processor_without_video(full.image_processor, full.tokenizer, full.chat_template)
    )
    sides = mixed_sides()
    a = adapter.build_inputs(full, sides, max_length=32)
    b = adapter.build_inputs(fallback, sides, max_length=32)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert type(AutoProcessor.from_pretrained(adapter.path)) is type(full)


def test_mllama_mixed_batch_matches_the_pil_processor_on_the_whole_batch():
    adapter = get_adapter("tiny-mllama")
    processor = adapter.load_processor(adapter.source)
    if "Pil" not in type(processor.image_processor).__name__:
        pytest.skip("the torchvision image-processor backend cannot take image-less rows at all")
    sides = mixed_sides()
    ours = adapter.build_inputs(processor, sides, max_length=64)
    texts = [adapter.format_text(s) for s in sides]
    whole = processor(
        text=texts,
        images=[[s.load_image()] if s.has_image else [] for s in sides],
        padding=True,
        return_tensors="pt",
    )
    assert ours.keys() == set(whole.keys())
    for key in ours:
        torch.testing.assert_close(ours[key], whole[key], msg=key)


def test_select_rows_gives_the_rows_of_the_whole_batch(tiny):
    adapter, processor, model = tiny
    sides = mixed_sides()
    inputs = adapter.build_inputs(processor, sides, max_length=64)
    with torch.no_grad():
        whole = adapter.last_hidden_state(model, inputs)
        for rows in (slice(0, 2), slice(2, 5), [4, 1], [3], [1, 4]):  # [1, 4]: text-only rows alone
            part = adapter.select_rows(inputs, rows)
            assert all(
                v.shape[0] == len(whole[rows]) for k, v in part.items() if k not in adapter.per_image_keys
            )
            h = adapter.last_hidden_state(model, part)
            mask = part["attention_mask"].bool()
            torch.testing.assert_close(h[mask], whole[rows][mask], atol=1e-5, rtol=1e-4)
