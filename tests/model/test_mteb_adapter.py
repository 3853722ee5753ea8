"""mteb 2.x runs an mme5 export (MTEBModel) on small image-text retrieval tasks built offline; its scores
equal those computed here from ``mme5.load(folder).encode`` embeddings."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

mteb = pytest.importorskip("mteb")

from datasets import Dataset  # noqa: E402
from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402

from mme5.model.encoder import Encoder  # noqa: E402
from mme5.model.export import export, load  # noqa: E402
from mme5.model.mteb_adapter import MTEBModel  # noqa: E402

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera"]
CAPTIONS = ["an astronaut", "a cat", "a cup of coffee", "a rocket on its pad", "a man with a camera"]
INSTRUCTIONS = {
    "retrieval": "Find me an everyday image that matches the given caption:",
    "image": "Represent the given image.",
    "TinyIT2T-query": "Represent the given image with the following question:",
}


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB").resize((64, 64))


def _metadata(name: str, category: str) -> TaskMetadata:
    metadata = TaskMetadata(
        name=name,
        description="A tiny offline image-text retrieval task (mme5's mteb adapter test).",
        reference=None,
        dataset={"path": "NA", "revision": "NA"},
        type="Any2AnyRetrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=("2025-01-01", "2025-01-01"),
        domains=[],
        task_subtypes=[],
        license="cc-by-4.0",
        annotations_creators="derived",
        dialect=[],
        sample_creation="found",
        bibtex_citation="",
    )
    metadata.modalities = ["image", "text"]
    metadata.category = category  # type: ignore[assignment]
    return metadata


def _split(queries: dict[str, list[Any]], corpus: dict[str, list[Any]]) -> RetrievalSplitData:
    n = len(queries["id"])
    return RetrievalSplitData(
        queries=Dataset.from_dict(queries),
        corpus=Dataset.from_dict(corpus),
        relevant_docs={f"q{i}": {f"d{i}": 1} for i in range(n)},
        top_ranked=None,
    )


class TinyT2I(AbsTaskRetrieval):
    """Caption -> photo (text queries, image documents)."""

    metadata = _metadata("TinyT2I", "t2i")

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        ids = range(len(PHOTOS))
        split = _split(
            {"id": [f"q{i}" for i in ids], "text": CAPTIONS},
            {"id": [f"d{i}" for i in ids], "image": [photo(p) for p in PHOTOS]},
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class TinyIT2T(AbsTaskRetrieval):
    """Photo + question -> caption (fused image+text queries, text documents)."""

    metadata = _metadata("TinyIT2T", "it2t")

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        ids = range(len(PHOTOS))
        split = _split(
            {
                "id": [f"q{i}" for i in ids],
                "text": ["What is shown?"] * len(PHOTOS),
                "image": [photo(p) for p in PHOTOS],
            },
            {"id": [f"d{i}" for i in ids], "text": CAPTIONS},
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


def _scores(queries: Any, docs: Any) -> dict[str, float]:
    """ndcg@10 and recall@1 with one relevant document per query (query i -> document i)."""
    queries, docs = np.asarray(queries), np.asarray(docs)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    sims = q @ d.T
    ranks = [int((sims[i] > sims[i, i]).sum()) for i in range(len(q))]
    return {
        "ndcg_at_10": float(np.mean([1 / math.log2(r + 2) if r < 10 else 0.0 for r in ranks])),
        "recall_at_1": float(np.mean([r == 0 for r in ranks])),
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return export(Encoder("tiny-llava", max_length=48), tmp_path_factory.mktemp("mteb") / "e", INSTRUCTIONS)


@pytest.mark.slow  # ~20 s on a 2-core CPU
def test_mteb_evaluate_matches_own_scores(folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    adapter = MTEBModel(folder, device="cpu")
    assert adapter.mteb_model_meta is not None and adapter.mteb_model_meta.name == "mme5/e"
    results = mteb.evaluate(adapter, tasks=[TinyT2I(), TinyIT2T()], cache=None, show_progress_bar=False)
    got = {r.task_name: r.scores["test"][0] for r in results.task_results}

    model = load(folder, device="cpu")
    images = [photo(p) for p in PHOTOS]
    expected = {
        # text queries of a retrieval task take "retrieval", image-only documents "image"
        "TinyT2I": _scores(
            model.encode(CAPTIONS, prompt_name="retrieval"),
            model.encode(images, prompt_name="image"),
        ),
        # the task's own key "TinyIT2T-query" for the fused queries; text documents take none
        "TinyIT2T": _scores(
            model.encode(
                [{"text": "What is shown?", "image": im} for im in images], prompt_name="TinyIT2T-query"
            ),
            model.encode(CAPTIONS),
        ),
    }
    for task, scores in expected.items():
        for metric, value in scores.items():
            assert got[task][metric] == pytest.approx(value, abs=1e-4), (task, metric)


def test_instruction_choice(folder):
    adapter = MTEBModel(load(folder, device="cpu"), name="mme5/x")
    meta = TinyT2I.metadata
    query, document = mteb.types.PromptType.query, mteb.types.PromptType.document
    assert adapter.instruction_for(meta, query, True, False) == INSTRUCTIONS["retrieval"]
    assert adapter.instruction_for(meta, document, False, True) == INSTRUCTIONS["image"]
    assert adapter.instruction_for(meta, document, True, False) is None
    assert adapter.instruction_for(TinyIT2T.metadata, query, True, True) == INSTRUCTIONS["TinyIT2T-query"]
    plain = MTEBModel(adapter.model, instructions={}, name="mme5/x")
    assert plain.instruction_for(meta, query, True, False) is None


def test_encode_batches_match_mme5(folder):
    """mteb's dataloader of fused queries -> the same vectors as mme5's encode with the task's key."""
    from mteb._create_dataloaders import create_dataloader

    model = load(folder, device="cpu")
    adapter = MTEBModel(model, name="mme5/x")
    task = TinyIT2T()
    task.load_data()
    queries = task.dataset["default"]["test"]["queries"]
    loader = create_dataloader(
        queries, task_metadata=task.metadata, prompt_type=mteb.types.PromptType.query, batch_size=2
    )
    got = adapter.encode(
        loader,
        task_metadata=task.metadata,
        hf_split="test",
        hf_subset="default",
        prompt_type=mteb.types.PromptType.query,
    )
    items = [{"text": t, "image": im} for t, im in zip(queries["text"], queries["image"], strict=True)]
    expected = np.asarray(model.encode(items, prompt_name="TinyIT2T-query"))
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - np.asarray(model.encode(items))).max() > 1e-3  # the instruction is really applied
