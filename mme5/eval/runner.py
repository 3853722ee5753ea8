"""Evaluate an embedding function on MMEB / XTD folders.

The embedding contract: ``embed(sides: list[Side]) -> Tensor[n, D]``, one row per side. The runner
encodes each distinct (text, image path) item once (or takes it from the embedding cache), splits
the items to encode over ranks and all-gathers their embeddings, scores every row against its own
candidates in chunks, and reduces the per-dataset metrics across ranks (torchmetrics sync).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from mme5.distributed import DistContext
from mme5.errors import ConfigError, Mme5Error
from mme5.eval.cache import EmbeddingCache, resolve_cache_dir
from mme5.eval.datasets import (
    XTD_LANGUAGES,
    Benchmark,
    load_benchmark,
    resolve_mmeb,
    resolve_xtd,
)
from mme5.eval.items import Item, check_images, image_signature, load_side
from mme5.eval.metrics import RankingMetrics, TieRule, resolve_tie_rule
from mme5.eval.scoring import SCORE_BUDGET, canonical_ids, rows_for_rank, score_rows
from mme5.mmeb import META_TASKS
from mme5.records import Side

log = logging.getLogger("mme5.eval")

EmbedFn = Callable[[list[Side]], Tensor]
KS = (1, 5, 10)
NDCG_K = 10


class EmbeddingError(Mme5Error, ValueError):
    """The embedding function returned something other than one finite vector per side."""


@dataclass
class EncodeStats:
    """What one evaluation cost: distinct items, how many were encoded, how many came from the cache."""

    distinct_items: int = 0
    encoded: int = 0
    from_cache: int = 0
    encoded_here: int = 0
    seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        return self.encoded_here / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class DatasetScore:
    """One dataset's scores (percent) and size.

    ``ties`` is the share (percent) of rows in which another candidate ties the truth exactly: the rows
    whose scores depend on ``tie_rule`` (the rule they were ranked by; see :mod:`mme5.eval.metrics`).
    """

    name: str
    meta_task: str
    ood: bool
    rows: int
    total_rows: int
    candidates: int
    metrics: dict[str, float]
    chance_p1: float | None = None
    ties: float = 0.0
    tie_rule: str = "truth_wins"

    @property
    def precision_at_1(self) -> float:
        return self.metrics["precision@1"]


@dataclass
class EvalResult:
    """The outcome of one benchmark evaluation; ``summary`` holds the headline means (percent)."""

    benchmark: str
    datasets: list[DatasetScore]
    missing: list[str]
    summary: dict[str, float]
    rows: int
    rows_x_candidates: int
    encode: EncodeStats
    seconds: float
    step: int | None = None
    extra: dict = field(default_factory=dict)
    tie_rule: str = "truth_wins"

    def score(self, name: str) -> DatasetScore:
        for d in self.datasets:
            if d.name == name:
                return d
        raise KeyError(name)

    def to_dict(self) -> dict:
        """A JSON-ready dict (per-dataset scores, summary, cost, missing datasets)."""
        out = asdict(self)
        out["encode"]["items_per_second"] = self.encode.items_per_second
        return out


def _validate(out: object, n: int) -> Tensor:
    if not isinstance(out, Tensor):
        raise EmbeddingError(
            f"the embedding function returned {type(out).__name__}, expected a Tensor [n, D]"
        )
    if out.ndim != 2 or out.shape[0] != n:
        raise EmbeddingError(
            f"the embedding function returned shape {tuple(out.shape)} for {n} sides, expected [{n}, D]"
        )
    out = out.detach().float()
    if not torch.isfinite(out).all():
        raise EmbeddingError("the embedding function returned non-finite values")
    return F.normalize(out, dim=-1)


def encode_local(
    embed: EmbedFn,
    items: Sequence[Item],
    image_root: str | os.PathLike | None,
    batch_size: int,
    loader_threads: int = 4,
) -> Tensor | None:
    """Embed ``items`` in batches; images of the next batch decode in threads while one encodes."""
    if not items:
        return None
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    outs: list[Tensor] = []
    with ThreadPoolExecutor(max_workers=max(1, loader_threads)) as pool:

        def submit(batch: Sequence[Item]) -> list:
            return [pool.submit(load_side, it, image_root) for it in batch]

        pending = submit(batches[0])
        for b in range(len(batches)):
            sides = [f.result() for f in pending]
            if b + 1 < len(batches):
                pending = submit(batches[b + 1])
            outs.append(_validate(embed(sides), len(sides)))
    return torch.cat(outs)


def _encode_order(items: Sequence[Item], todo: list[int]) -> list[int]:
    # text-only items together, then image items, each by text length: less padding per batch
    return sorted(todo, key=lambda i: (bool(items[i].image_path), len(items[i].text), i))


def encode_items(
    embed: EmbedFn,
    items: Sequence[Item],
    image_root: str | os.PathLike | None,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    fingerprint: str | None = None,
    ctx: DistContext | None = None,
) -> tuple[Tensor, EncodeStats]:
    """Embeddings [len(items), D] (float32, L2-normalised) of every item, on every rank.

    Items found in ``cache`` under ``fingerprint`` are not encoded; the others are sorted (text-only
    first, then by text length), dealt over ranks (rank r takes every world-th one), encoded,
    all-gathered, and stored in the cache by rank 0.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    ctx = ctx or DistContext.current()
    n = len(items)
    stats = EncodeStats(distinct_items=n)
    found = torch.zeros(n, dtype=torch.bool)
    cached: Tensor | None = None
    keys: list[bytes] = []
    use_cache = cache is not None and fingerprint is not None
    if use_cache:
        if ctx.rank == 0:
            keys = [_cache_key(it, image_root) for it in items]
            found, cached = cache.lookup(fingerprint, keys)  # type: ignore[union-attr]
        found = ctx.broadcast_object(found)  # type: ignore[assignment]
        width = ctx.broadcast_object(cached.shape[1] if cached is not None else 0)
        if int(found.sum()) > 0:
            cached = ctx.broadcast_tensor(cached, (int(found.sum()), width), torch.float32)  # type: ignore
    todo = _encode_order(items, (~found).nonzero().flatten().tolist())
    # rank r encodes todo[r::world]: balanced, and each rank's share stays sorted
    shares = [todo[r :: ctx.world_size] for r in range(ctx.world_size)]
    counts = [len(share) for share in shares]
    mine = shares[ctx.rank]
    # every rank runs the same number of forwards (a sharded model gathers weights in each one): a
    # shorter share is topped up with copies of the first item, whose embeddings are dropped
    pad = max(counts) - len(mine)
    t0 = time.perf_counter()
    local = encode_local(embed, [items[i] for i in mine + todo[:1] * pad], image_root, batch_size)
    if pad and local is not None:
        local = local[: len(mine)] if mine else None
    stats.seconds = time.perf_counter() - t0
    stats.encoded_here = len(mine)
    width = ctx.max_int(local.shape[1] if local is not None else 0)
    if width == 0 and cached is not None:
        width = cached.shape[1]
    if cached is not None and int(found.sum()) > 0 and cached.shape[1] != width:
        raise EmbeddingError(
            f"the embedding cache under fingerprint {fingerprint} holds vectors of width {cached.shape[1]}, "
            f"the model returned {width}; remove that cache folder"
        )
    device = local.device if local is not None else (cached.device if cached is not None else ctx.device)
    if ctx.distributed:
        if local is None:
            local = torch.zeros(0, width, device=ctx.device)
        new = ctx.all_gather_rows(local, counts) if todo else torch.zeros(0, width, device=ctx.device)
        device = new.device
    else:
        new = local if local is not None else torch.zeros(0, width, device=device)
    emb = torch.empty(n, width, dtype=torch.float32, device=device)
    gathered_order = [i for share in shares for i in share]  # all_gather_rows concatenates in rank order
    if todo:
        emb[torch.tensor(gathered_order, dtype=torch.long, device=device)] = new.to(device)
    if cached is not None and int(found.sum()) > 0:
        emb[found.to(device)] = cached.to(device)
    stats.encoded, stats.from_cache = len(todo), int(found.sum())
    if use_cache and ctx.rank == 0 and todo:
        cache.store(fingerprint, [keys[i] for i in gathered_order], new)  # type: ignore[union-attr, arg-type]
    return emb, stats


def _cache_key(item: Item, image_root: str | os.PathLike | None) -> bytes:
    """Item content key plus the image file's size and mtime, so a replaced image is re-encoded."""
    sig = image_signature(image_root, item)
    if not sig:
        return item.key()
    return hashlib.blake2b(item.key() + sig, digest_size=16).digest()


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def summarize_mmeb(scores: list[DatasetScore]) -> dict[str, float]:
    """Meta-task means, IND / OOD means and the overall mean of Precision@1 (percent)."""
    out: dict[str, float] = {}
    tasks = list(META_TASKS) + sorted({s.meta_task for s in scores} - set(META_TASKS))
    for task in tasks:
        group = [s.precision_at_1 for s in scores if s.meta_task == task]
        if group:
            out[task] = _mean(group)
    ind = [s.precision_at_1 for s in scores if not s.ood]
    ood = [s.precision_at_1 for s in scores if s.ood]
    if ind:
        out["IND"] = _mean(ind)
    if ood:
        out["OOD"] = _mean(ood)
    out["Overall"] = _mean(s.precision_at_1 for s in scores)
    return out


def summarize_xtd(scores: list[DatasetScore]) -> dict[str, float]:
    """Per-language Recall@1/5/10 and the mean Recall@10 over languages (percent)."""
    out: dict[str, float] = {}
    for s in scores:
        for k in KS:
            out[f"{s.name}/R@{k}"] = s.metrics[f"hit@{k}"]
    out["mean_R@10"] = _mean(s.metrics["hit@10"] for s in scores)
    return out


def run_benchmark(
    benchmark: str,
    embed: EmbedFn,
    bench: Benchmark,
    image_root: str | os.PathLike | None,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    fingerprint: str | None = None,
    ctx: DistContext | None = None,
    score_budget: int = SCORE_BUDGET,
    step: int | None = None,
    tie_rule: TieRule = "official",
) -> EvalResult:
    """Encode the benchmark's distinct items once, score every dataset, summarise.

    ``tie_rule`` ranks exact ties with the truth; ``official`` (the default) is each benchmark's own
    rule (MMEB: the truth wins, XTD: it loses; see :mod:`mme5.eval.metrics`). Each dataset reports the
    share of rows with such a tie beside its scores (``ties``).
    """
    ctx = ctx or DistContext.current()
    rule = resolve_tie_rule(benchmark, tie_rule)
    t0 = time.perf_counter()
    check_images(bench.items.items, image_root, what=f"{benchmark} evaluation")
    emb, stats = encode_items(embed, bench.items.items, image_root, batch_size, cache, fingerprint, ctx)
    canon = canonical_ids(emb)
    scores: list[DatasetScore] = []
    for rset in bench.sets:
        metric = RankingMetrics(ks=KS, ndcg_k=NDCG_K).to(emb.device)
        metric.update(torch.zeros(0))
        score_rows(
            rset,
            emb,
            metric,
            rows_for_rank(len(rset.queries), ctx.rank, ctx.world_size),
            score_budget,
            canon,
            tie_rule=rule,
        )
        values = {k: float(v) for k, v in metric.compute().items()}
        rows = int(values.pop("rows"))
        info = rset.meta
        scores.append(
            DatasetScore(
                name=rset.name,
                meta_task=info.meta_task if info else "",
                ood=bool(info and info.ood),
                rows=rows,
                total_rows=rset.total_rows,
                candidates=rset.num_pairs,
                metrics={k: 100.0 * v for k, v in values.items()},
                chance_p1=None if info is None or info.chance_p1 is None else 100.0 * info.chance_p1,
                ties=100.0 * values["ties"],
                tie_rule=rule,
            )
        )
        log.info(
            "%s %s: P@1 %.2f over %d rows (%.1f %% tied, %s)",
            benchmark,
            rset.name,
            scores[-1].precision_at_1,
            rows,
            scores[-1].ties,
            rule,
        )
    summary = summarize_mmeb(scores) if benchmark == "mmeb" else summarize_xtd(scores)
    if bench.missing:
        log.warning(
            "%s: %d requested dataset(s) are not in the folder: %s",
            benchmark,
            len(bench.missing),
            ", ".join(bench.missing),
        )
    return EvalResult(
        benchmark=benchmark,
        datasets=scores,
        missing=list(bench.missing),
        summary=summary,
        rows=sum(len(s.queries) for s in bench.sets),
        rows_x_candidates=sum(s.num_pairs for s in bench.sets),
        encode=stats,
        seconds=time.perf_counter() - t0,
        step=step,
        tie_rule=rule,
    )


def load_mmeb(
    mmeb_dir: str | os.PathLike, datasets: Sequence[str] | None = None, max_rows: int | None = None
) -> Benchmark:
    """Read the requested MMEB datasets (all 36 + ``datasets.json`` extras by default)."""
    found, missing = resolve_mmeb(mmeb_dir, datasets)
    if not found:
        raise ConfigError(
            f"none of the requested MMEB datasets is in '{mmeb_dir}' "
            f"(looked for {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})"
        )
    return load_benchmark(found, missing, max_rows)


def load_xtd(
    xtd_dir: str | os.PathLike, languages: Sequence[str] = XTD_LANGUAGES, max_rows: int | None = None
) -> Benchmark:
    """Read the requested XTD languages."""
    found, missing = resolve_xtd(xtd_dir, languages)
    if not found:
        raise ConfigError(f"none of the XTD languages {', '.join(languages)} is in '{xtd_dir}'")
    return load_benchmark(found, missing, max_rows)


def evaluate_mmeb(
    embed: EmbedFn,
    mmeb_dir: str | os.PathLike,
    image_root: str | os.PathLike | None,
    datasets: Sequence[str] | None = None,
    max_rows: int | None = None,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    fingerprint: str | None = None,
    ctx: DistContext | None = None,
    tie_rule: TieRule = "official",
) -> EvalResult:
    """MMEB: per-dataset Precision@1 (+ hit@k, MRR, nDCG@10), meta-task / IND / OOD / overall means.

    ``image_root`` is the folder MMEB's image paths are relative to (the official ``eval_images/``).
    ``cache_dir`` (a folder, or ``"auto"`` for the user cache directory) with a ``fingerprint`` of the
    model enables the on-disk embedding cache. ``tie_rule``: see :func:`run_benchmark`.
    """
    bench = load_mmeb(mmeb_dir, datasets, max_rows)
    folder = resolve_cache_dir(cache_dir)
    cache = EmbeddingCache(folder) if folder is not None else None
    return run_benchmark(
        "mmeb", embed, bench, image_root, batch_size, cache, fingerprint, ctx, tie_rule=tie_rule
    )


def evaluate_xtd(
    embed: EmbedFn,
    xtd_dir: str | os.PathLike,
    image_root: str | os.PathLike | None,
    languages: Sequence[str] = XTD_LANGUAGES,
    max_rows: int | None = None,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    fingerprint: str | None = None,
    ctx: DistContext | None = None,
    tie_rule: TieRule = "official",
) -> EvalResult:
    """XTD text -> image retrieval: per-language Recall@1/5/10 and their mean Recall@10.

    ``image_root`` is the folder XTD's image paths are relative to (the official ``XTD10_dataset/``).
    ``cache_dir``, ``fingerprint``: as for :func:`evaluate_mmeb`; ``tie_rule``: see
    :func:`run_benchmark` (official: argsort-based, a tie ranks above the truth).
    """
    bench = load_xtd(xtd_dir, languages, max_rows)
    folder = resolve_cache_dir(cache_dir)
    cache = EmbeddingCache(folder) if folder is not None else None
    return run_benchmark(
        "xtd", embed, bench, image_root, batch_size, cache, fingerprint, ctx, tie_rule=tie_rule
    )


def covers(result: EvalResult | None, names: Sequence[str]) -> bool:
    """Whether an MMEB run scored every one of ``names`` under the official MMEB tie rule (truth wins),
    so that MMEB-V2's image tasks can take its scores instead of encoding them again."""
    if result is None or not names or result.tie_rule != "truth_wins":
        return False
    return set(names) <= {d.name for d in result.datasets}
