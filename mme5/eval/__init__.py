"""MMEB and XTD evaluation: readers, distinct-item encoding, cached embeddings, ranking metrics,
Lightning callbacks, reports, and the standalone ``mme5 evaluate``.

Quick use with any embedding function ``embed(sides: list[Side]) -> Tensor[n, D]``::

    from mme5.eval import evaluate_mmeb, markdown_report
    result = evaluate_mmeb(embed, "data/MMEB-eval", image_root="data/eval_images")
    print(markdown_report(mmeb=result))
"""

from typing import TYPE_CHECKING

from mme5.distributed import DistContext
from mme5.eval.cache import EmbeddingCache, model_fingerprint
from mme5.eval.datasets import (
    XTD_LANGUAGES,
    DatasetInfo,
    EvalDataError,
    RetrievalSet,
    resolve_mmeb,
    resolve_xtd,
)
from mme5.eval.items import Item, ItemTable
from mme5.eval.metrics import RankingMetrics, truth_rank
from mme5.eval.runner import (
    DatasetScore,
    EmbedFn,
    EvalResult,
    evaluate_mmeb,
    evaluate_xtd,
    load_mmeb,
    load_xtd,
    run_benchmark,
)
from mme5.mmeb import META_TASKS, MMEB_DATASETS, MMEB_META_TASK, MMEB_OOD

if TYPE_CHECKING:  # imported on first use (module __getattr__ below), named here for type checkers
    from mme5.eval.callbacks import MMEBEvaluation, MMEBV2Evaluation, XTDEvaluation
    from mme5.eval.report import markdown_report

__all__ = [
    "META_TASKS",
    "MMEB_DATASETS",
    "MMEB_META_TASK",
    "MMEB_OOD",
    "XTD_LANGUAGES",
    "DatasetInfo",
    "DatasetScore",
    "DistContext",
    "EmbedFn",
    "EmbeddingCache",
    "EvalDataError",
    "EvalResult",
    "Item",
    "ItemTable",
    "MMEBEvaluation",
    "MMEBV2Evaluation",
    "RankingMetrics",
    "RetrievalSet",
    "XTDEvaluation",
    "evaluate_mmeb",
    "evaluate_xtd",
    "load_mmeb",
    "load_xtd",
    "markdown_report",
    "model_fingerprint",
    "resolve_mmeb",
    "resolve_xtd",
    "run_benchmark",
    "truth_rank",
]


def __getattr__(name: str):
    # Lightning, matplotlib, model loading and bitsandbytes are imported only when these are asked for.
    if name in ("MMEBEvaluation", "MMEBV2Evaluation", "XTDEvaluation"):
        from mme5.eval import callbacks

        return getattr(callbacks, name)
    if name == "markdown_report":
        from mme5.eval.report import markdown_report

        return markdown_report
    if name == "load_model":
        from mme5.eval.models import load_model

        return load_model
    if name == "compare_quantized":
        from mme5.eval.quantized import compare_quantized

        return compare_quantized
    raise AttributeError(f"module 'mme5.eval' has no attribute '{name}'")
