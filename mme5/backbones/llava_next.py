"""LLaVA-NeXT (LLaVA-1.6, VLM2Vec's backbone): any-resolution tiling of the CLIP tower's input."""

from __future__ import annotations

import os

import torch

from mme5.backbones.llava import (
    CHAT_TEMPLATE,
    TINY_IMAGE,
    TINY_PATCH,
    LlavaAdapter,
    tiny_llava_tokenizer,
    tiny_text_and_vision,
)

#: Small any-resolution grid for the tiny twin (multiples of the 32 px base image).
TINY_GRID_PINPOINTS = [[32, 64], [64, 32], [64, 64]]


class LlavaNextAdapter(LlavaAdapter):
    """LLaVA-NeXT models (``model_type`` ``llava_next``); the number of image tokens depends on the image."""

    family = "llava_next"
    model_types = ("llava_next",)
    tiny_version = 3  # 3: the twin's tokenizer prepends <s>

    def model_class_for(self, path: str | os.PathLike) -> type:
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration

    def build_tiny(self, out_dir: str | os.PathLike, seed: int = 0) -> str:
        from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        tok = tiny_llava_tokenizer(self.padding_side)
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": TINY_IMAGE},
            crop_size={"height": TINY_IMAGE, "width": TINY_IMAGE},
            image_grid_pinpoints=TINY_GRID_PINPOINTS,
        )
        processor = LlavaNextProcessor(
            image_processor=image_processor,
            tokenizer=tok,
            patch_size=TINY_PATCH,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=CHAT_TEMPLATE,
        )
        text, vision = tiny_text_and_vision(tok)
        config = LlavaNextConfig(
            text_config=text,
            vision_config=vision,
            image_token_index=tok.image_token_id,
            image_grid_pinpoints=TINY_GRID_PINPOINTS,
            image_seq_length=(TINY_IMAGE // TINY_PATCH) ** 2,
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
        )
        torch.manual_seed(seed)
        model = LlavaNextForConditionalGeneration(config)
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        return str(out_dir)
