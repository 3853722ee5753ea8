"""Per-family frame handling: the prompt of a frame-list side, its truncation, and the one-image rule."""

from __future__ import annotations

import random

import pytest
from PIL import Image

from mme5.backbones import TINY_NAMES, BackboneError, get_adapter
from mme5.records import PUBLIC_IMAGE_TOKEN, Side


def frames(n: int, seed: int = 0) -> list[Image.Image]:
    rng = random.Random(seed)
    return [Image.new("RGB", (36, 28), tuple(rng.randrange(256) for _ in range(3))) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(TINY_NAMES))
def test_frame_prompt_has_one_image_token_per_frame(name: str):
    adapter = get_adapter(name)
    side = Side.from_frames(frames(4), f"{PUBLIC_IMAGE_TOKEN}\nwhat happens in the clip?")
    prompt = adapter.format_text(side)
    expected = {"single": 1, "images": 4, "video": 0}[adapter.frame_input]
    assert prompt.count(adapter.image_token) == expected and PUBLIC_IMAGE_TOKEN not in prompt
    if adapter.frame_input == "video":  # one video token for the whole frame list
        assert adapter.video_token is not None and prompt.count(adapter.video_token) == 1
    assert "what happens in the clip?" in prompt
    # a frame side without the public token gets its frames first, as an image side gets its image
    bare = adapter.format_text(Side.from_frames(frames(2), "caption"))
    image = adapter.format_text(Side("caption", image=frames(1)[0]))
    assert bare.replace(adapter.visual_prompt(Side.from_frames(frames(2))), "<V>") == image.replace(
        adapter.image_token, "<V>"
    )
    # an image side formats exactly as before frame lists existed
    assert adapter.visual_prompt(Side("x", image=frames(1)[0])) == adapter.image_token


@pytest.mark.parametrize("name", sorted(n for n in TINY_NAMES if TINY_NAMES[n].frame_input == "images"))
def test_truncation_never_cuts_into_the_frames(name: str):
    adapter = get_adapter(name)
    processor = adapter.load_processor(adapter.source)
    long = " ".join(f"word{i}" for i in range(200))
    side = Side.from_frames(frames(5), f"before {PUBLIC_IMAGE_TOKEN}\n{long}")
    prompt = adapter.truncate_prompt(processor.tokenizer, adapter.format_text(side), 12)
    assert prompt.count(adapter.image_token) == 5 and adapter.visual_prompt(side) in prompt
    assert "word199" not in prompt and "word0" in prompt


def test_qwen2_vl_takes_frames_as_one_video():
    adapter = get_adapter("tiny-qwen2-vl")
    assert adapter.frame_input == "video"
    side = Side.from_frames(frames(4), f"{PUBLIC_IMAGE_TOKEN}\nwhat happens in the clip?")
    assert adapter.format_text(side) == "<|video_pad|>\nwhat happens in the clip?"
    assert adapter.visual_prompt(side) == "<|video_pad|>"
    assert isinstance(adapter.side_images(side), list) and len(adapter.side_images(side)) == 4


def test_mllama_takes_one_frame_and_refuses_more_in_one_line():
    adapter = get_adapter("tiny-mllama")
    one = Side.from_frames(frames(1))
    assert isinstance(adapter.side_images(one), Image.Image)
    with pytest.raises(BackboneError) as info:
        adapter.side_images(Side.from_frames(frames(3)))
    assert "\n" not in str(info.value) and "use frames" in str(info.value)
