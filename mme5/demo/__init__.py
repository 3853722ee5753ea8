"""The demo corpus: a procedurally drawn, multilingual corpus that needs no download.

``ensure_demo_corpus(root)`` writes training shards, an MMEB-style evaluation folder (classification,
VQA, retrieval, grounding) and an XTD-style multilingual text -> image folder, once; a tiny model
trained from scratch on a CPU for a few minutes learns its tasks (shape, colour, count, position,
size, background of flat shapes on plain backgrounds).
"""

from mme5.demo.corpus import (
                              DEMO_VERSION,
                              DemoCorpusError,
                              DemoParams,
                              DemoPaths,
                              demo_paths,
                              ensure_demo_corpus,
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
                              "phrases",
                              "read_manifest",
                              "vocabulary_texts",
]
