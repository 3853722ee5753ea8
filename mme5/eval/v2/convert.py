"""Rows of the five video-retrieval tasks from their hub datasets' columns, in the layout of
:mod:`mme5.eval.v2.readers` (``video-tasks/<Task>.jsonl``).

Per task, as the official loaders read them (TIGER-AI-Lab/VLM2Vec at 6e1e1d4,
``src/data/eval_dataset/``): the video name column (also the frame folder name and the candidate
name), the caption column (a list of which the first is used, for MSVD and VATEX), and the query
instruction:

- MSR-VTT (``msrvtt_dataset.py`` lines 10, 22-28): ``video_id``, ``caption``.
- MSVD (``msvd_dataset.py`` lines 10, 21-27): ``video_id``, ``caption[0]``.
- DiDeMo (``didemo_dataset.py`` lines 10, 21-28): the ``video`` path's file name without extension,
  ``caption``.
- VATEX (``vatex_dataset.py`` lines 10, 21-27): ``videoID``, ``enCap[0]``.
- YouCook2 (``youcook2_dataset.py`` lines 10, 21-27): ``id``, ``sentence``.

The query text is ``instruction + " " + caption`` and the candidate's ``"<video> Understand the content of
the provided video."`` (each file's line 11; ``src/model/processor.py`` lines 663-668), here with the
public image token, since mme5 gives a video to the encoder as tiled frames
(:mod:`mme5.eval.v2.frames`). Every task is global: one candidate per row, ranked against all videos.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from mme5.errors import ConfigError
from mme5.eval.datasets import EvalDataError

VIDEO_TARGET_TEXT = "<|image_1|> Understand the content of the provided video."

#: task -> (video column, caption column, first of a caption list, query instruction)
RETRIEVAL_COLUMNS: dict[str, tuple[str, str, bool, str]] = {
    "MSR-VTT": ("video_id", "caption", False, "Find a video that contains the following visual content:"),
    "MSVD": ("video_id", "caption", True, "Find the video snippet that corresponds to the given summary:"),
    "DiDeMo": ("video", "caption", False, "Find a video that includes the following described scenes:"),
    "VATEX": ("videoID", "enCap", True, "Select a video that fits the description provided:"),
    "YouCook2": (
        "id",
        "sentence",
        False,
        "Find a video that demonstrates the following action while making a recipe:",
    ),
}


def video_retrieval_rows(task: str, hub_rows: Iterable[dict]) -> list[dict]:
    """The reader's rows for one of the five video-retrieval tasks, from its hub dataset's rows."""
    if task not in RETRIEVAL_COLUMNS:
        raise ConfigError(f"'{task}' is not one of the video-retrieval tasks {', '.join(RETRIEVAL_COLUMNS)}")
    video_col, caption_col, first, instruction = RETRIEVAL_COLUMNS[task]
    out = []
    for r, row in enumerate(hub_rows):
        if video_col not in row or caption_col not in row:
            raise EvalDataError(f"{task} row {r}: expected columns '{video_col}' and '{caption_col}'")
        name = str(row[video_col])
        if task == "DiDeMo":
            name = os.path.splitext(os.path.basename(name))[0]
        caption = row[caption_col]
        if first:
            if not isinstance(caption, list) or not caption:
                raise EvalDataError(f"{task} row {r}: '{caption_col}' must be a non-empty list")
            caption = caption[0]
        out.append(
            {
                "query_text": f"{instruction} {caption}",
                "query_video": "",
                "cand_text": [VIDEO_TARGET_TEXT],
                "cand_video": [name],
                "cand_names": [name],
                "label_name": name,
            }
        )
    return out
