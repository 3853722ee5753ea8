"""Qwen2-VL takes a frame list through its video input (``<|video_pad|>``, ``pixel_values_videos``).

The torch-only :class:`~mme5.backbones.qwen2_vl.FrameVideoProcessor` is checked against transformers'
own ``Qwen2VLVideoProcessor`` / ``Qwen2VLProcessor(videos=...)`` in the vLLM environment (the only one
with torchvision): ``-m vllm``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mme5.backbones import get_adapter
from mme5.backbones.qwen2_vl import FrameVideoProcessor, Qwen2VLAdapter
from mme5.records import PUBLIC_IMAGE_TOKEN, Side

MERGE = 2


def noise_frames(n: int, size: tuple[int, int] = (48, 40), seed: int = 0) -> list[Image.Image]:
    """``n`` distinct frames (smooth gradients plus noise, so resizing and patch order matter)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = np.stack([(xx * (3 + i)) % 256, (yy * (5 + i)) % 256, ((xx + yy) * 7 + 31 * i) % 256], -1)
        noisy = np.clip(base + rng.integers(-40, 40, size=base.shape), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(noisy, "RGB"))
    return out


class FramesAsImages(Qwen2VLAdapter):
    """The earlier Qwen2-VL frame rule: one ``<|image_pad|>`` per frame."""

    frame_input = "images"


@pytest.fixture(scope="module")
def qwen():
    adapter = get_adapter("tiny-qwen2-vl")
    processor = adapter.load_processor(adapter.source)
    model = adapter.load_model(adapter.source).eval()
    return adapter, processor, model


def mixed() -> list[Side]:
    frames = noise_frames(8)
    return [
        Side("a text only side"),
        Side(f"{PUBLIC_IMAGE_TOKEN}\nan image side", image=noise_frames(1, (40, 56), seed=5)[0]),
        Side.from_frames(frames, f"{PUBLIC_IMAGE_TOKEN}\nwhat happens in the clip?"),
        Side("another text"),
        Side.from_frames(noise_frames(3, (30, 20), seed=2), "a short clip"),
    ]


def last_token(adapter: Qwen2VLAdapter, model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return adapter.last_hidden_state(model, inputs)[:, -1]  # left padding: the last token


def test_video_prompt_is_vlm2vec_s_bare_video_token(qwen):
    adapter, processor, _ = qwen
    assert adapter.frame_input == "video"
    side = mixed()[2]
    assert adapter.format_text(side) == "<|video_pad|>\nwhat happens in the clip?"
    assert adapter.format_text(mixed()[4]) == "<|video_pad|>\na short clip"
    # an image side is unchanged
    assert adapter.format_text(mixed()[1]) == "<|image_pad|>\nan image side"
    long = Side.from_frames(noise_frames(2), "x " + " ".join(f"w{i}" for i in range(100)))
    cut = adapter.truncate_prompt(processor.tokenizer, adapter.format_text(long), 5)
    assert cut.startswith("<|video_pad|>\n") and "w99" not in cut


def test_mixed_batch_gives_videos_through_the_video_input(qwen):
    adapter, processor, model = qwen
    sides = mixed()
    inputs = adapter.build_inputs(processor, sides, max_length=32)
    grid = inputs["video_grid_thw"]
    # 8 frames -> 4 temporal patches; 3 frames are padded with the last one to 4 -> 2
    assert grid[:, 0].tolist() == [4, 2] and inputs["image_grid_thw"].shape[0] == 1
    assert inputs["pixel_values_videos"].shape[0] == int(grid.prod(-1).sum())
    per_row = (inputs["input_ids"] == adapter.video_placeholder_id).sum(1)
    expected = grid.prod(-1) // MERGE**2
    assert per_row.tolist() == [0, 0, int(expected[0]), 0, int(expected[1])]
    assert (inputs["mm_token_type_ids"] == 2).sum(1).tolist() == per_row.tolist()
    assert adapter.videos_per_row(inputs).tolist() == [0, 0, 1, 0, 1]
    assert adapter.image_rows(inputs).tolist() == [False, True, True, False, True]
    h = last_token(adapter, model, inputs)
    assert torch.isfinite(h).all()
    # the same frames as a run of images embed differently
    as_images = FramesAsImages(adapter.path)
    proc_images = as_images.load_processor(as_images.source)
    image_inputs = as_images.build_inputs(proc_images, sides, max_length=32)
    assert "pixel_values_videos" not in image_inputs
    assert (image_inputs["input_ids"] == adapter.video_placeholder_id).sum() == 0
    h_images = last_token(as_images, model, image_inputs)
    torch.testing.assert_close(h_images[[0, 1, 3]], h[[0, 1, 3]], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(h_images[2], h[2], atol=1e-3)
    # the video's frames reach the model in order
    reordered = Side(sides[2].text, frames=sides[2].frames[::-1])
    h_rev = last_token(adapter, model, adapter.build_inputs(processor, [reordered], max_length=32))
    assert not torch.allclose(h_rev[0], h[2], atol=1e-3)


def test_row_subsets_and_lockstep_equal_the_whole_batch(qwen):
    adapter, processor, model = qwen
    inputs = adapter.build_inputs(processor, mixed(), max_length=32)
    with torch.no_grad():
        whole = adapter.last_hidden_state(model, inputs)
        # GradCache chunks and lockstep sub-batches: select_rows keeps each row's own image / video
        for rows in ([2], [4, 2], [0, 1], [3, 4], [1, 2, 3], [0, 3]):
            part = adapter.select_rows(inputs, rows)
            if "video_grid_thw" in part:
                n = int(part["video_grid_thw"].prod(-1).sum())
                assert part["pixel_values_videos"].shape[0] == n
            h = adapter.last_hidden_state(model, part)
            mask = part["attention_mask"].bool()
            torch.testing.assert_close(h[mask], whole[rows][mask], atol=1e-5, rtol=1e-4)
        dummy_image = adapter.build_inputs(processor, [Side(image=noise_frames(1)[0])], 8)
        dummy_text = adapter.build_inputs(processor, [Side(".")], 8)
        # lockstep: the same module calls whatever the batch holds (images, videos, text, any mix):
        # the vision tower twice (images, videos), the language model three times
        calls = {"visual": 0, "language": 0}

        def counter(name: str):
            def hook(*_: Any) -> None:
                calls[name] += 1

            return hook

        hooks = [
            model.model.visual.register_forward_hook(counter("visual")),
            model.model.language_model.register_forward_hook(counter("language")),
        ]
        try:
            for rows in ([0, 1, 2, 3, 4], [0, 2, 4], [1], [2, 4], [0, 3], [1, 4]):
                calls.update(visual=0, language=0)
                part = adapter.select_rows(inputs, rows)
                lock = adapter.last_hidden_state_lockstep(model, part, dummy_image, dummy_text)
                torch.testing.assert_close(lock[:, -1], whole[rows, -1], atol=1e-5, rtol=1e-4)
                assert calls == {"visual": 2, "language": 3}, rows
        finally:
            for hook in hooks:
                hook.remove()


def test_gradcache_chunks_of_a_video_batch_give_the_same_gradients(qwen):
    adapter, processor, model = qwen
    inputs = adapter.build_inputs(processor, mixed(), max_length=32)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(chunks: list[list[int]]) -> list[torch.Tensor]:
        model.zero_grad()
        for rows in chunks:
            h = adapter.last_hidden_state(model, adapter.select_rows(inputs, rows))[:, -1]
            h.pow(2).sum().backward()
        return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    whole, chunked = grads([[0, 1, 2, 3, 4]]), grads([[0, 2], [1], [3, 4]])
    visual = [i for i, (n, _) in enumerate(model.named_parameters()) if "visual" in n]
    assert any(whole[i].abs().sum() > 0 for i in visual)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)
    model.zero_grad()


def test_frame_video_processor_patches_and_config(tmp_path, qwen):
    adapter, processor, _ = qwen
    video = processor.video_processor
    assert isinstance(video, FrameVideoProcessor) and video.merge_size == MERGE
    frames = noise_frames(3, (30, 20), seed=2)
    out = video([frames])
    t, h, w = out["video_grid_thw"][0].tolist()
    assert (t, h, w) == (2, *(d // video.patch_size for d in video.target_size(20, 30)))
    rows = out["pixel_values_videos"]
    assert rows.shape == (t * h * w, 3 * 2 * video.patch_size**2) and rows.dtype == torch.float32
    # the padded fourth frame repeats the third: the second temporal patch's two halves are equal
    second = rows[h * w :].reshape(h * w, 3, 2, -1)
    torch.testing.assert_close(second[:, :, 0], second[:, :, 1])
    # frames of another size are resized to the first frame's target size
    mixed_sizes = [frames[0], frames[1].resize((60, 44))]
    assert video([mixed_sizes])["video_grid_thw"][0].tolist() == [1, h, w]
    # min_pixels / max_pixels override size, as Qwen2VLVideoProcessor.__init__ does
    custom = FrameVideoProcessor({"min_pixels": 64 * 64, "max_pixels": 96 * 96, "patch_size": 8})
    assert (custom.min_pixels, custom.max_pixels) == (64 * 64, 96 * 96)
    # the processor saves its video config and loads it back
    adapter.save_processor(processor, tmp_path)
    saved = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert saved["video_processor_type"] == "Qwen2VLVideoProcessor"
    again = FrameVideoProcessor.from_pretrained(tmp_path)
    assert (again.min_pixels, again.max_pixels, again.patch_size) == (
        video.min_pixels,
        video.max_pixels,
        video.patch_size,
    )


# ---- the oracle: transformers' own video processor (needs torchvision: the vLLM environment) ---------
# No resize-kernel tolerance is needed: both sides resize with torch's uint8 bicubic kernel (torchvision
# calls ``torch.nn.functional.interpolate`` on the CPU uint8 tensor) and normalise with the same fused
# float32 operations, so pixel_values_videos come out bit-identical.

#: Qwen2-VL-2B-Instruct's processor settings (its preprocessor_config.json).
QWEN2_VL_REAL = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


@pytest.mark.vllm
@pytest.mark.parametrize(
    ("n", "size", "config"),
    [
        (8, (48, 40), None),  # the tiny twin's settings: downscaled to <= 64x64
        (3, (20, 30), None),  # upscaled to >= 32x32, an odd frame count padded
        (8, (320, 240), QWEN2_VL_REAL),  # Qwen2-VL-2B's settings on VGA-sized frames
        (5, (333, 197), {**QWEN2_VL_REAL, "max_pixels": 160 * 28 * 28}),  # downscaled, odd sizes
    ],
)
def test_video_patches_equal_transformers_video_processor(n, size, config):
    pytest.importorskip("torchvision")
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    adapter = get_adapter("tiny-qwen2-vl")
    ours = FrameVideoProcessor(config) if config else FrameVideoProcessor.from_pretrained(adapter.source)
    theirs: Any = (
        Qwen2VLVideoProcessor(**config) if config else Qwen2VLVideoProcessor.from_pretrained(adapter.source)
    )
    frames = noise_frames(n, size, seed=n)
    mine = ours([frames])
    ref = theirs(videos=[frames], return_tensors="pt", cap_pixels_per_frame=False)
    assert mine["video_grid_thw"].tolist() == ref["video_grid_thw"].tolist()
    assert mine["pixel_values_videos"].shape == ref["pixel_values_videos"].shape
    assert torch.equal(mine["pixel_values_videos"], ref["pixel_values_videos"])


def _assert_batch_equals_the_reference(adapter):
    """mme5's inputs for a mixed batch equal transformers' own processor's (with torchvision), every key
    bit for bit: the expanded prompt ids, the modality types, the patches; returns that processor."""
    from transformers import AutoProcessor

    processor = adapter.load_processor(adapter.source)
    reference = AutoProcessor.from_pretrained(adapter.source)
    reference.tokenizer.padding_side = adapter.padding_side
    sides = mixed()
    ours = adapter.build_inputs(processor, sides, max_length=64)
    whole = reference(
        text=[adapter.format_text(s) for s in sides],
        images=[s.load_image() for s in sides if s.has_image],
        videos=[s.load_frames() for s in sides if s.has_frames],
        padding=True,
        return_tensors="pt",
        videos_kwargs={"cap_pixels_per_frame": False},
    )
    assert set(ours) == set(whole)
    for key in ours:
        assert torch.equal(ours[key], whole[key]), key
    return reference


@pytest.mark.vllm
def test_mixed_batch_equals_transformers_processor_with_videos():
    pytest.importorskip("torchvision")

    adapter = get_adapter("tiny-qwen2-vl")
    reference = _assert_batch_equals_the_reference(adapter)
    assert type(reference.video_processor).__name__ == "Qwen2VLVideoProcessor"


def test_mmeb_v2_keeps_video_input_embeddings_apart_and_says_so(tmp_path):
    from types import SimpleNamespace

    from mme5.demo.v2 import build_v2_demo
    from mme5.eval.cache import EmbeddingCache
    from mme5.eval.v2 import load_mmeb_v2, resolve_v2_tasks, run_mmeb_v2, v2_table
    from mme5.eval.v2.runner import takes_video

    assert takes_video(SimpleNamespace(adapter=get_adapter("tiny-qwen2-vl")))
    assert takes_video(SimpleNamespace(encoder=SimpleNamespace(adapter=get_adapter("tiny-qwen2-vl"))))
    assert not takes_video(SimpleNamespace(encoder=SimpleNamespace(adapter=get_adapter("tiny-llava"))))
    assert not takes_video(object())

    def embed(sides: list[Side]) -> torch.Tensor:
        rows = [[1.0, float(len(s.frames)), float(len(s.text or ""))] for s in sides]
        return torch.tensor(rows)

    build_v2_demo(tmp_path / "v2")
    bench = load_mmeb_v2(tmp_path / "v2", resolve_v2_tasks(["MSR-VTT"]), tmp_path / "work")
    cache = EmbeddingCache(tmp_path / "cache")
    video = run_mmeb_v2(embed, bench, cache=cache, fingerprint="fp", video_input=True)
    assert video.video_input and video.encode.from_cache == 0
    assert "through the backbone's video input" in v2_table(video)
    frames = run_mmeb_v2(embed, bench, cache=cache, fingerprint="fp")  # the same model, frames as images
    assert not frames.video_input and frames.encode.from_cache == 0  # nothing reused across the inputs
    assert "list of their 8 sampled frames" in v2_table(frames)
    again = run_mmeb_v2(embed, bench, cache=cache, fingerprint="fp", video_input=True)
    assert again.encode.from_cache == video.encode.encoded > 0 and again.encode.encoded == 0
    tiled = run_mmeb_v2(embed, bench, frame_input="tiled", video_input=True)
    assert not tiled.video_input and "tiled into one image" in v2_table(tiled)


@pytest.fixture(scope="module")
def qwen2_5(tmp_path_factory):
    """A tiny Qwen2.5-VL checkpoint (the Qwen2-VL twin's tokenizer and processor files)."""
    import os
    import shutil

    from transformers import AutoConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    out = tmp_path_factory.mktemp("qwen2_5_vl")
    tiny = get_adapter("tiny-qwen2-vl").source
    for name in os.listdir(tiny):
        if not name.startswith(("model", "config", "mme5")):
            shutil.copy(os.path.join(tiny, name), out / name)
    qwen2: Any = AutoConfig.from_pretrained(tiny)
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
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(out)
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):  # as on the hub
        pre = json.loads((out / name).read_text())
        pre["processor_class"] = "Qwen2_5_VLProcessor"
        (out / name).write_text(json.dumps(pre))
    return str(out)


def test_qwen2_5_vl_videos_carry_their_seconds_per_temporal_patch(qwen2_5):
    adapter = get_adapter(qwen2_5)
    processor = adapter.load_processor(adapter.source)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    inputs = adapter.build_inputs(processor, mixed(), max_length=32)
    # pre-sampled frames: transformers assumes 24 fps (VideoMetadata.sampled_fps), 2 frames a patch
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / 24, 2 / 24])
    model = adapter.load_model(adapter.source).eval()
    with torch.no_grad():
        whole = adapter.last_hidden_state(model, inputs)
        assert torch.isfinite(whole).all()
        for rows in ([4], [4, 2, 0]):  # one per video, following its row
            part = adapter.select_rows(inputs, rows)
            assert part["second_per_grid_ts"].shape[0] == len([r for r in rows if r in (2, 4)])
            h = adapter.last_hidden_state(model, part)
            mask = part["attention_mask"].bool()
            torch.testing.assert_close(h[mask], whole[rows][mask], atol=1e-5, rtol=1e-4)
        # lockstep on a batch without a video runs the dummy video (no second_per_grid_ts) through it
        dummy_image = adapter.build_inputs(processor, [Side(image=noise_frames(1)[0])], 8)
        dummy_text = adapter.build_inputs(processor, [Side(".")], 8)
        lock = adapter.last_hidden_state_lockstep(
            model, adapter.select_rows(inputs, [0, 1]), dummy_image, dummy_text
        )
        torch.testing.assert_close(lock[:, -1], whole[[0, 1], -1], atol=1e-5, rtol=1e-4)


@pytest.mark.vllm
def test_qwen2_5_vl_batch_equals_transformers_processor_with_videos(qwen2_5):
    pytest.importorskip("torchvision")

    adapter = get_adapter(qwen2_5)
    reference = _assert_batch_equals_the_reference(adapter)
    assert type(reference).__name__ == "Qwen2_5_VLProcessor"
