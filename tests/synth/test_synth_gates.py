"""Quality gates: scores, lengths, language script, degenerate samples, near-duplicates."""

from __future__ import annotations

import pytest

from mme5.synth.gates import GateConfig, NearDuplicateIndex, QualityGates, script_fraction


def _gen(
    query="Wo steht der rote Wagen?",
    positive="Vor dem Haus.",
    negative="Hinter der Scheune.",
    instruction="Answer the question about the image.",
    scores=(8, 8, 8, 8),
):
    keys = ("relevance", "negative_plausibility", "clarity", "diversity")
    sample = {"instruction": instruction, "query": query, "positive": positive, "hard_negative": negative}
    return {"self_evaluation": dict(zip(keys, scores, strict=False)), "revised_sample": sample}


def test_scripts():
    assert script_fraction("Привет мир", ("CYRILLIC",)) == 1.0
    assert script_fraction("東京の写真", ("CJK", "HIRAGANA", "KATAKANA")) == 1.0
    assert script_fraction("hello", ("ARABIC",)) == 0.0
    assert script_fraction("1234 !?", ("THAI",)) == 1.0  # no letters: nothing to judge


def test_gate_reasons():
    g = QualityGates(GateConfig(min_score=6, min_chars=3, max_chars=60))
    assert g.check(_gen(), "de") is None
    assert g.check(_gen(scores=(5, 5, 6, 6)), "de") == "low_score"
    assert g.check(_gen(positive="Ja"), "de") == "too_short"
    assert g.check(_gen(negative="x" * 61), "de") == "too_long"
    assert g.check(_gen(), "ru") == "wrong_language"  # German text, Russian drawn
    assert (
        g.check(_gen(query="Где красная машина?", positive="Перед домом.", negative="За сараем."), "ru")
        is None
    )
    assert (
        g.check(
            _gen(
                instruction="Ответьте на вопрос.",
                query="Где машина?",
                positive="Перед домом.",
                negative="За сараем.",
            ),
            "ru",
        )
        == "wrong_language"
    )  # instruction must be English
    assert g.check(_gen(negative=" vor dem  HAUS. "), "de") == "degenerate"
    assert QualityGates(GateConfig(language_check=False)).check(_gen(), "ru") is None


def test_language_detector_hook():
    g = QualityGates(GateConfig(language_detector="builtins:str"))  # returns the text itself: never a code
    assert g.check(_gen(), "de") == "wrong_language"
    with pytest.raises(ValueError, match=r"language_detector 'nope\.mod:f'"):
        QualityGates(GateConfig(language_detector="nope.mod:f"))


def test_near_duplicates():
    g = QualityGates(GateConfig(dedup_threshold=0.8))
    base = "Find a photo of a red bicycle leaning against a blue wooden door in the old town | query:img1"
    assert not g.is_duplicate(base)
    assert g.is_duplicate(base.replace("red", "Red"))  # normalised: identical
    assert g.is_duplicate(base + " ")
    assert g.is_duplicate(base.replace("old town", "old towns"))  # one character more
    assert not g.is_duplicate("A bowl of ramen with a soft egg on a wooden table | query:img2")
    assert not g.is_duplicate("Which animal sleeps on the sofa next to the window? | query:img3")
    assert len(g.dedup) == 3


def test_minhash_estimate_tracks_jaccard():
    idx = NearDuplicateIndex(threshold=0.5, num_perm=128, bands=32)
    a = "the quick brown fox jumps over the lazy dog near the river bank today"
    b = "the quick brown fox jumps over the lazy cat near the river bank today"
    sa, sb = idx.signature(a), idx.signature(b)

    def grams(t):
        return {t[i : i + 5] for i in range(len(t) - 4)}

    true = len(grams(a) & grams(b)) / len(grams(a) | grams(b))
    assert abs(float((sa == sb).mean()) - true) < 0.15
    assert (idx.signature(a) == sa).all()  # deterministic
