"""The Collator: a list of Examples -> one contrastive training batch of model inputs.

It runs in DataLoader workers, so it is picklable and loads the backbone's processor lazily (once
per process). Images are decoded here, inside the worker, with the configured size limits.

A side's frame list (video frames, document pages; ``Side.frames``) is decoded the same way, each
frame under the same limits, and goes to the backbone as the adapter's frame rule says
(:attr:`mme5.backbones.BackboneAdapter.frame_input`): one image per frame in the side's prompt, one
video through the backbone's video input (Qwen2-VL / Qwen2.5-VL: ``pixel_values_videos``), or, for a
family that takes one image per prompt, a one-line error for a side of several frames.
"""

from __future__ import annotations

from typing import Any, TypedDict

import torch

from mme5.backbones import BackboneAdapter, get_adapter
from mme5.data import skips
from mme5.records import Example, RecordError, Side

#: Images with more pixels are refused before decoding (the default of both the Collator and the DataModule).
MAX_IMAGE_PIXELS = 40_000_000
#: Hard negatives kept per query by default (Collator and DataModule): it bounds a batch to
#: B x (1 + 16) candidates whatever a sample holds, and is far above the mmE5 recipes' 3 (the public
#: data and the converter's ``--negatives``), so it never changes their batches.
MAX_NEGATIVES = 16


class Batch(TypedDict):
    """What the Collator returns (and the training module consumes)."""

    query: dict[str, torch.Tensor]
    """Model inputs for the B queries."""
    candidates: dict[str, torch.Tensor]
    """Model inputs for the B positives, then the K negatives of query 0, of query 1, ..."""
    num_negatives: int
    """K, hard negatives per query (0 when some example of the batch has none)."""
    candidate_ids: torch.Tensor
    """Content ids (int64) of the B + B*K candidates, for false-negative masking."""
    ids: list[str]
    """Example ids."""


class Collator:
    """Turns Examples into a :class:`Batch` with the backbone's formatting and processor.

    Args:
        model: the backbone (model folder, cached hub id or ``tiny-<family>``), as for the Encoder.
        max_length: maximum text tokens per side (image tokens come on top).
        max_negatives: keep at most this many hard negatives per query (None: all); the ones cut
            are counted as ``negatives_cut``. Examples with fewer negatives than the batch's K repeat
            their last one; if any example has none, K = 0.
        max_pixels: refuse images (and each frame of a frame list) with more pixels than this (a
            decoding guard).
        max_side: downscale images and frames whose longest side exceeds this (None: keep the size).
    """

    def __init__(
        self,
        model: str,
        max_length: int = 256,
        max_negatives: int | None = MAX_NEGATIVES,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        max_side: int | None = None,
    ):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if max_negatives is not None and max_negatives < 0:
            raise ValueError(f"max_negatives must be >= 0 or None, got {max_negatives}")
        self.model = str(model)
        self.max_length = max_length
        self.max_negatives = max_negatives
        self.max_pixels = max_pixels
        self.max_side = max_side
        self._adapter: BackboneAdapter | None = None
        self._processor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_adapter"] = None
        state["_processor"] = None
        return state

    @property
    def adapter(self) -> BackboneAdapter:
        if self._adapter is None:
            self._adapter = get_adapter(self.model)
        return self._adapter

    @property
    def processor(self) -> Any:
        if self._processor is None:
            self._processor = self.adapter.load_processor(self.adapter.source)
        return self._processor

    def num_negatives(self, examples: list[Example]) -> int:
        """K for a batch: the largest negative count (capped), or 0 if some example has none."""
        counts = [len(ex.negatives) for ex in examples]
        if not counts or min(counts) == 0:
            return 0
        k = max(counts)
        return min(k, self.max_negatives) if self.max_negatives is not None else k

    def _decoded(self, side: Side, example: Example) -> Side:
        if side.has_visual:
            try:
                side.load_visual(max_pixels=self.max_pixels, max_side=self.max_side)
            except RecordError as exc:
                raise RecordError(exc.reason, f"example '{example.id}': {exc}") from None
        return side

    def __call__(self, examples: list[Example]) -> Batch:
        if not examples:
            raise ValueError("Collator got an empty list of examples")
        k = self.num_negatives(examples)
        if self.max_negatives is not None:
            cut = [ex for ex in examples if len(ex.negatives) > self.max_negatives]
            if cut:
                skips.report(
                    "negatives_cut",
                    f"example '{cut[0].id}' has {len(cut[0].negatives)} hard negatives, kept "
                    f"max_negatives={self.max_negatives}",
                    sum(len(ex.negatives) - self.max_negatives for ex in cut),
                )
        queries = [self._decoded(ex.query_side(), ex) for ex in examples]
        positives: list[Side] = []
        negatives: list[Side] = []
        for ex in examples:
            cands = [self._decoded(s, ex) for s in ex.candidate_sides()]
            positives.append(cands[0])
            negs = cands[1 : 1 + k]
            negs += [negs[-1]] * (k - len(negs)) if negs else []
            negatives.extend(negs)
        candidates = positives + negatives
        return Batch(
            query=self.adapter.build_inputs(self.processor, queries, self.max_length),
            candidates=self.adapter.build_inputs(self.processor, candidates, self.max_length),
            num_negatives=k,
            candidate_ids=torch.tensor([s.content_id() for s in candidates], dtype=torch.long),
            ids=[ex.id for ex in examples],
        )
