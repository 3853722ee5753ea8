"""The MMEB-V2 task table: 78 tasks (36 image, 18 video, 24 visual-document), each with its kind,
meta-task, main metric and retrieval mode, as TIGER-AI-Lab/VLM2Vec's V2 evaluation defines them.

Sources (TIGER-AI-Lab/VLM2Vec at 6e1e1d4):

- The task list per kind and the main metric per kind: ``experiments/report_score_v2.py`` lines
  68-87 (``modality2dataset``: image, video, visdoc) and lines 88-92 (``modality2metric``: image and
  video ``hit@1``, visdoc ``ndcg_linear@5``).
- The retrieval mode (``eval_type``: ``local`` = each query against its own candidates, ``global`` =
  against every distinct candidate of the task): ``experiments/public/eval/image.yaml`` (every image
  task ``local``), ``experiments/public/eval/video.yaml`` (SmthSmthV2 line 9, QVHighlight 104,
  Charades-STA 116, MomentSeeker 125 and the five QA tasks 134-166 ``local``; HMDB51 18, UCF101 27,
  K700 36, Breakfast 45 and the five retrieval tasks 55-91 ``global``) and
  ``experiments/public/eval/visdoc.yaml`` (every task ``global``). ``eval.py`` line 302 reads it
  (default ``global``).
- The frame folder of each video task (``frame_root``) and the page folder of each visual-document
  task (``image_root``): the same two yaml files; the number of sampled frames (``num_frames: 8``, and
  ``num_video_frames`` / ``num_clip_frames: 8`` for moment retrieval): ``video.yaml``.
- Meta-tasks: video ``Video-RET`` / ``Video-CLS`` / ``Video-MRET`` / ``Video-QA`` from the group
  comments of ``src/constant/dataset_hf_path.py`` lines 3, 11, 18, 24; visual documents
  ``ViDoRe-V1`` (10), ``ViDoRe-V2`` (4), ``VisRAG`` (6), ``VisDoc-OOD`` (4) from
  ``adhoc/data/download_datasets.py`` lines 9, 20, 25, 32; image tasks keep MMEB-V1's meta-tasks
  (:data:`mme5.mmeb.MMEB_META_TASK`; the V2 report lists the same 36 names, report_score_v2.py
  lines 70-73).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mme5.mmeb import MMEB_DATASETS, MMEB_META_TASK

Kind = Literal["image", "video", "visdoc"]
KINDS: tuple[Kind, ...] = ("image", "video", "visdoc")  # report_score_v2.py line 93
#: The main metric of each kind (report_score_v2.py lines 88-92).
KIND_METRIC: dict[str, str] = {"image": "hit@1", "video": "hit@1", "visdoc": "ndcg_linear@5"}
#: Frames sampled per video (video.yaml ``num_frames: 8``).
NUM_FRAMES = 8


@dataclass(frozen=True)
class V2Task:
    """One MMEB-V2 task: ``eval_type`` ``local`` or ``global``; ``data_dir`` is the task's frame root
    (video) or page folder (visdoc) relative to the MMEB-V2 root, "" for image tasks."""

    name: str
    kind: Kind
    meta_task: str
    eval_type: Literal["local", "global"]
    data_dir: str = ""

    @property
    def metric(self) -> str:
        return KIND_METRIC[self.kind]


def _video(name: str, meta: str, eval_type: Literal["local", "global"], sub: str, folder: str) -> V2Task:
    return V2Task(name, "video", meta, eval_type, f"video-tasks/frames/{sub}/{folder}")


_VIDEO = [
    # report_score_v2.py lines 75-78 (order), video.yaml (eval_type, frame_root)
    _video("K700", "Video-CLS", "global", "video_cls", "K700"),
    _video("SmthSmthV2", "Video-CLS", "local", "video_cls", "SSv2"),
    _video("HMDB51", "Video-CLS", "global", "video_cls", "HMDB51"),
    _video("UCF101", "Video-CLS", "global", "video_cls", "UCF101"),
    _video("Breakfast", "Video-CLS", "global", "video_cls", "Breakfast"),
    _video("MVBench", "Video-QA", "local", "video_qa", "MVBench"),
    _video("Video-MME", "Video-QA", "local", "video_qa", "Video-MME"),
    _video("NExTQA", "Video-QA", "local", "video_qa", "NExTQA"),
    _video("EgoSchema", "Video-QA", "local", "video_qa", "EgoSchema"),
    _video("ActivityNetQA", "Video-QA", "local", "video_qa", "ActivityNetQA"),
    _video("DiDeMo", "Video-RET", "global", "video_ret", "DiDeMo"),
    _video("MSR-VTT", "Video-RET", "global", "video_ret", "MSR-VTT"),
    _video("MSVD", "Video-RET", "global", "video_ret", "MSVD"),
    _video("VATEX", "Video-RET", "global", "video_ret", "VATEX"),
    _video("YouCook2", "Video-RET", "global", "video_ret", "YouCook2"),
    _video("QVHighlight", "Video-MRET", "local", "video_mret", "QVHighlight"),
    _video("Charades-STA", "Video-MRET", "local", "video_mret", "Charades_STA"),
    _video("MomentSeeker", "Video-MRET", "local", "video_mret", "MomentSeeker"),
]

_VIDORE_V1 = [
    "ViDoRe_arxivqa",
    "ViDoRe_docvqa",
    "ViDoRe_infovqa",
    "ViDoRe_tabfquad",
    "ViDoRe_tatdqa",
    "ViDoRe_shiftproject",
    "ViDoRe_syntheticDocQA_artificial_intelligence",
    "ViDoRe_syntheticDocQA_energy",
    "ViDoRe_syntheticDocQA_government_reports",
    "ViDoRe_syntheticDocQA_healthcare_industry",
]
# visdoc.yaml lines 53-86: the v2 tasks' pages live in folders without the "ViDoRe_" prefix
_VIDORE_V2 = [
    "ViDoRe_esg_reports_human_labeled_v2",
    "ViDoRe_biomedical_lectures_v2_multilingual",
    "ViDoRe_economics_reports_v2_multilingual",
    "ViDoRe_esg_reports_v2_multilingual",
]
_VISRAG = [
    "VisRAG_ArxivQA",
    "VisRAG_ChartQA",
    "VisRAG_MP-DocVQA",
    "VisRAG_SlideVQA",
    "VisRAG_InfoVQA",
    "VisRAG_PlotQA",
]
_VISDOC_OOD = ["ViDoSeek-page", "ViDoSeek-doc", "MMLongBench-page", "MMLongBench-doc"]

_VISDOC = (
    [V2Task(n, "visdoc", "ViDoRe-V1", "global", f"visdoc-tasks/{n}") for n in _VIDORE_V1]
    + [V2Task(n, "visdoc", "ViDoRe-V2", "global", f"visdoc-tasks/{n[len('ViDoRe_') :]}") for n in _VIDORE_V2]
    + [V2Task(n, "visdoc", "VisRAG", "global", f"visdoc-tasks/{n}") for n in _VISRAG]
    + [V2Task(n, "visdoc", "VisDoc-OOD", "global", f"visdoc-tasks/{n}") for n in _VISDOC_OOD]
)
_IMAGE = [V2Task(n, "image", MMEB_META_TASK[n], "local") for n in MMEB_DATASETS]

#: All 78 tasks in the report's order (image, video, visdoc).
V2_TASKS: dict[str, V2Task] = {t.name: t for t in [*_IMAGE, *_VIDEO, *_VISDOC]}
#: Meta-tasks per kind, in report order.
V2_META_TASKS: dict[str, tuple[str, ...]] = {
    kind: tuple(dict.fromkeys(t.meta_task for t in V2_TASKS.values() if t.kind == kind)) for kind in KINDS
}


def tasks_of(kind: str) -> list[V2Task]:
    """The tasks of one kind, in report order."""
    return [t for t in V2_TASKS.values() if t.kind == kind]
