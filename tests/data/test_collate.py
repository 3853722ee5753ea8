"""Collator: batch layout, negative padding, content ids, pickling, lazy image decoding, bad images."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from mme5.data.collate import MAX_NEGATIVES, Collator
from mme5.data.skips import SkipCounter
from mme5.model.encoder import Encoder
from mme5.records import Example, RecordError, Side


def jpeg(name: str, size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(getattr(skdata, name)()).convert("RGB").resize(size).save(buf, format="JPEG")
    return buf.getvalue()


def example(i: int, negatives: int, image_query: bool = True) -> Example:
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "horse"]
    return Example(
        id=f"ex{i}",
        query=Side(
            f"query {i}: what is in the picture?", image_bytes=jpeg(names[i % 6]) if image_query else None
        ),
        positive=Side(f"positive answer {i}"),
        negatives=[
            Side(f"negative {i}.{j}", image_bytes=jpeg(names[(i + j) % 6]) if j % 2 else None)
            for j in range(negatives)
        ],
        instruction="Represent the given image with the following question:",
        task="vqa",
        modality="IT2T",
    )


@pytest.fixture(scope="module")
def collator() -> Collator:
    return Collator("tiny-llava", max_length=32)


def test_batch_layout_and_negative_padding(collator: Collator):
    examples = [example(0, 3), example(1, 1), example(2, 2, image_query=False)]
    batch = collator(examples)
    assert batch["ids"] == ["ex0", "ex1", "ex2"] and batch["num_negatives"] == 3
    assert batch["query"]["input_ids"].shape[0] == 3
    assert batch["candidates"]["input_ids"].shape[0] == 3 + 3 * 3
    # Candidate order: B positives, then the K negatives of query 0, of query 1 (its last one repeated), ...
    expected = [ex.candidate_sides()[0] for ex in examples]
    expected += examples[0].candidate_sides()[1:]
    expected += [examples[1].candidate_sides()[1]] * 3
    expected += [*examples[2].candidate_sides()[1:], examples[2].candidate_sides()[2]]
    assert batch["candidate_ids"].dtype == torch.long
    assert batch["candidate_ids"].tolist() == [s.content_id() for s in expected]
    # Two query images and the image negatives (odd positions) reach the processor.
    n_images = 2 + sum(s.has_image for s in expected)
    assert batch["query"]["pixel_values"].shape[0] == 2
    assert batch["candidates"]["pixel_values"].shape[0] == n_images - 2


def test_max_negatives_caps_and_missing_negatives_give_k_zero(collator: Collator):
    capped = Collator("tiny-llava", max_length=32, max_negatives=2)([example(0, 3), example(1, 5)])
    assert capped["num_negatives"] == 2 and capped["candidates"]["input_ids"].shape[0] == 2 + 4
    none = collator([example(0, 3), example(1, 0)])
    assert none["num_negatives"] == 0 and none["candidates"]["input_ids"].shape[0] == 2
    assert none["candidate_ids"].shape == (2,)


def test_max_negatives_has_a_default_and_the_cut_is_counted(collator: Collator):
    """3000 negatives on one sample would make its batch 12,004 candidate rows: capped, and counted."""
    many = Example(
        id="many",
        query=Side("q"),
        positive=Side("p"),
        negatives=[Side(f"n{j}") for j in range(3000)],
    )
    counter = SkipCounter()
    counter.take_delta()
    batch = Collator("tiny-llava", max_length=8)([many, example(1, 3, image_query=False)])
    assert MAX_NEGATIVES == 16 and batch["num_negatives"] == 16
    assert batch["candidates"]["input_ids"].shape[0] == 2 + 2 * 16
    assert counter.take_delta() == {"negatives_cut": 3000 - 16}
    # the mmE5 recipes' 3 hard negatives are never cut
    collator([example(0, 3), example(1, 3)])
    assert counter.take_delta() == {}


def test_query_side_carries_the_instruction_and_image_token(collator: Collator):
    batch = collator([example(0, 1)])
    tok = collator.processor.tokenizer
    text = tok.decode(batch["query"]["input_ids"][0])
    assert "Represent the given image with the following question:\nquery 0" in text
    assert text.index("<image>") < text.index("Represent")


def test_collator_pickles_and_works_in_a_fresh_copy(collator: Collator):
    examples = [example(3, 2), example(4, 2)]
    before = collator(examples)
    clone = pickle.loads(pickle.dumps(collator))
    assert clone._processor is None  # the processor is loaded again in the worker
    after = clone(examples)
    for key in ("query", "candidates"):
        assert before[key].keys() == after[key].keys()
        for name in before[key]:
            torch.testing.assert_close(before[key][name], after[key][name])
    assert torch.equal(before["candidate_ids"], after["candidate_ids"])


def test_unreadable_image_names_the_example(collator: Collator):
    bad = example(5, 1)
    bad.query.image_bytes = b"not an image at all"
    with pytest.raises(RecordError, match=r"example 'ex5'.*not a JPEG, PNG") as info:
        collator([example(0, 1), bad])
    assert info.value.reason == "image_format"
    bad.query.image_bytes = jpeg("coffee")[:400]
    with pytest.raises(RecordError, match=r"example 'ex5'.*cannot decode image") as info:
        collator([example(0, 1), bad])
    assert info.value.reason == "image_decode"


def test_large_images_are_bounded_by_max_side():
    big = Example(id="big", query=Side("q", image_bytes=jpeg("astronaut", (300, 200))), positive=Side("p"))
    col = Collator("tiny-llava", max_length=16, max_side=64)
    side = big.query_side()
    col._decoded(side, big)
    assert side.image is not None and max(side.image.size) == 64


@pytest.mark.parametrize("model", ["tiny-mllama", "tiny-llava-next"])
def test_batch_feeds_the_encoder_forward_and_backward(model: str):
    batch = Collator(model, max_length=32)([example(0, 2), example(1, 2, image_query=False), example(2, 1)])
    enc = Encoder(model)
    q, c = enc(batch["query"]), enc(batch["candidates"])
    assert q.shape == (3, 64) and c.shape == (3 + 3 * 2, 64)
    loss = torch.nn.functional.cross_entropy(q @ c.T / 0.02, torch.arange(3))
    loss.backward()
    missing = {n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None}
    assert not {n for n in missing if "language_model" in n}
    # LLaVA reads the CLIP tower before its post-layernorm, which therefore never gets a gradient.
    assert {n for n in missing if "post_layernorm" not in n} == set()
