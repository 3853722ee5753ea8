"""Plans: deterministic per (seed, index), and their statistics follow the configured weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mme5.synth.languages import LANGUAGES, language_weights
from mme5.synth.plan import PlanConfig, Planner, sample_id
from mme5.synth.schema import SYNTH_MODALITIES


def test_93_languages_high_resource_weighted_up():
    assert len(LANGUAGES) == 93
    w = language_weights()
    assert len(w) == 93 and abs(sum(w.values()) - 1) < 1e-9
    assert w["en"] > w["de"] > w["sw"] > w["gd"]  # more data, more weight
    assert max(w, key=w.get) == "en"
    uniform = language_weights(alpha=0.0)
    assert max(uniform.values()) == pytest.approx(min(uniform.values()))


def test_language_overrides_and_errors():
    w = language_weights(overrides={"en": 0.0}, only=["en", "de", "ja"])
    assert set(w) == {"de", "ja"}
    with pytest.raises(ValueError, match=r"unknown language code.*'xx'"):
        language_weights(only=["en", "xx"])


def test_plan_is_deterministic_and_order_free():
    a = Planner(PlanConfig(), seed=7, pool_size=50)
    b = Planner(PlanConfig(), seed=7, pool_size=50)
    forward = a.plans(0, 40)
    backward = [b.plan(i) for i in reversed(range(40))][::-1]
    assert forward == backward
    assert forward[3].id == sample_id(7, 3) == "mme5-synth-s7-000000003"
    other = Planner(PlanConfig(), seed=8, pool_size=50).plans(0, 40)
    assert [p.id for p in other] != [p.id for p in forward]
    assert [(p.task, p.modality, p.lang, p.anchor) for p in other] != [
        (p.task, p.modality, p.lang, p.anchor) for p in forward
    ]


def _check_frequencies(observed: Counter, expected: dict[str, float], n: int) -> None:
    """Every category within 4.5 binomial standard deviations of its expected count."""
    assert set(observed) <= set(expected)
    for key, p in expected.items():
        sd = np.sqrt(n * p * (1 - p))
        assert abs(observed[key] - n * p) <= 4.5 * sd + 1, (key, observed[key], n * p)


def test_plan_statistics_match_configured_ratios():
    n = 6000
    planner = Planner(PlanConfig(), seed=0, pool_size=100)
    plans = planner.plans(0, n)
    tasks = Counter(p.task for p in plans)
    # classification : VQA : retrieval = 1 : 1 : 2
    _check_frequencies(tasks, {"classification": 0.25, "vqa": 0.25, "retrieval": 0.5}, n)
    _check_frequencies(Counter(p.modality for p in plans), {m: 1 / 7 for m in SYNTH_MODALITIES}, n)
    expected_lang = planner.expected()["lang"]
    langs = Counter(p.lang for p in plans)
    for code in ("en", "ru", "de", "ja"):
        _check_frequencies(Counter({code: langs[code]}), {code: expected_lang[code]}, n)
    assert langs["en"] > langs.get("gd", 0)
    anchors = Counter(p.anchor for p in plans)
    assert len(anchors) == 100 and max(anchors.values()) < 3 * n / 100


def test_custom_weights():
    cfg = PlanConfig(
        task_weights={"vqa": 3.0, "retrieval": 1.0},
        modality_weights={"I2T": 1.0, "T2I": 1.0},
        languages=["en", "de"],
    )
    plans = Planner(cfg, seed=1, pool_size=5).plans(0, 4000)
    _check_frequencies(Counter(p.task for p in plans), {"vqa": 0.75, "retrieval": 0.25}, 4000)
    assert {p.modality for p in plans} == {"I2T", "T2I"}
    assert {p.lang for p in plans} == {"en", "de"}


def test_bad_plan_config_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown task.*'qa'"):
        Planner(PlanConfig(task_weights={"qa": 1.0}), 0, 10)
    with pytest.raises(ValueError, match=r"unknown modality.*'T2T'"):
        Planner(PlanConfig(modality_weights={"T2T": 1.0}), 0, 10)
    with pytest.raises(ValueError, match="image pool is empty"):
        Planner(PlanConfig(), 0, 0)
