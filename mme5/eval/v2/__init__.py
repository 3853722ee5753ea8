"""MMEB-V2 evaluation (image, video, visual-document tasks) on the shared evaluation machinery.

Quick use::

    from mme5.eval.v2 import evaluate_mmeb_v2, v2_table
    result = evaluate_mmeb_v2(embed, "data/MMEB-V2", work_dir="runs/v2_frames",
                              image_dir="data/MMEB-eval", image_root="data/eval_images")
    print(v2_table(result))
"""

from mme5.eval.v2.images import V2_IMAGE_PARSERS, load_v2_images, read_v2_image_task
from mme5.eval.v2.metrics import V2Metrics, row_scores
from mme5.eval.v2.readers import V2Set, read_video_task, read_visdoc_task
from mme5.eval.v2.report import v2_table, write_v2
from mme5.eval.v2.runner import (
    V2Benchmark,
    V2Result,
    V2TaskScore,
    evaluate_mmeb_v2,
    load_mmeb_v2,
    resolve_v2_tasks,
    run_mmeb_v2,
    summarize_v2,
)
from mme5.eval.v2.tasks import KIND_METRIC, KINDS, V2_META_TASKS, V2_TASKS, V2Task, tasks_of

__all__ = [
    "KINDS",
    "KIND_METRIC",
    "V2_IMAGE_PARSERS",
    "V2_META_TASKS",
    "V2_TASKS",
    "V2Benchmark",
    "V2Metrics",
    "V2Result",
    "V2Set",
    "V2Task",
    "V2TaskScore",
    "evaluate_mmeb_v2",
    "load_mmeb_v2",
    "load_v2_images",
    "read_v2_image_task",
    "read_video_task",
    "read_visdoc_task",
    "resolve_v2_tasks",
    "row_scores",
    "run_mmeb_v2",
    "summarize_v2",
    "tasks_of",
    "v2_table",
    "write_v2",
]
