"""Qwen3-VL, the backbone of Qwen3-VL-Embedding: the chat-formatted prompt, last-token pooling.

Prompts follow Qwen3-VL-Embedding (QwenLM/Qwen3-VL-Embedding @ 8ce3aab,
``src/models/qwen3_vl_embedding.py``): a system turn with the instruction, default
"Represent the user's input." (line 170, used at 239), a user turn holding the images first and
then the text (lines 302-324), rendered by the chat template with ``add_generation_prompt=True``
(330-331), so the sequence ends with ``<|im_start|>assistant\\n``; right padding (188) and the
hidden state of the last non-pad token, L2-normalised (365-370, 387-391). mme5 sides carry their
task instruction inside the text (``Example.query_side``), so it goes into the user turn, under the
default system prompt: the one form every seam shares (the export's sentence-transformers prompts,
vLLM prompt strings, ``mme5 encode --instruction`` and the mteb adapter all prefix the text). A
Qwen3-VL-Embedding checkpoint scored through mme5 thus sees its task instruction in the user turn, not
in the system turn where its own embedder puts it, and may score below its published numbers.

As for Qwen2-VL, the processor is built without its video part where torchvision does not import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mme5.backbones.base import truncate_text
from mme5.backbones.qwen2_vl import (
    Qwen2VLAdapter,
    tiny_tokenizer_and_image_processor,
    write_processor_files,
)
from mme5.records import PUBLIC_IMAGE_TOKEN, Side

#: Qwen3-VL-Embedding's default instruction (its ``Qwen3VLEmbedder.default_instruction``).
DEFAULT_INSTRUCTION = "Represent the user's input."
#: The chat around a side's content, as the Qwen3-VL chat template renders one system and one user turn.
PROMPT_PREFIX = f"<|im_start|>system\n{DEFAULT_INSTRUCTION}<|im_end|>\n<|im_start|>user\n"
PROMPT_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL (``model_type`` ``qwen3_vl``), the Qwen3-VL-Embedding backbone; right padding.

    Unlike Qwen2-VL, Qwen3-VL takes a frame list as a run of images (``frame_input = "images"``), not
    through its video input: ``Qwen3VLProcessor.replace_video_token`` writes ``<t seconds>`` before each
    temporal chunk from the video's metadata (fps and frame indices; 24 fps assumed when missing,
    ``processing_qwen3_vl.py`` lines 75-103), and its video processor resizes over the whole clip,
    while an mme5 frame list carries neither the frame times nor the source video.
    """

    family = "qwen3_vl"
    model_types = ("qwen3_vl",)
    image_token = "<|vision_start|><|image_pad|><|vision_end|>"
    padding_side = "right"
    # Text attention q/k/v/o_proj and MLP down_proj; vision attention qkv / proj (the vision MLP is
    # linear_fc1 / linear_fc2, left out as Qwen2-VL's is).
    lora_targets = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "down_proj",
        r"visual\.blocks\.\d+\.attn\.(?:qkv|proj)",
    )
    skip_quantization = ("lm_head", "visual")
    tiny_version = 1
    #: A frame list is a run of images in the user turn, as the chat template renders several image
    #: parts (each already between vision start / end markers, so nothing separates them). Qwen3-VL
    #: stays on images, not its video input: ``Qwen3VLProcessor`` writes a timestamp before each
    #: temporal chunk of a video, from the video's frame times (``processing_qwen3_vl.py``), which a
    #: list of sampled frames does not carry.
    frame_input = "images"
    frame_separator = ""

    def format_text(self, side: Side) -> str:
        """The chat: system instruction, user turn (the image, then the text), assistant header."""
        text = (side.text or "").replace(PUBLIC_IMAGE_TOKEN, "").replace(self.image_token, "")
        text = text.strip("\n")
        if not text and not side.has_visual:
            text = "NULL"  # as Qwen3-VL-Embedding embeds an empty input (format_model_input, line 270)
        image = self.visual_prompt(side) if side.has_visual else ""
        return PROMPT_PREFIX + image + text + PROMPT_SUFFIX

    def truncate_prompt(self, tokenizer: Any, prompt: str, max_length: int) -> str:
        """Cut the side's own text to ``max_length`` tokens, keeping the chat and the image whole."""
        if not (prompt.startswith(PROMPT_PREFIX) and prompt.endswith(PROMPT_SUFFIX)):
            return super().truncate_prompt(tokenizer, prompt, max_length)
        body = prompt[len(PROMPT_PREFIX) : len(prompt) - len(PROMPT_SUFFIX)]
        image = ""
        while body.startswith(image + self.image_token):  # one image, or a frame list's images
            image += self.image_token
        text = truncate_text(tokenizer, body[len(image) :], max_length)
        return PROMPT_PREFIX + image + text + PROMPT_SUFFIX

    def processor_class(self, path: str | os.PathLike | None = None) -> type:
        from transformers import Qwen3VLProcessor

        return Qwen3VLProcessor

    def model_class_for(self, path: str | os.PathLike) -> type:
        from transformers import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration

    def build_tiny(self, out_dir: str | os.PathLike, seed: int = 0) -> str:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        tok, image_processor, ids = tiny_tokenizer_and_image_processor(CHAT_TEMPLATE, self.padding_side)
        config = Qwen3VLConfig(
            text_config={
                "vocab_size": len(tok),
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "head_dim": 16,
                "max_position_embeddings": 4096,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": 5_000_000.0,
                    "mrope_section": [2, 3, 3],
                    "mrope_interleaved": True,
                },
                "bos_token_id": ids["<|endoftext|>"],
                "eos_token_id": ids["<|im_end|>"],
                "pad_token_id": ids["<|endoftext|>"],
            },
            vision_config={
                "depth": 2,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "patch_size": 8,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "out_hidden_size": 64,
                "num_position_embeddings": 64,
                "deepstack_visual_indexes": [0],
            },
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        image_processor.save_pretrained(out_dir)
        write_processor_files(Path(out_dir), CHAT_TEMPLATE, "Qwen3VLProcessor")
        return str(out_dir)
