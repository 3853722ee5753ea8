"""Counting what the data path skips, rate-limited warnings about it, and the all-bad-data error.

Nothing is dropped silently: every skipped sample (or unreadable shard) is counted under a short
reason name (the :class:`mme5.records.RecordError` reason for a sample, or one of the shard-level
reasons :func:`mme5.records.iter_shard` reports: ``shard_open``, ``truncated_tar``, ``empty_shard``,
``stray_member``, ``duplicate_key``, ``link_member``, ``member_too_large``), or what the collator
cuts (``negatives_cut``, reported with :func:`report`); the first occurrence of each reason is logged
with its message, later ones at most once per ``interval_s`` per reason, and the totals travel with
the batches to the main process.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping

from mme5.errors import Mme5Error

log = logging.getLogger("mme5.data")


class DataError(Mme5Error, RuntimeError):
    """The data cannot feed training at all (nothing readable, impossible split, resume mismatch)."""


class SkipCounter:
    """Counts skips by reason and logs them, rate limited per reason.

    ``take_delta()`` returns (and resets) the counts since the previous call: a worker attaches it to
    each batch so that the main process can sum the counts of all workers.
    """

    def __init__(self, where: str = "", interval_s: float = 30.0):
        self.where = where
        self.interval_s = interval_s
        self.total: Counter[str] = Counter()
        self._delta: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def add(self, reason: str, message: str, n: int = 1) -> None:
        """Count ``n`` skips of ``reason``; log the message unless this reason logged recently."""
        self.total[reason] += n
        self._delta[reason] += n
        now = time.monotonic()
        last = self._last_log.get(reason)
        if last is None or now - last >= self.interval_s:
            extra = self._unlogged.pop(reason, 0)
            suffix = f" (+{extra} more '{reason}' since the last warning)" if extra else ""
            log.warning(
                "data%s: skipped (%s) %s%s", f" [{self.where}]" if self.where else "", reason, message, suffix
            )
            self._last_log[reason] = now
        else:
            self._unlogged[reason] += n

    def take_delta(self) -> dict[str, int]:
        """The counts since the previous call, including what :func:`report` counted in this process."""
        if self is not _ambient:
            for reason, n in _ambient.take_delta().items():
                self.total[reason] += n
                self._delta[reason] += n
        out = dict(self._delta)
        self._delta.clear()
        return out


_ambient = SkipCounter(where="collate")


def report(reason: str, message: str, n: int = 1) -> None:
    """Count ``n`` of ``reason`` found outside the reading loop (the collator, in the same worker
    process); the next :meth:`SkipCounter.take_delta` in this process carries the counts with its batch."""
    _ambient.add(reason, message, n)


def format_counts(counts: Mapping[str, int]) -> str:
    """``"bad_json: 3, image_decode: 1"`` (sorted by count), or ``"none"``."""
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k}: {v}" for k, v in items) or "none"
