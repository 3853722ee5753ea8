"""Qwen2-VL and Qwen2.5-VL: dynamic-resolution patches replace ``<|image_pad|>`` tokens (M-RoPE positions).

transformers' ``Qwen2VLProcessor`` also owns a video processor, which needs torchvision; where
torchvision does not import, :meth:`Qwen2VLAdapter.load_processor` builds the same processor class
around the (PIL) image processor and the tokenizer alone, so the image+text inputs are produced by
the same code either way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mme5.backbones.base import BackboneAdapter
from mme5.backbones.tokenizer import build_tokenizer

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: The tiny twin sees images resized to between 32x32 and 64x64 pixels (4 to 16 merged tokens).
TINY_MIN_PIXELS = 32 * 32
TINY_MAX_PIXELS = 64 * 64


def processor_without_video(
    image_processor: Any,
    tokenizer: Any,
    chat_template: str | None = None,
    processor_class: type | None = None,
) -> Any:
    """A ``Qwen2VLProcessor`` (or ``processor_class``, e.g. Qwen3-VL's) holding only the image processor
    and tokenizer (no torchvision needed).

    ``ProcessorMixin.__init__`` insists on building the video processor class, which imports
    torchvision; the processor's ``__call__`` only touches the video processor for videos, so the
    instance is assembled without that constructor.
    """
    if processor_class is None:
        from transformers import Qwen2VLProcessor

        processor_class = Qwen2VLProcessor
    proc: Any = object.__new__(processor_class)
    proc.image_processor = image_processor
    proc.tokenizer = tokenizer
    proc.chat_template = (
        chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    )
    proc.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
    proc.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
    proc.image_token_id = tokenizer.convert_tokens_to_ids(proc.image_token)
    proc.video_token_id = tokenizer.convert_tokens_to_ids(proc.video_token)
    proc.vision_start_token = getattr(tokenizer, "vision_bos_token", None) or "<|vision_start|>"
    proc.vision_end_token = getattr(tokenizer, "vision_eos_token", None) or "<|vision_end|>"
    proc.vision_start_token_id = tokenizer.convert_tokens_to_ids(proc.vision_start_token)
    proc.vision_end_token_id = tokenizer.convert_tokens_to_ids(proc.vision_end_token)
    return proc


def tiny_tokenizer_and_image_processor(
    chat_template: str, padding_side: str
) -> tuple[Any, Any, dict[str, int]]:
    """The Qwen-VL tiny twins' offline tokenizer (Qwen's special tokens, ``chat_template``), their small
    image processor (8 px patches, 2x2 merge, 32-64 px images) and the special tokens' ids."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = build_tokenizer(
        SPECIAL_TOKENS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_attributes={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
        chat_template=chat_template,
        padding_side=padding_side,
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=8,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS},
    )
    ids: dict[str, int] = {t: int(tok.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}  # type: ignore[arg-type]
    return tok, image_processor, ids


class Qwen2VLAdapter(BackboneAdapter):
    """Qwen2-VL (``qwen2_vl``) and Qwen2.5-VL (``qwen2_5_vl``); left padding, as the family generates.

    Prompts follow VLM2Vec, whose Qwen2-VL models are the public reference (TIGER-AI-Lab/VLM2Vec
    v1.0): the public ``<|image_1|>`` becomes a bare ``<|image_pad|>`` (``src/model_utils.py``
    lines 29-34, ``src/dataset.py`` line 80), without vision start / end markers, the newline after it
    stays, and the processor repeats it once per merged patch (``processing_qwen2_vl.py`` 133-142);
    the Qwen2 tokenizer adds no BOS or EOS.

    Frame lists go in as images (``frame_input = "images"``: one ``<|image_pad|>`` per frame, newline
    separated), not through ``videos=``: transformers' Qwen2-VL / Qwen3-VL video processors import
    torchvision, which the tiny twins' environment lacks (the processor is built without its video
    part, :func:`processor_without_video`), and one path keeps embeddings the same on every machine.
    VLM2Vec-V2 itself writes ``<|video_pad|>`` for Qwen2-VL videos (``src/model/processor.py:74-77``
    at 6e1e1d4).
    """

    family = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    image_token = "<|image_pad|>"
    padding_side = "left"
    # Text attention q/k/v/o_proj and MLP down_proj (Qwen2.5-VL's vision MLP too); vision attention qkv/proj.
    lora_targets = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "down_proj",
        r"visual\.blocks\.\d+\.attn\.(?:qkv|proj)",
    )
    skip_quantization = ("lm_head", "visual")
    per_image_keys = ("pixel_values", "image_grid_thw")
    placeholder_token = "<|image_pad|>"
    tiny_version = 2

    def model_class_for(self, path: str | os.PathLike) -> type:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(str(path)).model_type
        if model_type == "qwen2_5_vl":
            from transformers import Qwen2_5_VLForConditionalGeneration

            return Qwen2_5_VLForConditionalGeneration
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration

    def load_processor(self, path: str | os.PathLike) -> Any:
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        try:
            processor = AutoProcessor.from_pretrained(str(path))
        except (ImportError, AttributeError, ValueError, OSError, RuntimeError):
            # No usable torchvision: the video processor cannot be built; images do not need it.
            processor = processor_without_video(
                AutoImageProcessor.from_pretrained(str(path)),
                AutoTokenizer.from_pretrained(str(path)),
                processor_class=self.processor_class(),
            )
        return self._configure_processor(processor)

    def processor_class(self) -> type:
        """The transformers processor class of the family (built without its video part if need be)."""
        from transformers import Qwen2VLProcessor

        return Qwen2VLProcessor

    def select_images(self, inputs: dict[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
        # pixel_values holds every image's patches back to back: t * h * w rows per image.
        grid = inputs["image_grid_thw"]
        sizes = grid.prod(dim=-1)
        starts = torch.cumsum(sizes, 0) - sizes
        patches = torch.cat(
            [
                torch.arange(int(starts[i]), int(starts[i] + sizes[i]), device=grid.device)
                for i in images.tolist()
            ]
        )
        return {"pixel_values": inputs["pixel_values"][patches], "image_grid_thw": grid[images]}

    def save_processor(self, processor: Any, out_dir: str | os.PathLike) -> None:
        if hasattr(processor, "video_processor"):
            processor.save_pretrained(str(out_dir))
            return
        processor.tokenizer.save_pretrained(str(out_dir))
        processor.image_processor.save_pretrained(str(out_dir))
        write_processor_files(Path(out_dir), processor.chat_template, self.processor_class().__name__)

    def build_tiny(self, out_dir: str | os.PathLike, seed: int = 0) -> str:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        tok, image_processor, ids = tiny_tokenizer_and_image_processor(CHAT_TEMPLATE, self.padding_side)
        config = Qwen2VLConfig(
            text_config={
                "vocab_size": len(tok),
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 4096,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": 1_000_000.0,
                    "mrope_section": [2, 3, 3],
                },
                "bos_token_id": ids["<|endoftext|>"],
                "eos_token_id": ids["<|im_end|>"],
                "pad_token_id": ids["<|endoftext|>"],
            },
            vision_config={
                "depth": 2,
                "embed_dim": 32,
                "hidden_size": 64,
                "num_heads": 2,
                "mlp_ratio": 2,
                "patch_size": 8,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
        model.save_pretrained(out_dir)
        tok.save_pretrained(out_dir)
        image_processor.save_pretrained(out_dir)
        write_processor_files(Path(out_dir), CHAT_TEMPLATE, "Qwen2VLProcessor")
        return str(out_dir)


def write_processor_files(out: Path, chat_template: str | None, processor_class: str) -> None:
    """The files that let ``AutoProcessor`` (with torchvision) build the full processor, as on the hub.

    ``processor_class`` is e.g. ``Qwen2VLProcessor``; the video processor is its family's
    (``Qwen2VLVideoProcessor``, ``Qwen3VLVideoProcessor``).
    """
    pre = json.loads((out / "preprocessor_config.json").read_text())
    pre["processor_class"] = processor_class
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    video = {k: v for k, v in pre.items() if k != "image_processor_type"}
    video["video_processor_type"] = processor_class.replace("Processor", "VideoProcessor")
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    if chat_template:
        (out / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}, indent=2))
