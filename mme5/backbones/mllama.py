"""Mllama (Llama-3.2-Vision), the mmE5 backbone: images enter through cross-attention layers."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from mme5.backbones.base import BackboneAdapter
from mme5.backbones.tokenizer import build_tokenizer
from mme5.records import Side

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|image|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


class MllamaAdapter(BackboneAdapter):
    """Llama-3.2-Vision (``model_type`` ``mllama``).

    The processor pads image-less rows of a mixed batch with a zero image and an all-zero
    cross-attention mask, but transformers' cross-attention then lets such rows attend uniformly to
    the padding image (only the cross-attention MLP is masked). So that a text-only side embeds the
    same whatever else is in its batch, :meth:`last_hidden_state` runs the image rows and the
    text-only rows as two sub-batches (the text-only one skips the cross-attention layers, as a
    text-only batch does) and puts the rows back in order.

    Prompts follow mmE5's collator (haon-chen/mmE5 ``src/collator.py`` lines 212-215 and 313-315):
    the public ``<|image_1|>\n`` becomes ``<|image|><|begin_of_text|>``, so the text follows the
    image token and a BOS without the newline (see :meth:`format_text`).
    """

    family = "mllama"
    model_types = ("mllama",)
    image_token = "<|image|>"
    padding_side = "right"
    # Text self-attention, cross-attention and vision attention all name their projections q/k/v/o_proj.
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
    skip_quantization = ("lm_head", "multi_modal_projector", "vision_model")
    per_image_keys = ()  # every tensor is per row: [B, max_images, ...]
    #: Llama-3.2-Vision has no video input and is used with one image per prompt (mmE5 gives it
    #: one), so a frame list of more than one frame is refused in one line.
    frame_input = "single"
    tiny_version = 4  # 4: the twin's tokenizer prepends <|begin_of_text|>, as Llama-3.2-Vision's does

    #: What follows the image token in mmE5's prompts (its collator's replacement of ``<|image_1|>\n``).
    bos_after_image = "<|begin_of_text|>"

    def format_text(self, side: Side) -> str:
        """The base layout, with the newline after the image token replaced by ``<|begin_of_text|>``.

        mmE5 writes ``<|image_1|>\n`` as ``<|image|><|begin_of_text|>`` (``src/collator.py`` 215, 315);
        ``MllamaProcessor`` then leaves the prompt as it is (it holds the BOS) and the tokenizer
        prepends its own BOS. A text-only side gets the processor's BOS plus the tokenizer's, as in
        mmE5 (which turns a text-only ``<|image_1|>\n`` into ``<|begin_of_text|>``, line 313).
        """
        text = super().format_text(side)
        if side.has_visual:  # an image, or the one frame Mllama takes
            text = text.replace(self.image_token + "\n", self.image_token + self.bos_after_image, 1)
        return text

    def model_class_for(self, path: str | os.PathLike) -> type:
        from transformers import MllamaForConditionalGeneration

        return MllamaForConditionalGeneration

    def processor_call(self, processor: Any, texts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Image rows and text-only rows are processed apart, then merged into one batch.

        transformers' torchvision image-processor backend cannot take a batch with image-less rows
        (the PIL one pads them); merging here gives both backends the PIL layout: zero pixel values,
        aspect ratio id 0 and an all-zero cross-attention mask for text-only rows.
        """
        image_rows = [i for i, im in enumerate(images) if im is not None]
        text_rows = [i for i, im in enumerate(images) if im is None]
        if not image_rows:
            return dict(processor(text=texts, padding=True, return_tensors="pt"))
        with_images = processor(
            text=[texts[i] for i in image_rows],
            images=[[images[i]] for i in image_rows],
            padding=True,
            return_tensors="pt",
        )
        if not text_rows:
            return dict(with_images)
        text_only = processor(text=[texts[i] for i in text_rows], padding=True, return_tensors="pt")
        return _merge_rows(with_images, image_rows, text_only, text_rows, processor.tokenizer)

    def image_rows(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = inputs.get("cross_attention_mask")
        if inputs.get("pixel_values") is None or mask is None:
            return torch.zeros(
                inputs["input_ids"].shape[0], dtype=torch.bool, device=inputs["input_ids"].device
            )
        return mask.flatten(1).any(dim=1)

    def text_only(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return _text_only(inputs)

    def last_hidden_state(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = inputs.get("cross_attention_mask")
        if inputs.get("pixel_values") is None or mask is None:
            return super().last_hidden_state(model, _text_only(inputs))
        has_image = mask.flatten(1).any(dim=1)
        if bool(has_image.all()):
            return super().last_hidden_state(model, inputs)
        if not bool(has_image.any()):
            return super().last_hidden_state(model, _text_only(inputs))
        image_rows = has_image.nonzero().squeeze(1)
        text_rows = (~has_image).nonzero().squeeze(1)
        h_image = super().last_hidden_state(model, {k: v[image_rows] for k, v in inputs.items()})
        h_text = super().last_hidden_state(model, _text_only({k: v[text_rows] for k, v in inputs.items()}))
        order = torch.argsort(torch.cat([image_rows, text_rows]))
        return torch.cat([h_image, h_text])[order.to(h_image.device)]

    def build_tiny(self, out_dir: str | os.PathLike, seed: int = 0) -> str:
        from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
        from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

        tok = build_tokenizer(
            SPECIAL_TOKENS,
            bos_token="<|begin_of_text|>",
            eos_token="<|end_of_text|>",
            pad_token="<|finetune_right_pad_id|>",
            extra_attributes={"image_token": self.image_token},
            chat_template=CHAT_TEMPLATE,
            padding_side=self.padding_side,
            add_bos=True,
        )
        image_processor = MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=1)
        processor = MllamaProcessor(image_processor, tok, chat_template=CHAT_TEMPLATE)
        config = MllamaConfig(
            vision_config={
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_global_layers": 1,
                "attention_heads": 2,
                "intermediate_size": 64,
                "vision_output_dim": 96,
                "image_size": 32,
                "patch_size": 8,
                "max_num_tiles": 1,
                "intermediate_layers_indices": [0, 1],
                "supported_aspect_ratios": [[1, 1]],
            },
            text_config={
                "vocab_size": len(tok),
                "hidden_size": 64,
                "num_hidden_layers": 3,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "intermediate_size": 128,
                "cross_attention_layers": [1],
                "bos_token_id": tok.bos_token_id,
                "eos_token_id": tok.eos_token_id,
                "pad_token_id": tok.pad_token_id,
                "max_position_embeddings": 4096,
            },
            image_token_index=tok.image_token_id,  # type: ignore[arg-type] (an int for this tokenizer)
        )
        torch.manual_seed(seed)
        model = MllamaForConditionalGeneration(config)
        # Mllama's scalar gates (cross-attention, gated vision layers, tile embeddings) start at zero,
        # so images would have no effect; open them as a trained checkpoint has them.
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "gate" in name.rsplit(".", 1)[-1] and param.numel() == 1:
                    param.uniform_(0.5, 1.0)
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        return str(out_dir)


IMAGE_KEYS = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask")


def _text_only(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in inputs.items() if k not in IMAGE_KEYS}


def _pad_length(t: torch.Tensor, length: int, value: int, side: str) -> torch.Tensor:
    """Pad dim 1 of ``t`` to ``length`` on ``side``."""
    extra = length - t.shape[1]
    if extra <= 0:
        return t
    pad = torch.full((t.shape[0], extra, *t.shape[2:]), value, dtype=t.dtype)
    return torch.cat([pad, t] if side == "left" else [t, pad], dim=1)


def _merge_rows(
    images: Any, image_rows: list[int], texts: Any, text_rows: list[int], tokenizer: Any
) -> dict[str, torch.Tensor]:
    """One batch from an image sub-batch and a text-only sub-batch, rows back in their original order."""
    side = tokenizer.padding_side
    length = max(images["input_ids"].shape[1], texts["input_ids"].shape[1])
    order = torch.argsort(torch.tensor(image_rows + text_rows))
    out: dict[str, torch.Tensor] = {}
    for key, pad in (("input_ids", tokenizer.pad_token_id), ("attention_mask", 0)):
        both = torch.cat(
            [_pad_length(images[key], length, pad, side), _pad_length(texts[key], length, pad, side)]
        )
        out[key] = both[order]
    cross = _pad_length(images["cross_attention_mask"], length, 0, side)
    out["cross_attention_mask"] = torch.cat([cross, cross.new_zeros((len(text_rows), *cross.shape[1:]))])[
        order
    ]
    pixels = images["pixel_values"]
    out["pixel_values"] = torch.cat([pixels, pixels.new_zeros((len(text_rows), *pixels.shape[1:]))])[order]
    ids = images["aspect_ratio_ids"]
    out["aspect_ratio_ids"] = torch.cat([ids, ids.new_zeros((len(text_rows), *ids.shape[1:]))])[order]
    mask = images["aspect_ratio_mask"]
    padding_mask = mask.new_zeros((len(text_rows), *mask.shape[1:]))
    padding_mask[..., 0] = 1  # as the image processor marks the first tile of padding images
    out["aspect_ratio_mask"] = torch.cat([mask, padding_mask])[order]
    return out
