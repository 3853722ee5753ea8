"""The MMEB benchmark's datasets: their names, meta-tasks and the out-of-distribution split.

One table for the evaluation (scores by meta-task, IND / OOD) and the converter (the task of a
training subset), from the mmE5 / VLM2Vec papers' dataset lists.
"""

from __future__ import annotations

META_TASKS = ("Classification", "VQA", "Retrieval", "Grounding")

#: The 36 MMEB datasets in the paper's order, with their meta-task.
MMEB_META_TASK: dict[str, str] = {
    **dict.fromkeys(
        [
            "ImageNet-1K",
            "N24News",
            "HatefulMemes",
            "VOC2007",
            "SUN397",
            "Place365",
            "ImageNet-A",
            "ImageNet-R",
            "ObjectNet",
            "Country211",
        ],
        "Classification",
    ),
    **dict.fromkeys(
        [
            "OK-VQA",
            "A-OKVQA",
            "DocVQA",
            "InfographicsVQA",
            "ChartQA",
            "Visual7W",
            "ScienceQA",
            "VizWiz",
            "GQA",
            "TextVQA",
        ],
        "VQA",
    ),
    **dict.fromkeys(
        [
            "VisDial",
            "CIRR",
            "VisualNews_t2i",
            "VisualNews_i2t",
            "MSCOCO_t2i",
            "MSCOCO_i2t",
            "NIGHTS",
            "WebQA",
            "FashionIQ",
            "Wiki-SS-NQ",
            "OVEN",
            "EDIS",
        ],
        "Retrieval",
    ),
    **dict.fromkeys(["MSCOCO", "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"], "Grounding"),
}
#: The 16 out-of-distribution datasets (not in MMEB-train); the other 20 are in-distribution.
MMEB_OOD = frozenset(
    [
        "Place365",
        "ImageNet-A",
        "ImageNet-R",
        "ObjectNet",
        "Country211",
        "ScienceQA",
        "VizWiz",
        "GQA",
        "TextVQA",
        "OVEN",
        "FashionIQ",
        "EDIS",
        "Wiki-SS-NQ",
        "Visual7W-Pointing",
        "RefCOCO",
        "RefCOCO-Matching",
    ]
)
MMEB_DATASETS: tuple[str, ...] = tuple(MMEB_META_TASK)
