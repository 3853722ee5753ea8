"""LLaVA (1.5): a CLIP vision tower whose patch features replace ``<image>`` placeholder tokens."""

from __future__ import annotations

import os
from typing import Any

import torch

from mme5.backbones.base import BackboneAdapter
from mme5.backbones.tokenizer import build_tokenizer

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
#: The tiny twins' vision tower: 32 px images in 8 px patches (16 patches + CLS).
TINY_IMAGE = 32
TINY_PATCH = 8


def tiny_llava_tokenizer(padding_side: str) -> Any:
    """The offline tokenizer shared by the LLaVA and LLaVA-NeXT twins."""
    return build_tokenizer(
        SPECIAL_TOKENS, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_attributes={"image_token": "<image>"}, chat_template=CHAT_TEMPLATE, padding_side=padding_side,
    )


def tiny_text_and_vision(tok: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Config dicts for a 2-layer Llama (hidden 64) and a 2-layer CLIP vision tower (hidden 32)."""
    text = {
        "model_type": "llama", "vocab_size": len(tok), "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 4096,
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
    }
    vision = {
        "model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": TINY_IMAGE, "patch_size": TINY_PATCH, "projection_dim": 32,
    }
    return text, vision


class LlavaAdapter(BackboneAdapter):
    """LLaVA-1.5 style models (``model_type`` ``llava``)."""

    family = "llava"
    model_types = ("llava",)
    image_token = "<image>"
    padding_side = "right"
    # Llama self-attention (q/k/v/o_proj), CLIP attention (q/k/v_proj, out_proj), Llama MLP down_proj.
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "down_proj")
    skip_quantization = ("lm_head", "multi_modal_projector", "vision_tower")
    tiny_version = 2

    def model_class_for(self, path: str | os.PathLike) -> type:
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def build_tiny(self, out_dir: str | os.PathLike, seed: int = 0) -> str:
        from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

        tok = tiny_llava_tokenizer(self.padding_side)
        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": TINY_IMAGE}, crop_size={"height": TINY_IMAGE, "width": TINY_IMAGE})
        processor = LlavaProcessor(
            image_processor=image_processor, tokenizer=tok, patch_size=TINY_PATCH,
            vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
        )
        text, vision = tiny_text_and_vision(tok)
        config = LlavaConfig(
            text_config=text, vision_config=vision, image_token_index=tok.image_token_id,
            image_seq_length=(TINY_IMAGE // TINY_PATCH) ** 2, vision_feature_select_strategy="default",
            vision_feature_layer=-1,
        )
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        return str(out_dir)
