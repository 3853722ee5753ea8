"""LLaVA (1.5): a CLIP vision tower whose patch features replace ``<image>`` placeholder tokens."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from mme5.backbones.base import BackboneAdapter
from mme5.backbones.tokenizer import build_tokenizer

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
#: The tiny twins' vision tower: 32 px images in 8 px patches (16 patches + CLS).
TINY_IMAGE = 32
TINY_PATCH = 8


def tiny_llava_tokenizer(padding_side: str) -> Any:
    """The offline tokenizer shared by the LLaVA and LLaVA-NeXT twins.

    It prepends ``<s>`` as the real checkpoints' Llama / Mistral tokenizers do (``add_bos_token``).
    """
    return build_tokenizer(
        SPECIAL_TOKENS,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_attributes={"image_token": "<image>"},
        chat_template=CHAT_TEMPLATE,
        padding_side=padding_side,
        add_bos=True,
    )


@dataclass(frozen=True)
class TinySizes:
    """Sizes of a tiny twin: a Llama text model and a CLIP vision tower (32 px images in 8 px patches).

    The defaults are the mme5 twins'; vLLM's CPU attention needs a text head size of 32, 64, 80, ...
    (``text_hidden / text_heads``), e.g. ``TinySizes(text_hidden=128, text_kv_heads=4, ...)``.
    """

    text_hidden: int = 64
    text_intermediate: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    vision_hidden: int = 32
    vision_intermediate: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    projection_dim: int = 32


def tiny_text_and_vision(
    tok: Any, sizes: TinySizes = TinySizes(), eos_token_id: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Config dicts of the tiny twin's Llama (``eos_token_id`` defaults to the tokenizer's) and CLIP tower."""
    text = {
        "model_type": "llama",
        "vocab_size": len(tok),
        "hidden_size": sizes.text_hidden,
        "num_hidden_layers": sizes.text_layers,
        "num_attention_heads": sizes.text_heads,
        "num_key_value_heads": sizes.text_kv_heads,
        "intermediate_size": sizes.text_intermediate,
        "max_position_embeddings": 4096,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id if eos_token_id is None else eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision = {
        "model_type": "clip_vision_model",
        "hidden_size": sizes.vision_hidden,
        "intermediate_size": sizes.vision_intermediate,
        "num_hidden_layers": sizes.vision_layers,
        "num_attention_heads": sizes.vision_heads,
        "image_size": TINY_IMAGE,
        "patch_size": TINY_PATCH,
        "projection_dim": sizes.projection_dim,
    }
    return text, vision


def build_tiny_llava(
    out_dir: str | os.PathLike,
    tok: Any,
    *,
    seed: int = 0,
    sizes: TinySizes = TinySizes(),
    chat_template: str = CHAT_TEMPLATE,
    eos_token_id: int | None = None,
    image_processor: Any = None,
) -> Any:
    """Save a tiny random-initialised LLaVA (weights, ``tok``, processor) to ``out_dir``; returns the model.

    ``image_processor`` defaults to transformers' PIL LLaVA processor at 32 px; ``eos_token_id``
    (default: the tokenizer's) also goes into the generation config.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    if image_processor is None:
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": TINY_IMAGE}, crop_size={"height": TINY_IMAGE, "width": TINY_IMAGE}
        )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=TINY_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    text, vision = tiny_text_and_vision(tok, sizes, eos_token_id)
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=tok.image_token_id,
        image_seq_length=(TINY_IMAGE // TINY_PATCH) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    if eos_token_id is not None:
        model.generation_config.eos_token_id = eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return model


class LlavaAdapter(BackboneAdapter):
    """LLaVA-1.5 style models (``model_type`` ``llava``).

    Prompts follow VLM2Vec's LLaVA-NeXT rule (TIGER-AI-Lab/VLM2Vec v1.0 ``src/model_utils.py``
    lines 29-34, ``src/dataset.py`` line 80): ``<|image_1|>`` becomes ``<image>``, the newline after it
    stays, the processor repeats it once per image feature and the tokenizer prepends ``<s>``.
    """

    family = "llava"
    model_types = ("llava",)
    image_token = "<image>"
    padding_side = "right"
    # Llama self-attention (q/k/v/o_proj), CLIP attention (q/k/v_proj, out_proj), Llama MLP down_proj.
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "down_proj")
    skip_quantization = ("lm_head", "multi_modal_projector", "vision_tower")
    tiny_version = 3  # 3: the twin's tokenizer prepends <s>

    def model_class_for(self, path: str | os.PathLike) -> type:
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def build_tiny(self, out_dir: str | os.PathLike, seed: int = 0) -> str:
        build_tiny_llava(out_dir, tiny_llava_tokenizer(self.padding_side), seed=seed)
        return str(out_dir)
