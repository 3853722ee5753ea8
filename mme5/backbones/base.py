"""What every backbone family provides, and the shared machinery behind it.

A :class:`BackboneAdapter` turns :class:`~mme5.records.Side` objects into one family's model inputs
(prompt text with the family's image token, processor call, mixed text/image batches), loads the
family's processor and model (optionally 8-/4-bit through bitsandbytes), names its LoRA targets, and
builds its tiny random-initialised twin for tests and the demo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import nn

from mme5.errors import UnsupportedModelError
from mme5.records import PUBLIC_IMAGE_TOKEN, Side

Quantization = Literal["int8", "nf4", "fp4"]
#: The choices of :data:`Quantization` (``mme5.model.settings`` re-exports both).
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
TINY_INFO_FILE = "mme5_tiny.json"


class BackboneError(UnsupportedModelError):
    """A backbone that cannot be used: unknown model type, missing path, unsupported option (a ValueError)."""


def cache_root() -> Path:
    """Where tiny twins are built: ``$MME5_CACHE`` or ``~/.cache/mme5``."""
    env = os.environ.get("MME5_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mme5"


def truncate_text(tokenizer: Any, text: str, max_tokens: int) -> str:
    """Cut ``text`` to at most ``max_tokens`` tokens (special tokens kept whole), without side effects
    on the tokenizer.

    Truncating before the processor expands image placeholders keeps every image's tokens intact,
    whatever the family inserts for an image; ``max_length`` therefore bounds the text tokens only.
    """
    if max_tokens <= 0:
        return ""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=False)


def _target_regex(patterns: Sequence[str]) -> str:
    """One regex matching a dotted module name that ends with any of ``patterns`` (peft full-matches it)."""
    return r"(?:.*\.)?(?:" + "|".join(f"(?:{p})" for p in patterns) + r")"


class BackboneAdapter:
    """One model family: formatting, processor, model loading, LoRA targets and the tiny twin.

    Subclasses set the class attributes and implement :meth:`model_class_for` and :meth:`build_tiny`;
    families whose processor needs special handling of mixed text-only / image batches override
    :meth:`processor_call`, those with another image-tensor layout :meth:`select_images`.
    """

    family: ClassVar[str]
    #: HF ``model_type`` values this adapter handles.
    model_types: ClassVar[tuple[str, ...]]
    image_token: ClassVar[str]
    padding_side: ClassVar[Literal["left", "right"]] = "right"
    #: Regexes matched against the end of dotted module names (see :meth:`lora_target_regex`).
    lora_targets: ClassVar[tuple[str, ...]]
    #: Input tensors indexed by image (not by row): only rows whose ``input_ids`` hold the image
    #: placeholder own one entry each, in row order.
    per_image_keys: ClassVar[tuple[str, ...]] = ("pixel_values", "image_sizes")
    #: The token the processor repeats for an image's features (``None``: the image token itself).
    placeholder_token: ClassVar[str | None] = None
    #: Bump when the tiny twin's recipe changes: cached twins with another version are rebuilt.
    tiny_version: ClassVar[int] = 1
    #: Modules kept in full precision when quantizing (heads, projectors, the vision tower): names
    #: anywhere in the dotted module path.
    skip_quantization: ClassVar[tuple[str, ...]] = ("lm_head", "multi_modal_projector")
    #: How the family takes a side's frame list (video frames, document pages): ``"images"``, one
    #: image per frame in one prompt (the images separated by :attr:`frame_separator`, so that each
    #: frame's placeholder run stays apart), ``"single"``, one image per prompt, where a side of
    #: more than one frame is refused in one line (:meth:`side_images`), or ``"video"``, the frames
    #: as one video through the backbone's video input (:attr:`video_token` in the prompt, the frame
    #: list given to the processor as ``videos=``; the tensors in :attr:`per_video_keys`).
    frame_input: ClassVar[Literal["images", "single", "video"]] = "images"
    frame_separator: ClassVar[str] = "\n"
    #: The prompt token of a video (``frame_input = "video"``); the processor repeats it once per
    #: video feature.
    video_token: ClassVar[str | None] = None
    #: Input tensors indexed by video, as :attr:`per_image_keys` are by image (only rows whose
    #: ``input_ids`` hold :attr:`video_token` own one entry each, in row order).
    per_video_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | None = None):
        self.path = path
        self.placeholder_id: int | None = None
        self.video_placeholder_id: int | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r})"

    @property
    def source(self) -> str:
        """Where the processor and the model load from (set by :func:`mme5.backbones.get_adapter`)."""
        if self.path is None:
            raise BackboneError(
                f"{type(self).__name__} has no model path; get it from mme5.backbones.get_adapter"
            )
        return self.path

    # ---- formatting -------------------------------------------------------------------------------
    def format_text(self, side: Side) -> str:
        """The prompt for one side: ``<|image_1|>`` rewritten to the family's image token.

        An image side without a token gets the token first, then a newline and the text (the layout
        of the public data); a text-only side carries no image token at all. A frame side puts
        :meth:`visual_prompt` (one image token per frame) where an image side puts its token.
        """
        text = side.text or ""
        text = text.replace(PUBLIC_IMAGE_TOKEN, self.image_token)
        if not side.has_visual:
            return text.replace(self.image_token, "").strip("\n") if self.image_token in text else text
        visual = self.visual_prompt(side)
        if self.image_token not in text:
            return visual + ("\n" + text if text else "")
        first = text.index(self.image_token)
        rest = text[first + len(self.image_token) :].replace(self.image_token, "")
        return text[:first] + visual + rest

    def visual_prompt(self, side: Side) -> str:
        """The tokens standing for a side's image (the image token) or frames (one image token per
        frame, or the :attr:`video_token` of a ``"video"`` family)."""
        if not side.has_frames or self.frame_input == "single":
            return self.image_token
        if self.frame_input == "video":
            if self.video_token is None:
                raise BackboneError(f"backbone family '{self.family}' takes videos but names no video token")
            return self.video_token
        return self.frame_separator.join([self.image_token] * len(side.frames))

    def side_images(self, side: Side) -> Any:
        """What the processor gets for one side: ``None`` (text only), one image, or a list of frames
        (several images, or one video for a ``"video"`` family: :meth:`processor_call` tells them apart).

        Frames are decoded here if the caller has not done so already (``Side.load_frames``). A
        ``"single"`` family takes a one-frame side as an image and refuses more frames in one line.
        """
        if side.has_image:
            return side.load_image()
        if not side.has_frames:
            return None
        frames = side.load_frames()
        if self.frame_input == "single":
            if len(frames) != 1:
                raise BackboneError(
                    f"backbone family '{self.family}' has no video input and takes one image per input, "
                    f"but a side holds {len(frames)} frames: use frames one at a time (one frame per side), "
                    "or a family that takes several images (llava, llava_next, qwen3_vl) or videos (qwen2_vl)"
                )
            return frames[0]
        return list(frames)

    # ---- processor --------------------------------------------------------------------------------
    def load_processor(self, path: str | os.PathLike) -> Any:
        """The family's processor from ``path``, with the adapter's padding side."""
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(path))
        return self._configure_processor(processor)

    def save_processor(self, processor: Any, out_dir: str | os.PathLike) -> None:
        """Write ``processor`` so that :meth:`load_processor` (and ``AutoProcessor``) read it back."""
        processor.save_pretrained(str(out_dir))

    def _configure_processor(self, processor: Any) -> Any:
        tok = processor.tokenizer
        tok.padding_side = self.padding_side
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.placeholder_id = tok.convert_tokens_to_ids(self.placeholder_token or self.image_token)
        if self.video_token is not None:
            self.video_placeholder_id = tok.convert_tokens_to_ids(self.video_token)
        return processor

    def select_rows(
        self, inputs: dict[str, torch.Tensor], rows: slice | list[int] | torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The model inputs of a subset of the batch's rows (e.g. a GradCache chunk), in the given order.

        Per-row tensors are indexed directly; per-image tensors (:attr:`per_image_keys`) keep the
        entries of the chosen rows' images, per-video ones (:attr:`per_video_keys`) those of their
        videos. Needs :meth:`load_processor` to have run (it learns the placeholder token ids there).
        """
        n = inputs["input_ids"].shape[0]
        device = inputs["input_ids"].device
        index = (
            torch.arange(n, device=device)[rows]
            if isinstance(rows, slice)
            else torch.as_tensor(rows, device=device)
        )
        per_item = (*self.per_image_keys, *self.per_video_keys)
        out = {k: v[index] for k, v in inputs.items() if k not in per_item}
        kinds = (
            (self.per_image_keys, "placeholder_id", self.images_per_row, self.select_images),
            (self.per_video_keys, "video_placeholder_id", self.videos_per_row, self.select_videos),
        )
        for keys, placeholder, per_row, select in kinds:
            if not any(k in inputs for k in keys):
                continue
            if getattr(self, placeholder, None) is None:
                raise RuntimeError(
                    f"{type(self).__name__}.select_rows needs load_processor() to have run first"
                )
            chosen = _items_of_rows(per_row(inputs), index)
            if chosen is not None:
                out.update(select(inputs, chosen))
        return out

    def images_per_row(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Long [n]: images per row, the runs of placeholder tokens (a processor repeats an image's
        placeholder once per feature, and frames are separated, so one run is one image)."""
        return _runs_per_row(inputs["input_ids"], self.placeholder_id)

    def videos_per_row(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Long [n]: videos per row, the runs of :attr:`video_token` (one run per video)."""
        return _runs_per_row(inputs["input_ids"], self.video_placeholder_id)

    def select_videos(self, inputs: dict[str, torch.Tensor], videos: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-video tensors of the given videos (indices in batch order)."""
        return {k: inputs[k][videos] for k in self.per_video_keys if k in inputs}

    def select_images(self, inputs: dict[str, torch.Tensor], images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The per-image tensors of the given images (indices in batch order)."""
        return {k: inputs[k][images] for k in self.per_image_keys if k in inputs}

    def build_inputs(self, processor: Any, sides: list[Side], max_length: int) -> dict[str, torch.Tensor]:
        """Model inputs for a batch of sides (any mix of text-only, image-only and image+text).

        ``max_length`` bounds each side's text tokens; image placeholder tokens come on top.
        Images are decoded here if the caller has not done so already (``Side.load_image``).
        """
        if not sides:
            raise ValueError("build_inputs needs at least one side")
        texts = [self.truncate_prompt(processor.tokenizer, self.format_text(s), max_length) for s in sides]
        images = [self.side_images(s) for s in sides]
        return dict(self.processor_call(processor, texts, images))

    def truncate_prompt(self, tokenizer: Any, prompt: str, max_length: int) -> str:
        """Cut a formatted prompt to ``max_length`` text tokens, never cutting into an image token.

        The text before the first image token and after the last one is cut; what lies between image
        tokens (a frame list's separators) is kept whole, as the image tokens are.
        """
        token = self.image_token
        if token not in prompt and self.video_token is not None and self.video_token in prompt:
            token = self.video_token  # a video side: its one video token is kept whole the same way
        if token not in prompt:
            return truncate_text(tokenizer, prompt, max_length)
        parts = prompt.split(token)
        before = truncate_text(tokenizer, parts[0], max_length)
        used = len(tokenizer(before, add_special_tokens=False)["input_ids"]) if before else 0
        after = truncate_text(tokenizer, parts[-1], max_length - used)
        return token.join([before, *parts[1:-1], after])

    def processor_call(self, processor: Any, texts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Run the processor on formatted texts and per-side images (``None`` for text-only sides, a
        list for a side's frames: its images, or for a ``"video"`` family one video, given as
        ``videos=``)."""
        videos: list[list[Any]] = []
        if self.frame_input == "video":
            videos = [im for im in images if isinstance(im, list)]
            images = [im for im in images if not isinstance(im, list)]
        flat = [f for im in images if im is not None for f in (im if isinstance(im, list) else [im])]
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if flat:
            kwargs["images"] = flat
        if videos:
            kwargs["videos"] = videos
        return processor(**kwargs)

    # ---- model ------------------------------------------------------------------------------------
    def model_class_for(self, path: str | os.PathLike) -> type:
        """The transformers class for the checkpoint at ``path`` (``...ForConditionalGeneration``)."""
        raise NotImplementedError

    def load_model(
        self,
        path: str | os.PathLike,
        dtype: torch.dtype = torch.float32,
        quantization: Quantization | None = None,
    ) -> nn.Module:
        """Load the family's model from ``path`` in ``dtype``; ``quantization`` loads 8-/4-bit weights.

        Quantized models are placed on the current CUDA device when there is one, else on the CPU
        (bitsandbytes >= 0.45 runs 8- and 4-bit layers there).
        """
        kwargs: dict[str, Any] = {"dtype": dtype}
        if quantization is not None:
            kwargs.update(self.quantization_kwargs(quantization, dtype))
        return self.model_class_for(path).from_pretrained(str(path), **kwargs)

    def quantization_kwargs(self, quantization: str, dtype: torch.dtype) -> dict[str, Any]:
        """``from_pretrained`` keyword arguments for bitsandbytes ``quantization``."""
        from transformers import BitsAndBytesConfig

        if quantization == "int8":
            config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=self._skip_patterns())
        elif quantization in ("nf4", "fp4"):
            config = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=quantization,
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_use_double_quant=quantization == "nf4",
                llm_int8_skip_modules=self._skip_patterns(),
            )
        else:
            raise BackboneError(
                f"quantization '{quantization}' is not supported; expected one of {QUANTIZATIONS}"
            )
        device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
        return {"quantization_config": config, "device_map": {"": device}}

    def _skip_patterns(self) -> list[str]:
        # transformers matches these from the start of the module path (or as a suffix).
        return [rf"(?:.*\.)?{name}" for name in self.skip_quantization]

    def last_hidden_state(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The language model's last hidden states [n, L, H] for ``inputs`` (no LM head computed)."""
        language_model: Any = model.model
        return language_model(**inputs, use_cache=False).last_hidden_state

    def image_rows(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Bool [n]: which rows of the batch hold an image or a video."""
        ids = inputs["input_ids"]
        rows = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        image_id = getattr(self, "placeholder_id", None)
        if any(k in inputs for k in self.per_image_keys) and image_id is not None:
            rows |= (ids == image_id).any(dim=1)
        video_id = getattr(self, "video_placeholder_id", None)
        if any(k in inputs for k in self.per_video_keys) and video_id is not None:
            rows |= (ids == video_id).any(dim=1)
        return rows

    def text_only(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inputs of image-less rows without the (empty) image and video tensors."""
        per_item = (*self.per_image_keys, *self.per_video_keys)
        return {k: v for k, v in inputs.items() if k not in per_item}

    def last_hidden_state_lockstep(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        dummy_image: dict[str, torch.Tensor],
        dummy_text: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """:meth:`last_hidden_state` with the same module calls whatever the batch holds.

        Sharded training (FSDP, ZeRO-3) gathers each block's weights when the block runs, so every
        rank must run the same blocks in the same order. Here each call runs two sub-batches: the rows
        with an image (or ``dummy_image``, one image side, when there are none), then the image-less
        rows (or ``dummy_text``). A dummy's output joins the result times zero, so every trainable
        weight gets a gradient (zero where unused) on every rank. A family that takes videos
        (``frame_input = "video"``) runs three: the image rows, the video rows (or
        :meth:`dummy_video`), the text rows, as its model runs its vision tower once for the images
        and once more for the videos of a batch.
        """
        if self.frame_input == "video":
            return self._lockstep_with_videos(model, inputs, dummy_image, dummy_text)
        has_image = self.image_rows(inputs)
        image_idx, text_idx = has_image.nonzero().squeeze(1), (~has_image).nonzero().squeeze(1)
        image_part = self.select_rows(inputs, image_idx) if image_idx.numel() else dummy_image
        text_part = self.text_only(self.select_rows(inputs, text_idx)) if text_idx.numel() else dummy_text
        h_image = self.last_hidden_state(model, image_part)
        h_text = self.last_hidden_state(model, text_part)
        if not image_idx.numel():
            return h_text + 0.0 * h_image.mean()
        if not text_idx.numel():
            return h_image + 0.0 * h_text.mean()
        order = torch.argsort(torch.cat([image_idx, text_idx]))
        return torch.cat([h_image, h_text])[order.to(h_image.device)]

    def _lockstep_with_videos(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        dummy_image: dict[str, torch.Tensor],
        dummy_text: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """:meth:`last_hidden_state_lockstep` in three sub-batches: image rows, video rows, text rows."""
        ids = inputs["input_ids"]
        visual = self.image_rows(inputs)
        video = torch.zeros_like(visual)
        if any(k in inputs for k in self.per_video_keys) and self.video_placeholder_id is not None:
            video = (ids == self.video_placeholder_id).any(dim=1)
        dummy_video = self.dummy_video(dummy_image)
        groups = [(visual & ~video, dummy_image), (video, dummy_video), (~visual, dummy_text)]
        hidden: list[torch.Tensor] = []
        rows: list[torch.Tensor] = []
        unused: list[torch.Tensor] = []
        for n, (mask, dummy) in enumerate(groups):
            idx = mask.nonzero().squeeze(1)
            if idx.numel():
                part = self.select_rows(inputs, idx)
                hidden.append(self.last_hidden_state(model, self.text_only(part) if n == 2 else part))
                rows.append(idx)
            else:
                unused.append(self.last_hidden_state(model, dummy).mean())
        order = torch.argsort(torch.cat(rows))
        out = torch.cat(hidden)[order.to(hidden[0].device)]
        for h in unused:
            out = out + 0.0 * h
        return out

    def dummy_video(self, dummy_image: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One video side's inputs for lockstep forwards of a ``"video"`` family, made from the dummy
        image side's (a family with videos implements it)."""
        raise NotImplementedError(f"{type(self).__name__} takes videos but has no dummy_video")

    def lora_target_regex(self, patterns: Sequence[str] | None = None) -> str:
        """The peft ``target_modules`` regex for ``patterns`` (default: :attr:`lora_targets`)."""
        return _target_regex(list(patterns) if patterns else list(self.lora_targets))

    # ---- tiny twin --------------------------------------------------------------------------------
    def build_tiny(self, out_dir: str | os.PathLike, seed: int = 0) -> str:
        """Write a tiny random-initialised twin (model + processor) to ``out_dir``; returns the path."""
        raise NotImplementedError

    def tiny_dir(self) -> Path:
        return cache_root() / "tiny" / f"{self.family}-v{self.tiny_version}"

    def ensure_tiny(self, seed: int = 0) -> str:
        """The cached tiny twin, built once (atomically: temp dir, then rename) and reused afterwards."""
        target = self.tiny_dir()
        if _tiny_is_current(target, self.tiny_version, seed):
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            with torch.random.fork_rng(devices=[]):
                self.build_tiny(tmp, seed)
            (tmp / TINY_INFO_FILE).write_text(
                json.dumps({"family": self.family, "version": self.tiny_version, "seed": seed})
            )
            if target.exists() and not _tiny_is_current(target, self.tiny_version, seed):
                stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
                os.replace(target, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, target)
            except OSError:
                if not _tiny_is_current(target, self.tiny_version, seed):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return str(target)


def _runs_per_row(input_ids: torch.Tensor, token_id: int | None) -> torch.Tensor:
    """Long [n]: the runs of ``token_id`` in each row (one run per image or video)."""
    is_token = input_ids == token_id
    starts = is_token.clone()
    starts[:, 1:] &= ~is_token[:, :-1]
    return starts.sum(dim=1)


def _items_of_rows(counts: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
    """The indices (batch order) of the items (images or videos) of ``rows``, in ``rows``' order,
    given each row's item count; ``None`` when those rows hold none."""
    first = torch.cumsum(counts, 0) - counts
    ranges = [
        torch.arange(int(first[r]), int(first[r] + counts[r]), device=counts.device)
        for r in rows.tolist()
        if int(counts[r])
    ]
    return torch.cat(ranges) if ranges else None


def _tiny_is_current(folder: Path, version: int, seed: int) -> bool:
    info = folder / TINY_INFO_FILE
    if not info.is_file():
        return False
    try:
        meta = json.loads(info.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return meta.get("version") == version and meta.get("seed") == seed


def matching_modules(model: nn.Module, pattern: str) -> list[str]:
    """Names of ``model``'s modules that full-match ``pattern`` (what peft would wrap)."""
    rx = re.compile(pattern)
    return [name for name, _ in model.named_modules() if name and rx.fullmatch(name)]
