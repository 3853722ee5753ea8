"""Shard sets: brace-expanded specs, their sizes, and how an epoch's shards are dealt to readers.

A *reader* (or slot) is one DataLoader worker of one rank: ``slot = rank * num_workers + worker``.
In epoch mode each shard of a set goes to exactly one slot per epoch (disjoint, complete coverage);
in resampled mode every slot draws shards with replacement from the whole set.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand

from mme5.data.skips import DataError
from mme5.records import (
    EMPTY_SHARD,
    SHARD_OPEN,
    SHARD_PROBLEMS,
    SIZES_FILE,
    ShardError,
    is_url,
    iter_shard,
    local_name,
    parse_sizes,
    read_sizes,
    write_sizes,
)

log = logging.getLogger("mme5.data")


@dataclass
class ShardSet:
    """One shard set of a mixture.

    Args:
        shards: brace-expanded spec (``data/train-{000000..000099}.tar``), a folder of ``*.tar``
            shards, or any URL / ``pipe:`` command that webdataset accepts.
        weight: mixing weight; each draw picks this set with probability weight / sum(weights).
        name: label used in logs and errors (default: the spec).
    """

    shards: str
    weight: float = 1.0
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.shards


def derive_seed(*parts: object) -> int:
    """A 64-bit seed from any tuple of printable parts (stable across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def is_local(url: str) -> bool:
    """True for a local path: anything the user did not write as a URL (see :func:`mme5.records.is_url`)."""
    return not is_url(url)


def expand_shards(spec: str) -> list[str]:
    """The shard URLs of a spec: a folder (its ``*.tar``), a brace expansion (``{a,b}``, ``{000..009}``),
    local glob patterns (``mmeb/*/*.tar``), several specs joined by ``::``.

    Names found on disk are returned so that no file name reads as a URL (``./pipe:x.tar``): only
    what the user wrote as a URL reaches webdataset's openers. Missing shards are not an error here:
    :func:`resolve` counts them as unopenable (``shard_open``).
    """
    if is_local(spec) and os.path.isdir(spec):
        urls = sorted(local_name(p) for p in Path(spec).glob("*.tar"))
        if not urls:
            raise DataError(f"shard folder '{spec}' holds no *.tar file")
        return urls
    urls = []
    for part in spec.split("::"):
        for u in braceexpand(part):
            if is_local(u) and any(c in u for c in "*?["):
                # an unmatched pattern stays as written, reported as unopenable
                urls += sorted(local_name(p) for p in glob.glob(u)) or [u]
            else:
                urls.append(u)
    if not urls:
        raise DataError(f"shard spec '{spec}' expands to no shard")
    return urls


def count_samples(url: str) -> tuple[int, str | None]:
    """Samples in one shard, reading only tar headers for local files.

    Returns ``(count, problem)``: a damaged shard counts the samples readable before the damage
    (problem ``truncated_tar``), an unreadable one counts 0 (``shard_open``), an empty one 0
    (``empty_shard``). Only complete samples count, exactly those reading yields (see
    :func:`mme5.records.iter_shard`): stray members, duplicate keys, links and samples with an
    oversized member are not samples, and no problem here (reading counts them).
    """
    found: list[str] = []

    def note(reason: str, message: str, n: int = 1) -> None:
        if reason in SHARD_PROBLEMS:
            found.append(reason)
            log.warning("data: counting samples: %s", message)

    n = sum(1 for _ in iter_shard(url, note, contents=False))
    return n, (found[0] if found else None)


def _remote_sizes(folder_url: str) -> dict[str, int]:
    from webdataset.gopen import gopen

    url = folder_url + "/" + SIZES_FILE
    try:
        with gopen(url, "rb") as f:
            data = f.read()
    except Exception:  # no sizes.json there: the shards are counted
        return {}
    try:
        return parse_sizes(data, url)
    except ShardError as exc:
        log.warning("data: %s; counting the shards instead", exc)
        return {}


def _local_sizes(folder: str, warn: bool = True) -> dict[str, int]:
    """``read_sizes``, except that a damaged ``sizes.json`` is one warning and its shards are counted
    (and the file rewritten by :func:`shard_sizes`): it is a cache of what counting gives."""
    try:
        return read_sizes(folder)
    except ShardError as exc:
        if warn:
            log.warning("data: %s; counting the shards instead", exc)
        return {}


def shard_sizes(urls: Sequence[str], write: bool = True) -> tuple[list[int], list[tuple[str, str]]]:
    """Samples per shard, from ``sizes.json`` next to the shards, else counted (and written when local).

    A ``sizes.json`` that is cut short, not JSON or of the wrong types is a cache gone bad, not a
    reason to stop: one warning names it, its shards are counted as if it were absent, and the local
    file is rewritten with the counts.

    ``write`` adds the counted sizes to each local folder's ``sizes.json`` (done by the one process
    that prepares data; other ranks count in memory if the file is still missing). Also returns the
    problems found: ``(reason, url)`` for shards that are missing, unreadable, damaged or empty.
    """
    problems: list[tuple[str, str]] = []
    by_folder: dict[str, dict[str, int]] = {}
    sizes: list[int] = []
    counted: dict[str, dict[str, int]] = {}
    for url in urls:
        folder, name = (
            os.path.split(url) if is_local(url) else url.rsplit("/", 1) if "/" in url else ("", url)
        )
        if folder not in by_folder:
            by_folder[folder] = (
                _local_sizes(folder or ".")
                if is_local(url)
                else (_remote_sizes(folder) if folder and not url.startswith("pipe:") else {})
            )
        known = by_folder[folder]
        if is_local(url) and not os.path.isfile(url):
            sizes.append(0)
            problems.append((SHARD_OPEN, url))
            continue
        if name in known:
            sizes.append(known[name])
            if known[name] == 0:
                problems.append((EMPTY_SHARD, url))
            continue
        n, problem = count_samples(url)
        if problem:
            problems.append((problem, url))
        sizes.append(n)
        known[name] = n
        if is_local(url):
            counted.setdefault(folder or ".", {})[name] = n
    if write:
        for folder, new in counted.items():
            try:
                write_sizes(folder, {**_local_sizes(folder, warn=False), **new})
                log.info("data: wrote %s with %d counted shard(s) in '%s'", SIZES_FILE, len(new), folder)
            except OSError as exc:
                log.warning(
                    "data: cannot write %s in '%s' (%s); counts kept in memory", SIZES_FILE, folder, exc
                )
    return sizes, problems


@dataclass
class ResolvedSet:
    """A shard set with its URLs and per-shard sample counts."""

    label: str
    urls: list[str]
    sizes: list[int]
    weight: float
    problems: list[tuple[str, str]]

    @property
    def samples(self) -> int:
        return sum(self.sizes)

    @property
    def readable(self) -> list[str]:
        """The shards that hold samples (empty and unopenable ones are left out, and counted)."""
        return [u for u, n in zip(self.urls, self.sizes, strict=False) if n > 0]


def resolve(sets: Sequence[ShardSet], write_sizes_files: bool = True) -> list[ResolvedSet]:
    """Expand and size every set; checks weights and that something is there to read."""
    if not sets:
        raise DataError("no training shard set given (set `train`, or `demo` for the demo corpus)")
    out = []
    for s in sets:
        if not s.weight > 0:
            raise DataError(f"shard set '{s.label}': weight must be > 0, got {s.weight}")
        urls = expand_shards(s.shards)
        sizes, problems = shard_sizes(urls, write=write_sizes_files)
        out.append(ResolvedSet(s.label, urls, sizes, float(s.weight), problems))
    for r in out:
        if r.urls and all(is_local(u) and not os.path.exists(u) for u in r.urls):
            raise DataError(
                f"shard set '{r.label}': none of its {len(r.urls)} shard file(s) exists "
                f"({_short_list(r.urls)}); expected .tar shards at that path"
            )
    empty = [r for r in out if r.samples == 0]
    if empty:
        names = "; ".join(f"'{r.label}' ({len(r.urls)} shards: {_short_list(r.urls)})" for r in empty)
        raise DataError(f"no readable sample in shard set {names}: every shard is empty or unreadable")
    return out


def _short_list(urls: Sequence[str], n: int = 3) -> str:
    return ", ".join(urls[:n]) + (f", ... (+{len(urls) - n})" if len(urls) > n else "")


def fingerprint(sets: Sequence[ResolvedSet]) -> str:
    """A short hash of the shard lists, sizes and weights (resume checks the data did not change)."""
    h = hashlib.blake2b(digest_size=8)
    for r in sets:
        h.update(repr((r.urls, r.sizes, r.weight)).encode())
    return h.hexdigest()
