"""Quality gates: what a parsed generation must pass to become a training sample.

Each gate returns a short reason name when it rejects (the stats report counts rejects by reason):
``low_score``, ``too_short``, ``too_long``, ``wrong_language``, ``degenerate`` (positive equals hard
negative or query), ``duplicate`` (near-duplicate of an accepted sample, MinHash over character
shingles). Schema and JSON failures are counted upstream (``invalid_json``, ``truncated``, ``schema``).
"""

from __future__ import annotations

import hashlib
import importlib
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mme5.errors import ConfigError

from .languages import scripts_of
from .schema import SCORE_KEYS

TEXT_FIELDS = ("query", "positive", "hard_negative")


@dataclass
class GateConfig:
    """Thresholds of the quality gates."""

    min_score: float = 6.0
    """Lowest accepted mean of the draft's self-evaluation scores (1-10); 0 turns the gate off."""
    min_chars: int = 3
    """Shortest accepted text (query / positive / hard negative / instruction), after stripping spaces."""
    max_chars: int = 1000
    """Longest accepted text."""
    language_check: bool = True
    """Check that the texts are in the drawn language's script (and the instruction in Latin script)."""
    min_script_fraction: float = 0.6
    """Share of a text's letters that must belong to the expected script(s)."""
    language_detector: str | None = None
    """Optional ``"module:function"`` mapping a text to an ISO 639-1 code; a mismatch rejects the sample."""
    dedup_threshold: float = 0.85
    """Estimated Jaccard similarity (character 5-gram shingles) from which a sample is a near-duplicate;
    1 turns it off."""


def letter_scripts(text: str) -> list[str]:
    """The Unicode script (first word of the character name) of every letter in ``text``."""
    out = []
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        first = name.split(" ", 1)[0] if name else "UNKNOWN"
        out.append("CJK" if first in ("CJK",) else first)
    return out


def script_fraction(text: str, scripts: tuple[str, ...]) -> float:
    """Share of the letters of ``text`` that belong to ``scripts`` (1.0 for a text without letters)."""
    letters = letter_scripts(text)
    if not letters:
        return 1.0
    return sum(s in scripts for s in letters) / len(letters)


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class NearDuplicateIndex:
    """MinHash + LSH over character shingles; deterministic, so a resumed run rebuilds the same index."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 64, bands: int = 16, shingle: int = 5):
        if num_perm % bands:
            raise ConfigError("num_perm must be a multiple of bands")
        self.threshold, self.num_perm, self.bands, self.shingle = threshold, num_perm, bands, shingle
        rng = np.random.default_rng(20250213)
        self._a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self._signatures: list[np.ndarray] = []

    def signature(self, text: str) -> np.ndarray:
        t = _normalise(text)
        grams = {t[i : i + self.shingle] for i in range(max(1, len(t) - self.shingle + 1))}
        base = np.array(
            [
                int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little")
                for g in sorted(grams)
            ],
            dtype=np.uint64,
        )
        with np.errstate(over="ignore"):
            mixed = self._a[:, None] * base[None, :] + self._b[:, None]
        return (mixed >> np.uint64(32)).min(axis=1)

    def find(self, signature: np.ndarray) -> int | None:
        """Index of an accepted entry whose estimated Jaccard similarity reaches the threshold."""
        rows = self.num_perm // self.bands
        seen: set[int] = set()
        for band, buckets in enumerate(self._buckets):
            key = signature[band * rows : (band + 1) * rows].tobytes()
            for j in buckets.get(key, ()):
                if j in seen:
                    continue
                seen.add(j)
                if float(np.mean(self._signatures[j] == signature)) >= self.threshold:
                    return j
        return None

    def add(self, signature: np.ndarray) -> int:
        j = len(self._signatures)
        self._signatures.append(signature)
        rows = self.num_perm // self.bands
        for band, buckets in enumerate(self._buckets):
            buckets.setdefault(signature[band * rows : (band + 1) * rows].tobytes(), []).append(j)
        return j

    def __len__(self) -> int:
        return len(self._signatures)


def dedup_text(sample: dict[str, Any], image_keys: list[str]) -> str:
    """What near-duplicate detection compares: the sample's texts plus the keys of its images."""
    parts = [sample.get(f) or "" for f in ("instruction", *TEXT_FIELDS)]
    return " | ".join(parts + image_keys)


class QualityGates:
    """Applies the gates in order; :meth:`check` gives the first failing reason, or ``None``."""

    def __init__(self, config: GateConfig):
        self.config = config
        self.dedup = NearDuplicateIndex(config.dedup_threshold) if config.dedup_threshold < 1 else None
        self._detector: Callable[[str], str] | None = None
        if config.language_detector:
            module, _, attr = config.language_detector.partition(":")
            try:
                self._detector = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError, ValueError) as exc:
                raise ConfigError(
                    f"language_detector '{config.language_detector}': cannot import it "
                    f"(expected 'module:function'): {exc}"
                ) from None

    def check(self, generation: dict[str, Any], lang: str) -> str | None:
        """Reason to reject a schema-valid generation (dedup is separate: :meth:`is_duplicate`)."""
        c = self.config
        scores = generation["self_evaluation"]
        if c.min_score > 0 and float(np.mean([scores[k] for k in SCORE_KEYS])) < c.min_score:
            return "low_score"
        sample = generation["revised_sample"]
        texts = {k: v.strip() for k, v in sample.items()}
        for v in texts.values():
            if len(v) < c.min_chars:
                return "too_short"
            if len(v) > c.max_chars:
                return "too_long"
        if c.language_check:
            if script_fraction(texts["instruction"], ("LATIN",)) < c.min_script_fraction:
                return "wrong_language"
            expected = scripts_of(lang)
            for k in TEXT_FIELDS:
                if k in texts and script_fraction(texts[k], expected) < c.min_script_fraction:
                    return "wrong_language"
        if self._detector is not None:
            for k in TEXT_FIELDS:
                if k in texts and self._detector(texts[k]) != lang:
                    return "wrong_language"
        if "positive" in texts:
            pos = _normalise(texts["positive"])
            if pos == _normalise(texts["hard_negative"]) or (
                "query" in texts and pos == _normalise(texts["query"])
            ):
                return "degenerate"
        return None

    def is_duplicate(self, text: str) -> bool:
        """True if ``text`` near-duplicates an accepted sample; otherwise records it as accepted."""
        if self.dedup is None:
            return False
        sig = self.dedup.signature(text)
        if self.dedup.find(sig) is not None:
            return True
        self.dedup.add(sig)
        return False
