"""Rows of the 18 MMEB-V2 video tasks from their official hub datasets' rows, in the layout of
:mod:`mme5.eval.v2.readers` (``query_text``, ``query_video``, ``cand_text``, ``cand_video``,
``cand_names``, ``label_name``; a corpus row ``cand_name``, ``cand_text``, ``cand_video``).

Each converter does what the official loader's ``data_prepare`` does to a hub row (TIGER-AI-Lab/VLM2Vec
at 6e1e1d4, ``src/data/eval_dataset/``), with frame folders (relative to the task's ``frame_root``) in
place of the sampled frame lists; mme5 samples them as ``process_video_frames`` does
(:mod:`mme5.eval.v2.frames`). The columns a loader reads (its ``zip(batch_dict[...])``) are required:
a row without one is an :class:`EvalDataError` naming the task, the row and the column.

Texts. ``process_input_text`` (``src/model/processor.py`` lines 650-673) builds
``instruction + " " + text`` (the text only when non-empty) and puts the video or image token and a
space in front; the QA loaders' ``process_query`` builds ``f"{video_token} {prompt} {query}"`` (e.g.
``videomme_dataset.py`` lines 10-15). The token is the backbone's (``processor.py`` lines 59-86); mme5
writes the public image token :data:`VIDEO_TOKEN` (``<|image_1|>``, Phi-3-V's, line 60), since it gives
a video to the encoder as a frame list or one tiled image. Per task:

- Video-RET (one candidate per row, its video; ``global``): query ``instruction + " " + caption``, the
  candidate ``"<tok> Understand the content of the provided video."`` named by the video:
  MSR-VTT ``msrvtt_dataset.py`` lines 10-11, 21-24, 28, 32, 38-41 (``video_id``, ``video``,
  ``caption``); MSVD ``msvd_dataset.py`` lines 10-11, 21-23, 27, 31, 37-40 (``caption[0]``); DiDeMo
  ``didemo_dataset.py`` lines 10-11, 21-23, 26-28, 32, 38-41 (the name is ``video``'s file name without
  extension); VATEX ``vatex_dataset.py`` lines 10-11, 21-23, 27, 31, 37-40 (``videoID``, ``enCap[0]``);
  YouCook2 ``youcook2_dataset.py`` lines 10-11, 21-23, 27, 31, 37-40 (``id``, ``video_path``,
  ``sentence``).
- Video-CLS, K700 / HMDB51 / UCF101 / Breakfast (``video_classification_datasets.py``): the query is the
  video (folder ``video_id``, lines 21-23) with ``"<tok> " + DATASET_INSTRUCTION[dataset_name]`` (line 27;
  ``video_classification_utils.py`` lines 16-22, keyed by video.yaml's ``dataset_name``); its one
  candidate is the text ``pos_text``, also its name and label (lines 34-39); every class name of
  :data:`mme5.eval.v2.video_labels.VIDEO_CLASS_LABELS` is a corpus row (lines 61-64); ``global``.
- SmthSmthV2 (``ssv2_dataset.py``): query as above (lines 20-28, folder ``str(video_id)``); the
  candidates are the texts ``neg_text`` (names too), the label ``pos_text`` (lines 35-40); only the
  first 1000 rows (video.yaml line 6 ``num_sample_per_subset: 1000``, ``sample_dataset``,
  ``src/utils/dataset_utils.py`` lines 11-14, line 56 of the loader); ``local``.
- Video-QA (``local``; prompt :data:`QA_PROMPT`, each file's ``TASK_PROMPT``): Video-MME
  ``videomme_dataset.py`` lines 18-19, 30-32 (query ``question + "\\n" + "\\n".join(options)``), 35
  (folder ``videoID``), 63 (candidate texts ``o[o.find('. '):].strip('. ')``), 70-71 (names ``options``,
  label ``options[OPTIONS.index(answer)]``); MVBench ``mvbench_dataset.py`` lines 101, 112-119 (query and
  options through ``qa_template``, ``src/utils/vision_utils/vision_utils.py`` lines 34-46; folder
  ``<subset>/<video>``), 150-158 (candidates and names the ``(A) ...`` options, label ``qa_template``'s
  answer); NExTQA ``nextqa_dataset.py`` lines 18, 30-37 (query through ``qa_template``, candidates the
  raw ``a0``-``a4``), 65-73 (label ``options[answer]``); EgoSchema ``egoschema_dataset.py`` lines 18,
  30-36 (query ``question + " ".join(option)``, folder ``video_idx``), 64-72 (texts stripped as
  Video-MME's, names ``option``, label ``option[int(answer)]``); ActivityNetQA
  ``activitynetqa_dataset.py`` lines 23-24, 34-39 (query ``question + "? (A) yes; (B) no."``, folder
  ``v_<video_name>``), 67-75 (candidates ``yes`` / ``no``, label ``answer``).
- Video-MRET (``local``): QVHighlight and Charades-STA (``moment_retrieval_datasets.py`` lines 10-11,
  25-39): query ``"<tok> " + instruction + " " + query`` with the frames of ``<video>/query``
  (``<video>`` = ``video_path``'s file name without extension); the candidates are the other sub-folders
  of ``<video>`` (lines 58-63; names their paths, line 70; the label the one whose name starts with
  ``positive``, lines 62-63, 73-76), text ``"<tok> Understand the content of the provided video."``
  (line 71). The official order is ``os.listdir``'s; mme5 sorts the names (the order decides only
  ties). MomentSeeker (``momentseeker_dataset.py`` lines 12-15, 26-56): an ``input_frames`` ending in
  ``.mp4`` is a video query (folder ``video_frames/<input_frames without .mp4, / as _>``), one ending in
  ``.jpg`` an image query (the file ``query_<input_frames>``), else text only, each with its instruction;
  the candidates are the ``output_path`` clips of ``positive_frames`` then ``negative_frames`` (lines
  58-88, folder ``video_frames/<path with / as _, up to .mp4>``, names those folders), text ``"<tok>
  Understand the content of the provided video clip."`` (line 89), the labels all the positives (lines
  75, 91-94).

Differences, all listed: a Video-MRET video whose frame folder is absent gives a row whose one candidate
is that folder, so the reader lists it in ``missing_frames`` and skips the row (the official code would
fail, ``save_frames`` line 293). MomentSeeker reads all frames of a folder (``load_frames``, line 40);
mme5 samples ``num_frames`` of them, the same when the folders hold the 8 frames the official code saves
(video.yaml line 124). A ``local`` row whose label is not one of its candidates (an MVBench answer
that matches no candidate, ``qa_template``'s ``(@) ...``) is an error of the reader, where the official
code would score the row as a miss.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mme5.errors import ConfigError
from mme5.eval.datasets import EvalDataError
from mme5.eval.v2.video_labels import VIDEO_CLASS_LABELS

#: The video / image token written into texts (Phi-3-V's, ``processor.py`` line 60).
VIDEO_TOKEN = "<|image_1|>"
#: Every candidate video's text (e.g. ``msrvtt_dataset.py`` line 11 through ``process_input_text``).
VIDEO_TARGET_TEXT = f"{VIDEO_TOKEN} Understand the content of the provided video."
#: A MomentSeeker clip's text (``momentseeker_dataset.py`` lines 15, 89).
CLIP_TARGET_TEXT = f"{VIDEO_TOKEN} Understand the content of the provided video clip."
#: The QA tasks' prompt (``videomme_dataset.py`` line 18 and the other QA loaders' ``TASK_PROMPT``).
QA_PROMPT = (
    "Given a video and a question, select the most accurate answer from the provided candidates. "
    "Return only the exact text of your chosen answer. Question: "
)

#: task -> (video column, caption column, first of a caption list, extra columns read, instruction)
RETRIEVAL_COLUMNS: dict[str, tuple[str, str, bool, tuple[str, ...], str]] = {
    # msrvtt_dataset.py lines 10, 21-22
    "MSR-VTT": (
        "video_id",
        "caption",
        False,
        ("video",),
        "Find a video that contains the following visual content:",
    ),
    # msvd_dataset.py lines 10, 21
    "MSVD": (
        "video_id",
        "caption",
        True,
        ("video",),
        "Find the video snippet that corresponds to the given summary:",
    ),
    # didemo_dataset.py lines 10, 21
    "DiDeMo": ("video", "caption", False, (), "Find a video that includes the following described scenes:"),
    # vatex_dataset.py lines 10, 21
    "VATEX": ("videoID", "enCap", True, (), "Select a video that fits the description provided:"),
    # youcook2_dataset.py lines 10, 21
    "YouCook2": (
        "id",
        "sentence",
        False,
        ("video_path",),
        "Find a video that demonstrates the following action while making a recipe:",
    ),
}

#: video_classification_utils.py lines 16-22 (keyed there by video.yaml's dataset_name).
CLASSIFICATION_INSTRUCTION: dict[str, str] = {
    "K700": "Recognize the category of the video content.",
    "SmthSmthV2": "What actions or object interactions are being performed by the person in the video?",
    "UCF101": "What activities or sports are being performed by the person in the video?",
    "HMDB51": "What actions or objects interactions are the person in the video doing?",
    "Breakfast": "Recognize the breakfast type that the person is cooking in the video. ",
}
#: Rows SmthSmthV2 keeps (video.yaml line 6).
SSV2_ROWS = 1000

#: MVBench's subsets in the loader's order (``mvbench_dataset.py`` lines 24-45, concatenated in this
#: order by ``load_hf_dataset_multiple_subset``, ``dataset_utils.py`` lines 78-91, loader line 178).
MVBENCH_SUBSETS: tuple[str, ...] = (
    "episodic_reasoning",
    "action_sequence",
    "action_prediction",
    "action_antonym",
    "fine_grained_action",
    "unexpected_action",
    "object_existence",
    "object_interaction",
    "object_shuffle",
    "moving_direction",
    "action_localization",
    "scene_transition",
    "action_count",
    "moving_count",
    "moving_attribute",
    "state_change",
    "fine_grained_pose",
    "character_order",
    "egocentric_navigation",
    "counterfactual_inference",
)

MRET_INSTRUCTION = "Find the clip that corresponds to the described scene in the given video:"  # :10
SEEKER_TEXT = "Find the clip that corresponds to the given text:"  # momentseeker_dataset.py:12
SEEKER_IMAGE = "Select the video clip that aligns with the given text and image:"  # :13
SEEKER_VIDEO = "Find the clip that corresponds to the given sentence and video segment:"  # :14

#: The options of the multiple-choice QA loaders (videomme_dataset.py line 19, activitynetqa line 24).
ABCD = ("A", "B", "C", "D")
YES_NO = ("yes", "no")


@dataclass
class ConvertedTask:
    """A task's reader rows and corpus rows, as converted from its hub rows."""

    rows: list[dict] = field(default_factory=list)
    corpus: list[dict] = field(default_factory=list)


Where = Callable[[int], str]


def _row_where(r: int) -> str:
    return f"row {r}"


def prompt_text(instruction: str, text: str | None = None, video: bool = False, image: bool = False) -> str:
    """``process_input_text`` (``processor.py`` lines 663-673) with :data:`VIDEO_TOKEN` as the token."""
    out = instruction
    if text:
        out = out + " " + text
    if video:
        out = VIDEO_TOKEN + " " + out
    if image:
        out = VIDEO_TOKEN + " " + out
    return out


def qa_query(query: str) -> str:
    """The QA loaders' ``process_query`` with a prompt (e.g. ``videomme_dataset.py`` lines 10-15)."""
    return f"{VIDEO_TOKEN} {QA_PROMPT} {query}"


def qa_template(
    question: str, candidates: Sequence[object], answer: object
) -> tuple[str, list[str], str, int]:
    """``qa_template`` (``vision_utils.py`` lines 34-46): the question with its lettered options, the
    options ``(A) ...``, the answer as its option (the last candidate equal to it; ``(@) ...`` when none
    is, as there) and its index."""
    question = f"{question}\nOptions:\n"
    answer_idx = -1
    options = []
    for idx, c in enumerate(candidates):
        question += f"({chr(ord('A') + idx)}) {c}\n"
        options.append(f"({chr(ord('A') + idx)}) {c}")
        if c == answer:
            answer_idx = idx
    return question.rstrip(), options, f"({chr(ord('A') + answer_idx)}) {answer}", answer_idx


def strip_option(option: str) -> str:
    """A lettered option's text, ``o[o.find('. '):].strip('. ')`` (``videomme_dataset.py`` line 63)."""
    return option[option.find(". ") :].strip(". ")


class _Row:
    """Column access of one hub row with one-line errors naming task, row and column."""

    def __init__(self, task: str, row: object, where: str):
        if not isinstance(row, dict):
            raise EvalDataError(f"{task} ({where}): not a table row")
        self.task, self.row, self.where = task, row, where

    def error(self, msg: str) -> EvalDataError:
        return EvalDataError(f"{self.task} ({self.where}): {msg}")

    def __getitem__(self, col: str) -> object:
        if col not in self.row:
            raise self.error(f"no column '{col}'")
        return self.row[col]

    def text(self, col: str) -> str:
        value = self[col]
        if value is None or isinstance(value, list | dict):
            raise self.error(f"column '{col}' must be a string, got {type(value).__name__}")
        return str(value)

    def strings(self, col: str) -> list[str]:
        value = self[col]
        if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) for v in value):
            raise self.error(f"column '{col}' must be a non-empty list of strings")
        return list(value)

    def need(self, *cols: str) -> None:
        for c in cols:
            self[c]


def _video_row(
    query: str,
    query_video: str,
    texts: list[str],
    videos: list[str],
    names: list[str],
    label: str | list[str],
) -> dict:
    return {
        "query_text": query,
        "query_video": query_video,
        "cand_text": texts,
        "cand_video": videos,
        "cand_names": names,
        "label_name": label,
    }


def _retrieval(task: str, row: _Row) -> dict:
    video_col, caption_col, first, extra, instruction = RETRIEVAL_COLUMNS[task]
    row.need(video_col, *extra, caption_col)
    name = row.text(video_col)
    if task == "DiDeMo":  # didemo_dataset.py line 26
        name = os.path.splitext(os.path.basename(name))[0]
    caption = row.strings(caption_col)[0] if first else row.text(caption_col)
    return _video_row(prompt_text(instruction, caption), "", [VIDEO_TARGET_TEXT], [name], [name], name)


def _classification(task: str, row: _Row) -> dict:
    row.need("video_id", "pos_text")  # video_classification_datasets.py line 21
    label = row.text("pos_text")
    query = prompt_text(CLASSIFICATION_INSTRUCTION[task], video=True)  # line 27
    return _video_row(query, row.text("video_id"), [label], [""], [label], label)  # lines 23, 34-39


def _ssv2(task: str, row: _Row) -> dict:
    row.need("video_id", "pos_text", "neg_text")  # ssv2_dataset.py lines 20-21
    cands = row.strings("neg_text")
    query = prompt_text(CLASSIFICATION_INSTRUCTION[task], video=True)  # line 28
    return _video_row(query, row.text("video_id"), cands, [""] * len(cands), cands, row.text("pos_text"))


def _videomme(task: str, row: _Row) -> dict:
    row.need("question", "videoID", "options", "answer", "question_id", "domain", "sub_category")  # :30-31
    options = row.strings("options")
    answer = row.text("answer")
    if answer not in ABCD:
        raise row.error(f"answer '{answer}' is not one of {', '.join(ABCD)}")
    if ABCD.index(answer) >= len(options):
        raise row.error(f"answer '{answer}' has no option")
    query = qa_query(row.text("question") + "\n" + "\n".join(options))  # line 32
    texts = [strip_option(o) for o in options]  # line 63
    return _video_row(
        query, row.text("videoID"), texts, [""] * len(options), options, options[ABCD.index(answer)]
    )


def _mvbench(task: str, row: _Row) -> dict:
    row.need("subset", "question", "video", "candidates", "answer")  # mvbench_dataset.py lines 112-113
    subset = row.text("subset")
    if subset not in MVBENCH_SUBSETS:
        raise row.error(f"subset '{subset}' is not one of MVBench's (mvbench_dataset.py lines 24-45)")
    cands = row["candidates"]
    if not isinstance(cands, list | tuple) or not cands:
        raise row.error("column 'candidates' must be a non-empty list")
    query, options, answer, _ = qa_template(
        qa_query(row.text("question")), list(cands), row["answer"]
    )  # :116-117
    folder = f"{subset}/{row.text('video')}"  # line 119
    return _video_row(query, folder, options, [""] * len(options), options, answer)  # lines 150-158


def _nextqa(task: str, row: _Row) -> dict:
    cols = ("video", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4")  # :30-31
    row.need(*cols)
    options = [row.text(c) for c in ("a0", "a1", "a2", "a3", "a4")]  # line 32
    answer = row["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
        raise row.error(f"answer must be an option index 0-4, got {answer!r}")
    query, _, _, _ = qa_template(qa_query(row.text("question")), options, answer)  # lines 33-34
    return _video_row(query, row.text("video"), options, [""] * 5, options, options[answer])  # lines 65-73


def _egoschema(task: str, row: _Row) -> dict:
    row.need("video_idx", "question", "answer", "question_idx", "option")  # egoschema_dataset.py :30-31
    options = row.strings("option")
    answer = row["answer"]
    try:
        idx = int(answer) if isinstance(answer, int | str) and not isinstance(answer, bool) else None  # :33
    except ValueError:
        idx = None
    if idx is None:
        raise row.error(f"answer must be an option index, got {answer!r}")
    if not 0 <= idx < len(options):
        raise row.error(f"answer {idx} has no option")
    query = qa_query(row.text("question") + " ".join(options))  # line 32
    texts = [strip_option(o) for o in options]  # line 64
    return _video_row(query, row.text("video_idx"), texts, [""] * len(options), options, options[idx])


def _activitynetqa(task: str, row: _Row) -> dict:
    row.need("video_name", "question", "answer", "question_id")  # activitynetqa_dataset.py lines 34-35
    answer = row.text("answer")
    if answer not in YES_NO:  # line 76: OPTIONS.index(answer)
        raise row.error(f"answer '{answer}' is not one of yes, no")
    query = qa_query(row.text("question") + "? (A) yes; (B) no.")  # line 36
    names: list[str] = list(YES_NO)
    return _video_row(query, f"v_{row.text('video_name')}", names, ["", ""], names, answer)  # lines 39, 67-75


def _moment(task: str, row: _Row, frame_root: Path | None) -> dict:
    row.need("query", "video_path")  # moment_retrieval_datasets.py line 25
    video = os.path.splitext(os.path.basename(row.text("video_path")))[0]  # line 27
    query = prompt_text(MRET_INSTRUCTION, row.text("query"), video=True)  # line 39
    folder = frame_root / video if frame_root is not None else None
    if folder is None or not folder.is_dir():  # listed as missing by the reader, the row skipped
        return _video_row(query, f"{video}/query", [VIDEO_TARGET_TEXT], [video], [video], video)
    clips = sorted(p.name for p in folder.iterdir() if p.name != "query" and p.is_dir())  # lines 58-61
    positive = [c for c in clips if c.startswith("positive")]  # lines 62-63
    if not positive:
        raise row.error(f"no clip folder starting with 'positive' in {folder}")
    names = [f"{video}/{c}" for c in clips]  # line 70 (relative to the frame root here)
    label = f"{video}/{positive[-1]}"  # the last one listed wins, as there
    return _video_row(query, f"{video}/query", [VIDEO_TARGET_TEXT] * len(names), names, names, label)


def _clip_folder(path: str) -> str:
    # momentseeker_dataset.py lines 63-64 / 77-78
    return os.path.join("video_frames", path.replace("/", "_").split(".mp4")[0])


def _momentseeker(task: str, row: _Row) -> dict:
    row.need("query", "positive_frames", "negative_frames", "input_frames")  # lines 26-27
    text = row.text("query")
    given = row.text("input_frames")
    if given.endswith(".mp4"):  # lines 29-40
        query = prompt_text(SEEKER_VIDEO, text, video=True)
        query_video = os.path.join("video_frames", given.split(".mp4")[0].replace("/", "_"))
    elif given.endswith(".jpg"):  # lines 46-48: one image, not a folder
        query = prompt_text(SEEKER_IMAGE, text, image=True)
        query_video = f"query_{given}"
    else:  # lines 54-56
        query, query_video = prompt_text(SEEKER_TEXT, text), ""
    clips: dict[str, list[str]] = {}
    for col in ("positive_frames", "negative_frames"):  # lines 58-59
        entries = row[col]
        if not isinstance(entries, list | tuple):
            raise row.error(f"column '{col}' must be a list of {{'output_path': ...}}")
        paths = []
        for e in entries:
            if not isinstance(e, dict) or not isinstance(e.get("output_path"), str):
                raise row.error(f"column '{col}' must be a list of {{'output_path': ...}}")
            paths.append(_clip_folder(e["output_path"]))
        clips[col] = paths
    names = clips["positive_frames"] + clips["negative_frames"]  # lines 62-88
    if not clips["positive_frames"]:
        raise row.error("column 'positive_frames' is empty (no label)")
    texts = [CLIP_TARGET_TEXT] * len(names)  # line 89
    return _video_row(query, query_video, texts, names, names, clips["positive_frames"])  # lines 91-94


_CONVERTERS: dict[str, Callable[[str, _Row], dict]] = {
    **{t: _retrieval for t in RETRIEVAL_COLUMNS},
    **{t: _classification for t in VIDEO_CLASS_LABELS},
    "SmthSmthV2": _ssv2,
    "Video-MME": _videomme,
    "MVBench": _mvbench,
    "NExTQA": _nextqa,
    "EgoSchema": _egoschema,
    "ActivityNetQA": _activitynetqa,
    "MomentSeeker": _momentseeker,
}
#: The 18 video tasks the converters cover.
HUB_VIDEO_TASKS: tuple[str, ...] = (*_CONVERTERS, "QVHighlight", "Charades-STA")


def convert_hub_rows(
    task: str,
    hub_rows: Iterable[object],
    frame_root: str | os.PathLike | None = None,
    where: Where | None = None,
) -> ConvertedTask:
    """The reader's rows (and corpus) of a video task from its hub dataset's rows.

    ``frame_root``: the task's frame folder (QVHighlight and Charades-STA list their candidate clips
    there); ``where(r)`` names row ``r`` in errors (default ``row r``).
    """
    if task not in HUB_VIDEO_TASKS:
        raise ConfigError(f"'{task}' is not one of the MMEB-V2 video tasks {', '.join(HUB_VIDEO_TASKS)}")
    where = where or _row_where
    root = Path(frame_root) if frame_root is not None else None
    out = ConvertedTask()
    for r, raw in enumerate(hub_rows):
        if task == "SmthSmthV2" and r >= SSV2_ROWS:  # video.yaml line 6
            break
        row = _Row(task, raw, where(r))
        if task in ("QVHighlight", "Charades-STA"):
            out.rows.append(_moment(task, row, root))
        else:
            out.rows.append(_CONVERTERS[task](task, row))
    if task in VIDEO_CLASS_LABELS:  # video_classification_datasets.py lines 61-64
        out.corpus = [{"cand_name": n, "cand_text": n, "cand_video": ""} for n in VIDEO_CLASS_LABELS[task]]
    return out


def video_retrieval_rows(task: str, hub_rows: Iterable[dict]) -> list[dict]:
    """The reader's rows for one of the five video-retrieval tasks, from its hub dataset's rows."""
    if task not in RETRIEVAL_COLUMNS:
        raise ConfigError(f"'{task}' is not one of the video-retrieval tasks {', '.join(RETRIEVAL_COLUMNS)}")
    return convert_hub_rows(task, hub_rows).rows
