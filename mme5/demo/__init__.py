"""The demo corpus: a procedurally drawn, multilingual corpus that needs no download.

``ensure_demo_corpus(root)`` writes training shards, an MMEB-style evaluation folder (classification,
VQA, retrieval, grounding) and an XTD-style multilingual text -> image folder, once. Its tasks rest on
what a tiny model trained from scratch can see (shape, colour, count, position, size and background
of flat shapes on plain backgrounds), so a few minutes of CPU training lift it clearly above chance.
"""

from mme5.demo.corpus import (
    DEMO_VERSION,
    DemoCorpusError,
    DemoParams,
    DemoPaths,
    demo_paths,
    ensure_demo_corpus,
    open_demo_corpus,
    read_manifest,
)
from mme5.demo.phrases import LANGUAGES, PHRASES, PhraseTable, all_phrases, phrases
from mme5.demo.tasks import EVAL_DATASETS, TRAIN_MIX, vocabulary_texts

__all__ = [
    "DEMO_VERSION",
    "EVAL_DATASETS",
    "LANGUAGES",
    "PHRASES",
    "TRAIN_MIX",
    "DemoCorpusError",
    "DemoParams",
    "DemoPaths",
    "PhraseTable",
    "all_phrases",
    "demo_paths",
    "ensure_demo_corpus",
    "open_demo_corpus",
    "phrases",
    "read_manifest",
    "vocabulary_texts",
]
