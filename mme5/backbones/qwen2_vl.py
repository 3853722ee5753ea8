"""Qwen2-VL and Qwen2.5-VL: dynamic-resolution patches replace ``<|image_pad|>`` tokens (M-RoPE positions).

transformers' ``Qwen2VLProcessor`` also owns a video processor, which needs torchvision; where
torchvision does not import, :meth:`Qwen2VLAdapter.load_processor` builds the same processor class
around the (PIL) image processor and the tokenizer alone, so the image+text inputs are produced by
the same code either way. Its video part is always :class:`FrameVideoProcessor`, mme5's own
torch-only version of ``Qwen2VLVideoProcessor``, so a video embeds the same with or without
torchvision.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from mme5.backbones.base import BackboneAdapter, BackboneError
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
#: ``Qwen2VLVideoProcessor``'s defaults (``models/qwen2_vl/video_processing_qwen2_vl.py`` lines 117-132
#: of transformers 5.19-5.24; ``rescale_factor`` from ``video_processing_utils.py`` line 78), used for
#: what a checkpoint's video config leaves out.
VIDEO_DEFAULTS: dict[str, Any] = {
    "size": {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768},
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "rescale_factor": 1 / 255,
    "resample": 3,
    "do_resize": True,
    "do_rescale": True,
    "do_normalize": True,
}
#: PIL resampling codes -> ``torch.nn.functional.interpolate`` modes (as torchvision maps them).
RESAMPLE_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule (``image_processing_pil_qwen2_vl.py`` lines 55-80, the same in
    ``video_processing_qwen2_vl.py`` 44-70): both sides multiples of ``factor`` (patch x merge), the
    area within [``min_pixels``, ``max_pixels``], the aspect ratio kept as closely as possible."""
    if max(height, width) / min(height, width) > 200:
        raise BackboneError(
            f"a frame of {width}x{height} pixels has an aspect ratio over 200, which Qwen2-VL refuses"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class FrameVideoProcessor:
    """Qwen2-VL's video processor in torch alone (no torchvision): a frame list -> its
    ``pixel_values_videos`` rows and ``video_grid_thw``.

    The steps of transformers' ``Qwen2VLVideoProcessor._preprocess`` (``video_processing_qwen2_vl.py``
    lines 315-387): every frame resized to the size :func:`smart_resize` gives the (first) frame, with
    ``torch.nn.functional.interpolate`` as torchvision's ``resize_image`` calls it on a CPU uint8 tensor
    (bicubic, antialiased, ``align_corners=False``, natively in uint8; torchvision
    ``transforms/v2/functional/_geometry.py`` 285-360), then rescale and normalise fused
    (``image_processing_backends.py`` 329-369: ``(x - mean / r) / (std / r)``), then the frames padded
    with copies of the last one to a multiple of ``temporal_patch_size`` and cut into patches
    (``patchify``, lines 275-313): ``video_grid_thw = (frames / temporal_patch_size, h / patch, w / patch)``.
    Frames of another size than the first are resized to the first frame's target size (the
    transformers processor takes one tensor per video, so its frames share one size).

    It stands in for the processor's ``video_processor``: ``Qwen2VLProcessor.replace_video_token``
    reads :attr:`merge_size` (``processing_qwen2_vl.py`` 55-58) and ``ProcessorMixin._process_videos``
    calls the instance (``processing_utils.py`` 853-863).
    """

    model_input_names: ClassVar[list[str]] = ["pixel_values_videos", "video_grid_thw"]

    def __init__(self, config: dict[str, Any] | None = None):
        cfg = {**VIDEO_DEFAULTS, **(config or {})}
        size = dict(cfg.get("size") or VIDEO_DEFAULTS["size"])
        # Qwen2VLVideoProcessor.__init__ (lines 136-146): min_pixels / max_pixels override size.
        if cfg.get("min_pixels") is not None:
            size["shortest_edge"] = cfg["min_pixels"]
        if cfg.get("max_pixels") is not None:
            size["longest_edge"] = cfg["max_pixels"]
        self.config: dict[str, Any] = dict(config or {})
        self.min_pixels = int(size["shortest_edge"])
        self.max_pixels = int(size["longest_edge"])
        self.patch_size = int(cfg["patch_size"])
        self.temporal_patch_size = int(cfg["temporal_patch_size"])
        self.merge_size = int(cfg["merge_size"])
        self.image_mean = [float(v) for v in cfg["image_mean"]]
        self.image_std = [float(v) for v in cfg["image_std"]]
        self.rescale_factor = float(cfg["rescale_factor"])
        self.do_resize = bool(cfg["do_resize"])
        self.do_rescale = bool(cfg["do_rescale"])
        self.do_normalize = bool(cfg["do_normalize"])
        resample = int(cfg["resample"] if cfg["resample"] is not None else 3)
        if resample not in RESAMPLE_MODES:
            raise BackboneError(
                f"video resampling {resample} is not supported; expected one of {sorted(RESAMPLE_MODES)} "
                "(nearest, bilinear, bicubic)"
            )
        self.resample = resample

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> FrameVideoProcessor:
        """The video config of ``path`` as ``AutoVideoProcessor`` finds it
        (``video_processing_utils.py`` 349-411): ``processor_config.json``'s ``video_processor``, else
        ``video_preprocessor_config.json``, else ``preprocessor_config.json``; the defaults if none."""
        from transformers.utils.hub import cached_file

        def read(name: str) -> dict[str, Any] | None:
            local = Path(path) / name
            found: str | None
            if local.is_file():
                found = str(local)
            else:
                try:
                    found = cached_file(str(path), name, _raise_exceptions_for_missing_entries=False)
                except OSError:
                    found = None
            return json.loads(Path(found).read_text()) if found else None

        nested = read("processor_config.json")
        if nested is not None and isinstance(nested.get("video_processor"), dict):
            return cls(nested["video_processor"])
        for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
            config = read(name)
            if config is not None:
                return cls(config)
        return cls()

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) a frame of this size is resized to."""
        factor = self.patch_size * self.merge_size
        return smart_resize(height, width, factor, self.min_pixels, self.max_pixels)

    def _resize(self, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(frames.shape[-2:]) == size:
            return frames
        mode = RESAMPLE_MODES[self.resample]
        if mode == "bicubic":  # torchvision resizes CPU uint8 natively for bicubic (_geometry.py 270-280)
            return torch.nn.functional.interpolate(
                frames, size=list(size), mode=mode, align_corners=False, antialias=True
            )
        out = torch.nn.functional.interpolate(
            frames.float(),
            size=list(size),
            mode=mode,
            align_corners=False if mode == "bilinear" else None,
            antialias=mode == "bilinear",
        )
        return out.clamp_(0, 255).round_().to(torch.uint8)

    def video(self, frames: Sequence[Any]) -> tuple[torch.Tensor, list[int]]:
        """One video's patch rows [t * h * w, C * temporal_patch_size * patch^2] and its (t, h, w)."""
        if not frames:
            raise BackboneError("a video side holds no frames")
        arrays = [np.asarray(_rgb(f), dtype=np.uint8) for f in frames]
        first_h, first_w = arrays[0].shape[:2]
        size = self.target_size(first_h, first_w) if self.do_resize else (first_h, first_w)
        stacked = []
        for a in arrays:
            t = torch.from_numpy(a.copy()).permute(2, 0, 1).unsqueeze(0)  # [1, C, H, W] uint8
            stacked.append(self._resize(t, size) if self.do_resize else t)
        video = torch.cat(stacked)  # [T, C, H, W] uint8
        if tuple(video.shape[-2:]) != size:
            raise BackboneError(f"video frames differ in size ({tuple(video.shape[-2:])} vs {size})")
        x = video.to(torch.float32)
        if self.do_rescale and self.do_normalize:
            mean = torch.tensor(self.image_mean) * (1.0 / self.rescale_factor)
            std = torch.tensor(self.image_std) * (1.0 / self.rescale_factor)
            x = x.sub_(mean[:, None, None]).div_(std[:, None, None])
        elif self.do_normalize:
            x = x.sub_(torch.tensor(self.image_mean)[:, None, None]).div_(
                torch.tensor(self.image_std)[:, None, None]
            )
        elif self.do_rescale:
            x = x * self.rescale_factor
        return self.patchify(x)

    def patchify(self, video: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """``Qwen2VLVideoProcessor.patchify`` (lines 275-313) for one float video [T, C, H, W]."""
        tp, p, m = self.temporal_patch_size, self.patch_size, self.merge_size
        if pad := -video.shape[0] % tp:
            video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
        frames, channel, height, width = video.shape
        grid_t, grid_h, grid_w = frames // tp, height // p, width // p
        patches = video.reshape(grid_t, tp, channel, grid_h // m, m, p, grid_w // m, m, p)
        patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        flat = patches.reshape(grid_t * grid_h * grid_w, channel * tp * p * p)
        return flat, [grid_t, grid_h, grid_w]

    def __call__(self, videos: Sequence[Sequence[Any]], **kwargs: Any) -> Any:
        """``pixel_values_videos`` (float32 rows of every video, back to back) and ``video_grid_thw``
        (long [n, 3]) for a list of frame lists; other keyword arguments (the processor's video
        kwargs, ``return_tensors``) change nothing: the result is always torch tensors."""
        from transformers import BatchFeature
        from transformers.video_utils import VideoMetadata

        rows, grids = [], []
        for frames in videos:
            flat, grid = self.video(list(frames))
            rows.append(flat)
            grids.append(grid)
        data: dict[str, Any] = {
            "pixel_values_videos": torch.cat(rows),
            "video_grid_thw": torch.tensor(grids, dtype=torch.long),
        }
        if kwargs.get("return_metadata"):
            # what transformers assumes of pre-sampled frames (video_utils.py make_batched_metadata,
            # lines 231-244): no fps, the frames in order; Qwen2.5-VL's processor reads it
            data["video_metadata"] = [
                VideoMetadata(
                    total_num_frames=len(frames),
                    fps=None,
                    duration=None,
                    frames_indices=list(range(len(frames))),
                )
                for frames in videos
            ]
        return BatchFeature(data)

    def to_dict(self) -> dict[str, Any]:
        """The video config it was built from (written back as ``video_preprocessor_config.json``)."""
        return dict(self.config)


def _rgb(frame: Any) -> Any:
    if isinstance(frame, Image.Image) and frame.mode != "RGB":
        return frame.convert("RGB")
    return frame


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

    A frame list goes in as one video (``frame_input = "video"``), as VLM2Vec-V2 gives Qwen2-VL its
    videos: the bare ``<|video_pad|>`` (its ``VLM_VIDEO_TOKENS``, ``src/model/processor.py`` lines
    74-77 at 6e1e1d4, without vision start / end markers, as its image token) where an image side puts
    ``<|image_pad|>``, and the frames handed to the processor as ``videos=[frames]``
    (``Qwen2_VL_process_fn``), which repeats the token ``video_grid_thw.prod() // merge_size**2``
    times (``processing_qwen2_vl.py`` 55-58) and returns ``pixel_values_videos`` / ``video_grid_thw``.
    The processor's video part is :class:`FrameVideoProcessor` on every machine (transformers' own
    imports torchvision), so embeddings do not depend on whether torchvision is installed. A subclass
    with ``frame_input = "images"`` gets the earlier behaviour: one ``<|image_pad|>`` per frame,
    newline separated.
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
    per_video_keys = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
    placeholder_token = "<|image_pad|>"
    video_token = "<|video_pad|>"
    frame_input = "video"
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
                processor_class=self.processor_class(path),
            )
        if self.frame_input == "video":  # the same video part with or without torchvision
            processor.video_processor = FrameVideoProcessor.from_pretrained(path)
        return self._configure_processor(processor)

    def processor_class(self, path: str | os.PathLike | None = None) -> type:
        """The transformers processor class of the checkpoint at ``path`` (built without its video part
        if need be): ``Qwen2_5_VLProcessor`` for Qwen2.5-VL (its videos carry ``second_per_grid_ts``,
        ``processing_qwen2_5_vl.py`` 129-145), else ``Qwen2VLProcessor``."""
        if path is not None:
            from transformers import AutoConfig

            if AutoConfig.from_pretrained(str(path)).model_type == "qwen2_5_vl":
                from transformers import Qwen2_5_VLProcessor

                return Qwen2_5_VLProcessor
        from transformers import Qwen2VLProcessor

        return Qwen2VLProcessor

    def select_images(self, inputs: dict[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels, grid = _select_patches(inputs["pixel_values"], inputs["image_grid_thw"], images)
        return {"pixel_values": pixels, "image_grid_thw": grid}

    def select_videos(self, inputs: dict[str, torch.Tensor], videos: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels, grid = _select_patches(inputs["pixel_values_videos"], inputs["video_grid_thw"], videos)
        out = {"pixel_values_videos": pixels, "video_grid_thw": grid}
        if "second_per_grid_ts" in inputs:  # Qwen2.5-VL: one per video
            seconds = inputs["second_per_grid_ts"]
            out["second_per_grid_ts"] = seconds[videos.to(seconds.device)]
        return out

    def dummy_video(self, dummy_image: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The dummy image as a one-temporal-patch video: an image's patches are its frame repeated
        over ``temporal_patch_size`` (``image_processing_pil_qwen2_vl.py`` ``patchify``), the rows of a
        video of that frame twice with grid (1, h, w); its tokens become ``<|video_pad|>`` (type 2)."""
        out = {k: v for k, v in dummy_image.items() if k not in self.per_image_keys}
        ids = dummy_image["input_ids"].clone()
        ids[ids == self.placeholder_id] = int(self.video_placeholder_id)  # type: ignore[arg-type]
        out["input_ids"] = ids
        if "mm_token_type_ids" in out:
            types = out["mm_token_type_ids"].clone()
            types[types == 1] = 2
            out["mm_token_type_ids"] = types
        out["pixel_values_videos"] = dummy_image["pixel_values"]
        out["video_grid_thw"] = dummy_image["image_grid_thw"]
        return out  # Qwen2.5-VL: no second_per_grid_ts, its get_rope_index then takes 1 s a patch

    def save_processor(self, processor: Any, out_dir: str | os.PathLike) -> None:
        video = getattr(processor, "video_processor", None)
        if video is not None and not isinstance(video, FrameVideoProcessor):
            processor.save_pretrained(str(out_dir))
            return
        processor.tokenizer.save_pretrained(str(out_dir))
        processor.image_processor.save_pretrained(str(out_dir))
        write_processor_files(
            Path(out_dir),
            processor.chat_template,
            type(processor).__name__,
            video.to_dict() if isinstance(video, FrameVideoProcessor) else None,
        )

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


def _select_patches(
    pixels: torch.Tensor, grid: torch.Tensor, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The patch rows and grids of the given images (or videos): ``pixels`` holds every item's
    patches back to back, t * h * w rows each."""
    sizes = grid.prod(dim=-1)
    starts = torch.cumsum(sizes, 0) - sizes
    patches = torch.cat(
        [torch.arange(int(starts[i]), int(starts[i] + sizes[i]), device=grid.device) for i in items.tolist()]
    )
    return pixels[patches], grid[items]


def write_processor_files(
    out: Path, chat_template: str | None, processor_class: str, video_config: dict[str, Any] | None = None
) -> None:
    """The files that let ``AutoProcessor`` (with torchvision) build the full processor, as on the hub.

    ``processor_class`` is e.g. ``Qwen2VLProcessor``; the video processor is its family's
    (``Qwen2VLVideoProcessor``, ``Qwen3VLVideoProcessor``), configured by ``video_config`` (default:
    the image processor's settings).
    """
    pre = json.loads((out / "preprocessor_config.json").read_text())
    pre["processor_class"] = processor_class
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    source = video_config if video_config else pre
    video = {k: v for k, v in source.items() if k != "image_processor_type"}
    video["processor_class"] = processor_class
    # Qwen2.5-VL's processor uses Qwen2-VL's video processor (transformers' video_processing_auto.py)
    video["video_processor_type"] = processor_class.replace("Qwen2_5_VL", "Qwen2VL").replace(
        "Processor", "VideoProcessor"
    )
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    if chat_template:
        (out / "chat_template.json").write_text(json.dumps({"chat_template": chat_template}, indent=2))
