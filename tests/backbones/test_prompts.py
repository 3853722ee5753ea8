"""Prompts token for token: each family's input ids against the official collators' rules.

The expected ids are written down from the official code, applied to the tiny twin's offline
tokenizer (``enc`` below is that tokenizer without special tokens; image placeholders and BOS are
spelled out). The sides are MMEB's public layout: a text side, an image side whose text is only the
candidate instruction, and an image+text side (an instruction with a question).

mmE5 (haon-chen/mmE5 @ 4818cdf, the Mllama reference, transformers 4.48.3 in its requirements.txt):
  - ``src/collator.py`` 212 / 313: a text-only side's ``<|image_1|>\\n`` becomes ``<|begin_of_text|>``;
    215 / 315: an image side's ``<|image_1|>\\n`` becomes ``<|image|><|begin_of_text|>``, so the
    newline after the image token is dropped and the text follows a BOS.
  - 218 / 232 (317 / 322): ``processor(text=..., images=...)``, i.e. ``MllamaProcessor``, whose
    ``build_string_from_input`` prepends ``<|begin_of_text|>`` to a prompt holding none (after any
    leading image tokens) and whose tokenizer call keeps ``add_special_tokens`` on: the Llama-3.2
    tokenizer then prepends one more BOS (vllm-project/vllm#10910: ``<|image|><|begin_of_text|>`` is
    ``128000, 128256, 128000``). No EOS is appended; padding is right-side (``pad_sequence``, 266).
VLM2Vec v1.0 (TIGER-AI-Lab/VLM2Vec @ ba1e02b, the Qwen2-VL / LLaVA-NeXT reference):
  - ``src/dataset.py`` 80-82: ``<|image_1|>`` is replaced by the backbone's token from
    ``src/model_utils.py`` 29-34: ``<image>`` (LLaVA-NeXT), ``<|image_pad|>`` (Qwen2-VL, Qwen2.5-VL),
    with no vision start / end markers; the newline after it stays.
  - ``src/model_utils.py`` 102 / 113 (LLaVA-NeXT) and 207 / 218 (Qwen2-VL): the processor on one side
    at a time; it repeats the image token once per image feature (Qwen2-VL: ``grid_t * grid_h *
    grid_w / merge_size**2``, ``src/vlm_backbone/qwen2_vl/processing_qwen2_vl.py`` 133-142) and the
    tokenizer adds its own specials: ``<s>`` for the Mistral / Llama tokenizer of LLaVA-NeXT, nothing
    for Qwen2. No EOS is appended.
  - Phi-3.5-V (``<|image_1|>`` kept as is) is not a family here: it needs remote code.
LLaVA-1.5 has no official embedding collator; it follows the LLaVA-NeXT rule (same processor layout).
Qwen3-VL-Embedding (QwenLM/Qwen3-VL-Embedding @ 8ce3aab, the Qwen3-VL reference,
``src/models/qwen3_vl_embedding.py``):
  - 238-241: a system turn with the instruction (default "Represent the user's input.", line 170) and a
    user turn; 302-324: the images first, then the text; 330-331: the chat template with
    ``add_generation_prompt=True``, i.e. ``<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n
    <|vision_start|><|image_pad|>...<|vision_end|>{text}<|im_end|>\n<|im_start|>assistant\n``; the Qwen
    tokenizer adds no BOS or EOS. mme5 keeps the task instruction in the side's text (user turn), and
    the public ``<|image_1|>\n`` is dropped since the image has its own place (as the official MMEB
    readers strip it, ``src/evaluation/mmeb_v2/data/datasets/image_i2t_eval.py`` 20).
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from mme5.backbones import TINY_NAMES, get_adapter
from mme5.records import PUBLIC_IMAGE_TOKEN, Side

TEXT = "Find me an everyday image that matches the given caption: A cat and a dog."
CANDIDATE = "Represent the given image."
QUESTION = "Represent the given image with the following question: What is in the image?"


def photo(size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(skdata.astronaut()).convert("RGB").resize(size)


def sides() -> dict[str, Side]:
    """MMEB's public layout: the image token, a newline, then the instruction (and question)."""
    return {
        "text": Side(TEXT),
        "image": Side(f"{PUBLIC_IMAGE_TOKEN}\n{CANDIDATE}", photo((48, 40))),
        "image+text": Side(f"{PUBLIC_IMAGE_TOKEN}\n{QUESTION}", photo((30, 70))),
    }


@pytest.fixture(scope="module", params=list(TINY_NAMES))
def family(request):
    adapter = get_adapter(request.param)
    return adapter, adapter.load_processor(adapter.source)


def unpadded(inputs: dict[str, torch.Tensor], row: int) -> list[int]:
    return inputs["input_ids"][row][inputs["attention_mask"][row].bool()].tolist()


def expected_ids(
    adapter, processor, name: str, inputs: dict[str, torch.Tensor], body: str | None = None
) -> list[int]:
    """The official input ids of side ``name`` (its own processor output gives the image sizes);
    ``body`` replaces the side's text."""
    tok = processor.tokenizer

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    if body is None:
        body = {"text": TEXT, "image": CANDIDATE, "image+text": QUESTION}[name]
    family = adapter.family
    if family == "mllama":
        bos, image = tok.convert_tokens_to_ids("<|begin_of_text|>"), tok.convert_tokens_to_ids("<|image|>")
        if name == "text":  # processor BOS + tokenizer BOS (mmE5 src/collator.py 212, 218)
            return [bos, bos, *enc(body)]
        # tokenizer BOS, the image token, the BOS that replaced the newline (src/collator.py 215)
        return [bos, image, bos, *enc(body)]
    if family in ("llava", "llava_next"):
        bos, image = tok.convert_tokens_to_ids("<s>"), tok.convert_tokens_to_ids("<image>")
        if name == "text":
            return [bos, *enc(body)]
        if family == "llava":
            n = (32 // 8) ** 2  # the tiny CLIP tower's patches ("default" strategy drops CLS)
        else:
            h, w = inputs["image_sizes"][0].tolist()  # minus CLS ("default" strategy)
            n = processor._get_number_of_features(h, w, 32, 32) - 1
        return [bos, *[image] * n, *enc("\n" + body)]
    if family == "qwen2_vl":
        pad = tok.convert_tokens_to_ids("<|image_pad|>")
        if name == "text":
            return enc(body)
        n = int(inputs["image_grid_thw"][0].prod()) // processor.image_processor.merge_size**2
        return [*[pad] * n, *enc("\n" + body)]
    if family == "qwen3_vl":
        special = {t: tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")}
        start, end = special["<|im_start|>"], special["<|im_end|>"]
        head = [start, *enc("system\nRepresent the user's input."), end, *enc("\n"), start, *enc("user\n")]
        tail = [end, *enc("\n"), start, *enc("assistant\n")]
        if name == "text":
            return [*head, *enc(body), *tail]
        vision = [
            tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>")
        ]
        n = int(inputs["image_grid_thw"][0].prod()) // processor.image_processor.merge_size**2
        return [*head, vision[0], *[vision[1]] * n, vision[2], *enc(body), *tail]
    raise AssertionError(f"no official prompt rule written down for family {family!r}")


def test_every_family_has_an_official_rule(family):
    adapter, processor = family
    for name, side in sides().items():
        inputs = adapter.build_inputs(processor, [side], max_length=512)
        assert expected_ids(adapter, processor, name, inputs)


@pytest.mark.parametrize("name", ["text", "image", "image+text"])
def test_side_ids_equal_the_official_collator(family, name):
    adapter, processor = family
    side = sides()[name]
    inputs = adapter.build_inputs(processor, [side], max_length=512)
    assert unpadded(inputs, 0) == expected_ids(adapter, processor, name, inputs)


def test_mixed_batch_rows_equal_their_official_ids(family):
    """Padding and sub-batching in a mixed batch leave each row's ids as the side alone has them."""
    adapter, processor = family
    named = sides()
    order = ["image", "text", "image+text", "text"]
    batch = adapter.build_inputs(processor, [named[n] for n in order], max_length=512)
    for row, name in enumerate(order):
        alone = adapter.build_inputs(processor, [named[name]], max_length=512)
        assert unpadded(batch, row) == expected_ids(adapter, processor, name, alone), (row, name)


def test_literal_ids_of_the_special_positions():
    """The positions the official rules fix, as literal ids of the twins' vocabularies."""
    mllama = get_adapter("tiny-mllama")
    processor = mllama.load_processor(mllama.source)
    ids = unpadded(mllama.build_inputs(processor, [sides()["image"]], max_length=64), 0)
    assert ids[:3] == [0, 3, 0]  # <|begin_of_text|> <|image|> <|begin_of_text|>
    text_ids = unpadded(mllama.build_inputs(processor, [Side(TEXT)], max_length=64), 0)
    assert text_ids[:2] == [0, 0] and 1 not in text_ids  # two BOS, no <|end_of_text|>
    assert mllama.format_text(sides()["image"]) == f"<|image|><|begin_of_text|>{CANDIDATE}"
    llava = get_adapter("tiny-llava-next")
    processor = llava.load_processor(llava.source)
    ids = unpadded(llava.build_inputs(processor, [sides()["image"]], max_length=64), 0)
    assert ids[0] == 1 and ids[1] == 4 and 2 not in ids  # <s> <image>..., no </s>
    qwen = get_adapter("tiny-qwen2-vl")
    processor = qwen.load_processor(qwen.source)
    ids = unpadded(qwen.build_inputs(processor, [sides()["image"]], max_length=64), 0)
    assert ids[0] == 5 and 3 not in ids and 4 not in ids  # <|image_pad|> first, no vision markers
    assert qwen.format_text(sides()["image"]) == f"<|image_pad|>\n{CANDIDATE}"


def test_a_bare_image_side_gets_the_image_token_alone(family):
    """A side with an image and no text (not in the official data) is the image token and specials."""
    adapter, processor = family
    inputs = adapter.build_inputs(processor, [Side(None, photo((40, 40)))], max_length=16)
    ids = unpadded(inputs, 0)
    tok = processor.tokenizer
    placeholder = tok.convert_tokens_to_ids(adapter.placeholder_token or adapter.image_token)
    assert placeholder in ids
    if adapter.family == "qwen3_vl":  # the chat around an empty user text
        assert ids == expected_ids(adapter, processor, "image", inputs, body="")
        return
    text_ids = [i for i in ids if i != placeholder and i not in tok.all_special_ids]
    assert text_ids == []
