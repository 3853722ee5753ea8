"""MMEB-V2 evaluation: image tasks as VLM2Vec's V2 evaluation reads them (:mod:`mme5.eval.v2.images`,
the rows of ``<root>/image-query``) or, when the root holds no ``image-query/``, through the MMEB-V1
reader (``image_dir``); video and visual-document tasks through :mod:`mme5.eval.v2.readers`; each
distinct item encoded once (cache, ranks), the summary the official report prints.

The summary (``experiments/report_score_v2.py`` of TIGER-AI-Lab/VLM2Vec at 6e1e1d4): per kind, the
mean of the kind's main metric over the tasks that have a score, with the number of tasks it is from
(lines 201-205), and the tasks without a score listed (lines 207-212). mme5 adds the per-meta-task
means and the overall mean over every scored task (the MMEB-V2 leaderboard's "Overall").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from mme5.distributed import DistContext
from mme5.errors import ConfigError
from mme5.eval.cache import EmbeddingCache, resolve_cache_dir
from mme5.eval.datasets import Benchmark, read_extra_table, resolve_mmeb
from mme5.eval.items import ItemTable, check_images
from mme5.eval.runner import EmbedFn, EncodeStats, EvalResult, encode_items, load_mmeb, run_benchmark
from mme5.eval.scoring import SCORE_BUDGET, canonical_ids, rows_for_rank
from mme5.eval.v2.frames import pixel_key
from mme5.eval.v2.images import has_image_query, load_v2_images, v2_image_root
from mme5.eval.v2.metrics import HIT_KS, NDCG_K, V2Metrics, rank_rows, row_scores
from mme5.eval.v2.readers import V2Set, read_video_task, read_visdoc_task, task_present
from mme5.eval.v2.tasks import KIND_METRIC, KINDS, V2_META_TASKS, V2_TASKS, V2Task, tasks_of
from mme5.records import Side

log = logging.getLogger("mme5.eval")
#: Said once per evaluation whose video tasks are given to the encoder as tiled frames.
VIDEO_AS_FRAMES = "mmeb_v2: frame_input 'tiled': each video's 8 sampled frames are tiled into one image"
FrameInput = Literal["frames", "tiled"]


def takes_video(model: object) -> bool:
    """Whether ``model`` (an :class:`~mme5.model.encoder.Encoder`, or a module or loaded model holding
    one as ``encoder``) gives a frame list to its backbone's video input
    (:attr:`mme5.backbones.BackboneAdapter.frame_input` ``"video"``)."""
    encoder = model if hasattr(model, "adapter") else getattr(model, "encoder", None)
    return getattr(getattr(encoder, "adapter", None), "frame_input", None) == "video"


def frames_embed(embed: EmbedFn, tiles: dict[bytes, list[str]]) -> EmbedFn:
    """``embed`` with each tiled video image replaced by the list of its sampled frames (read as bytes,
    decoded by the adapter with the training decoder's checks)."""

    def wrapped(sides: list[Side]) -> torch.Tensor:
        out = []
        for side in sides:
            files = tiles.get(pixel_key(side.image)) if side.image is not None else None
            if files:
                side = Side.from_frames([Path(f).read_bytes() for f in files], text=side.text)
            out.append(side)
        return embed(out)

    return wrapped


@dataclass
class V2TaskScore:
    """One task's scores (percent): ``metrics[main]`` is the official main metric of its kind;
    ``candidates``: the video / document task's candidate pool, an image task's candidates per row."""

    name: str
    kind: str
    meta_task: str
    eval_type: str
    main: str
    rows: int
    total_rows: int
    skipped: int
    candidates: int
    metrics: dict[str, float]

    @property
    def score(self) -> float:
        return self.metrics[self.main]


@dataclass
class V2Result:
    """An MMEB-V2 evaluation: per-task scores, the summary, what was asked for but absent."""

    tasks: list[V2TaskScore]
    summary: dict[str, float]
    counts: dict[str, int]
    missing: list[str]
    missing_frames: list[str]
    encode: EncodeStats = field(default_factory=EncodeStats)
    seconds: float = 0.0
    step: int | None = None
    frame_input: str = "frames"
    video_input: bool = False
    """With ``frame_input`` ``frames``: the frame lists went through the backbone's video input."""

    benchmark = "mmeb_v2"

    def score(self, name: str) -> V2TaskScore:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def resolve_v2_tasks(names: Sequence[str] | None = None, kinds: Sequence[str] | None = None) -> list[V2Task]:
    """The tasks asked for (default: all 78, or those of ``kinds``), in report order."""
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ConfigError(f"MMEB-V2 kind '{bad[0]}' is not one of {', '.join(KINDS)}")
    if names is None:
        return [t for t in V2_TASKS.values() if kinds is None or t.kind in kinds]
    unknown = [n for n in names if n not in V2_TASKS]
    if unknown:
        raise ConfigError(f"'{unknown[0]}' is not one of the 78 MMEB-V2 tasks (see mme5.eval.v2.V2_TASKS)")
    return [V2_TASKS[n] for n in names if kinds is None or V2_TASKS[n].kind in kinds]


@dataclass
class V2Benchmark:
    """The video and visual-document tasks read into one item table, and the image tasks: read from the
    V2 root's ``image-query/`` (``image_bench``, images under ``v2_image_root``) or, without it, to be
    read from the MMEB-V1 folder ``image_dir``."""

    sets: list[V2Set]
    items: ItemTable
    missing: list[str]
    missing_frames: list[str]
    image_tasks: list[str]
    image_dir: str | None
    image_bench: Benchmark | None = None
    v2_image_root: str | None = None

    @property
    def image_source(self) -> str:
        """Where the image tasks come from: ``image-query`` (V2 layout), ``mmeb-v1`` or ``none``."""
        if self.image_bench is not None:
            return "image-query"
        return "mmeb-v1" if self.image_dir else "none"


def load_mmeb_v2(
    root: str | os.PathLike | None,
    tasks: Sequence[V2Task],
    work_dir: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    max_rows: int | None = None,
) -> V2Benchmark:
    """Read the tasks present; those asked for but absent are listed in ``missing``, never dropped.

    Image tasks: from ``<root>/image-query`` when the root holds it (VLM2Vec's V2 rows, read by
    :func:`mme5.eval.v2.images.load_v2_images`; ``image_dir`` is then not read), else from
    ``image_dir``, the MMEB-eval layout read by :mod:`mme5.eval.datasets`.
    """
    items = ItemTable()
    sets: list[V2Set] = []
    missing: list[str] = []
    frames: list[str] = []
    image_names = [t.name for t in tasks if t.kind == "image"]
    image_found: list[str] = []
    image_bench: Benchmark | None = None
    image_root: str | None = None
    if image_names:
        if has_image_query(root):
            assert root is not None
            image_bench = load_v2_images(root, image_names, max_rows)
            image_found = [s.name for s in image_bench.sets]
            image_root = str(v2_image_root(root))
            missing += image_bench.missing
        elif image_dir is None:
            missing += image_names
        else:
            found, absent = resolve_mmeb(image_dir, image_names + _custom_image_tasks(image_dir, image_names))
            image_found = [f.name for f in found]
            missing += absent
    for task in tasks:
        if task.kind == "image":
            continue
        if root is None or not task_present(root, task):
            missing.append(task.name)
            continue
        if task.kind == "video":
            s = read_video_task(root, task, items, work_dir, max_rows)
        else:
            s = read_visdoc_task(root, task, items, max_rows)
        frames += s.missing_frames
        sets.append(s)
    order = {t.name: i for i, t in enumerate(tasks)}
    missing.sort(key=lambda n: order.get(n, len(order)))
    return V2Benchmark(
        sets,
        items,
        missing,
        frames,
        image_found,
        str(image_dir) if image_dir else None,
        image_bench,
        image_root,
    )


def _custom_image_tasks(image_dir: str | os.PathLike, asked: list[str]) -> list[str]:
    """The custom datasets of an MMEB folder's ``datasets.json`` (the demo's, a user's own), scored as
    image tasks beside the 36 when all 36 are asked for, as the MMEB-V1 evaluation scores them."""
    if set(asked) != {t.name for t in tasks_of("image")}:
        return []
    return [n for n in read_extra_table(Path(image_dir)) if n not in V2_TASKS]


def _score_set(s: V2Set, emb: torch.Tensor, canon: torch.Tensor, ctx: DistContext, budget: int) -> dict:
    metric = V2Metrics().to(emb.device)
    metric.update([])  # a rank without rows still takes part in the sync
    depth = max(NDCG_K, *HIT_KS)
    pool = torch.tensor(s.pool, dtype=torch.long, device=emb.device)
    # first pool position with a bit-identical embedding, so that identical embeddings tie exactly
    canon_pool = canon.to(emb.device)[pool].tolist()
    seen: dict[int, int] = {}
    first = torch.tensor([seen.setdefault(c, j) for j, c in enumerate(canon_pool)], device=emb.device)
    rows = rows_for_rank(len(s.queries), ctx.rank, ctx.world_size)
    # a chunk's score matrix (global: rows x pool) or gathered candidates (local: rows x K x D) stays
    # within the budget
    dim = emb.shape[1]
    width = len(s.pool) if s.local is None else max(len(c) for c in s.local) * dim
    chunk = max(1, budget // max(1, width))
    pool_emb = emb[pool] if s.local is None else None
    for start in range(rows.start, rows.stop, chunk):
        rr = range(start, min(start + chunk, rows.stop))
        q = emb[torch.tensor([s.queries[r] for r in rr], dtype=torch.long, device=emb.device)]
        if s.local is None:
            top = rank_rows(q, pool_emb, None, first, depth).tolist()  # type: ignore[arg-type]
            lists = [[j for j in t] for t in top]
        else:
            k = max(len(s.local[r]) for r in rr)
            idx = torch.zeros(len(rr), k, dtype=torch.long, device=emb.device)
            valid = torch.zeros(len(rr), k, dtype=torch.bool, device=emb.device)
            for i, r in enumerate(rr):
                idx[i, : len(s.local[r])] = torch.tensor(s.local[r], device=emb.device)
                valid[i, : len(s.local[r])] = True
            local_first = torch.zeros_like(idx)
            for i, r in enumerate(rr):  # per row: first position among the row's own candidates
                own: dict[int, int] = {}
                local_first[i, : len(s.local[r])] = torch.tensor(
                    [own.setdefault(int(first[j]), p) for p, j in enumerate(s.local[r])], device=emb.device
                )
            top = rank_rows(q, emb[pool[idx]], valid, local_first, depth).tolist()
            lists = [[s.local[r][p] for p in t if p < len(s.local[r])] for t, r in zip(top, rr, strict=True)]
        metric.update([row_scores(t, s.rels[r]) for t, r in zip(lists, rr, strict=True)])
    return {k: float(v) for k, v in metric.compute().items()}


def run_mmeb_v2(
    embed: EmbedFn,
    bench: V2Benchmark,
    image_root: str | os.PathLike | None = None,
    batch_size: int = 64,
    cache: EmbeddingCache | None = None,
    fingerprint: str | None = None,
    ctx: DistContext | None = None,
    max_rows: int | None = None,
    step: int | None = None,
    score_budget: int = SCORE_BUDGET,
    image_result: EvalResult | None = None,
    frame_input: FrameInput = "frames",
    video_input: bool = False,
) -> V2Result:
    """Encode, score and summarise an MMEB-V2 benchmark (every rank calls this).

    ``frame_input``: how a video reaches the encoder: ``frames`` (default) as the list of its sampled
    frames (:class:`mme5.records.Side` ``frames``; each adapter formats it as its frame input: one
    image per frame, as VLM2Vec's collator hands frames to the processor, or one video through the
    backbone's video input, as VLM2Vec-V2 gives Qwen2-VL its videos), ``tiled`` as the frames tiled
    into one image (for an encoder that takes one image only). ``video_input``: the encoder's backbone
    takes frame lists as videos (:func:`takes_video`), said in the report. The embedding cache keeps
    the three apart (``+frames``, ``+video``, the tiles under the plain fingerprint).

    Image tasks run through :func:`mme5.eval.runner.run_benchmark` (hit@1 = its Precision@1 under the
    ``truth_wins`` tie rule: the truth, candidate 0, wins an exact tie, as the stable order of
    :mod:`mme5.eval.v2.metrics` would rank it): the rows of ``image-query/`` with their images under
    ``bench.v2_image_root`` when the benchmark read them (``image_root`` and ``image_result``, an MMEB-V1
    run, are then not used: V1's texts are not V2's), else MMEB-V1's reader over ``image_root``
    (``image_result``: that run, done already).
    """
    ctx = ctx or DistContext.current()
    t0 = time.perf_counter()
    scores: list[V2TaskScore] = []
    if bench.image_bench is not None:
        if image_result is not None:
            log.info("mmeb_v2: image tasks from image-query/; the MMEB-V1 run given is not used for them")
        image_result = None
    if bench.image_bench is not None and bench.image_bench.sets:
        image_result = run_benchmark(
            "mmeb",
            embed,
            Benchmark(bench.image_bench.sets, bench.image_bench.items),  # absent ones: said once, below
            bench.v2_image_root,
            batch_size,
            cache,
            fingerprint,
            ctx,
            score_budget,
            step=step,
        )
    elif bench.image_bench is None and bench.image_tasks and image_result is None:
        image = load_mmeb(bench.image_dir, bench.image_tasks, max_rows)  # type: ignore[arg-type]
        image_result = run_benchmark(
            "mmeb", embed, image, image_root, batch_size, cache, fingerprint, ctx, step=step
        )
    if image_result is not None:
        for d in image_result.datasets:
            if d.name not in bench.image_tasks:
                continue
            scores.append(
                V2TaskScore(
                    d.name,
                    "image",
                    V2_TASKS[d.name].meta_task if d.name in V2_TASKS else d.meta_task,
                    "local",
                    "hit@1",
                    d.rows,
                    d.total_rows,
                    0,
                    round(d.candidates / max(d.rows, 1)),  # per row (V1 counts row x candidate pairs)
                    {k: v for k, v in d.metrics.items() if k.startswith("hit@")},
                )
            )
    stats = image_result.encode if image_result is not None else EncodeStats()
    v2_embed, v2_fingerprint = embed, fingerprint
    if any(s.task.kind == "video" for s in bench.sets):
        if frame_input == "frames":
            v2_embed = frames_embed(embed, {k: v for s in bench.sets for k, v in s.tiles.items()})
            suffix = "+video" if video_input else "+frames"
            v2_fingerprint = f"{fingerprint}{suffix}" if fingerprint is not None else None
        else:
            log.warning(VIDEO_AS_FRAMES)
    if bench.sets:
        check_images(bench.items.items, None, what="MMEB-V2 evaluation")
        emb, stats2 = encode_items(v2_embed, bench.items.items, None, batch_size, cache, v2_fingerprint, ctx)
        canon = canonical_ids(emb)
        for s in bench.sets:
            values = _score_set(s, emb, canon, ctx, score_budget)
            rows = int(values.pop("rows"))
            scores.append(
                V2TaskScore(
                    s.name,
                    s.task.kind,
                    s.task.meta_task,
                    s.task.eval_type,
                    KIND_METRIC[s.task.kind],
                    rows,
                    s.total_rows,
                    s.skipped,
                    len(s.pool),
                    {k: 100.0 * v for k, v in values.items()},
                )
            )
            log.info("mmeb_v2 %s: %s %.2f over %d rows", s.name, scores[-1].main, scores[-1].score, rows)
        stats = EncodeStats(
            stats.distinct_items + stats2.distinct_items,
            stats.encoded + stats2.encoded,
            stats.from_cache + stats2.from_cache,
            stats.encoded_here + stats2.encoded_here,
            stats.seconds + stats2.seconds,
        )
    order = {n: i for i, n in enumerate(V2_TASKS)}
    scores.sort(
        key=lambda t: (KINDS.index(t.kind), order.get(t.name, len(order)))
    )  # custom: after the kind's own
    summary, counts = summarize_v2(scores)
    if bench.missing:
        log.warning(
            "mmeb_v2: %d requested task(s) are absent: %s", len(bench.missing), ", ".join(bench.missing)
        )
    if bench.missing_frames:
        log.warning("mmeb_v2: %d frame folder(s) missing or incomplete", len(bench.missing_frames))
    return V2Result(
        scores,
        summary,
        counts,
        list(bench.missing),
        list(bench.missing_frames),
        stats,
        time.perf_counter() - t0,
        step,
        frame_input,
        video_input and frame_input == "frames",
    )


def summarize_v2(scores: list[V2TaskScore]) -> tuple[dict[str, float], dict[str, int]]:
    """Per-kind, per-meta-task (``kind/meta``) and overall means of the main metric, and how many
    tasks each mean is from."""
    summary: dict[str, float] = {}
    counts: dict[str, int] = {}

    def put(key: str, group: list[V2TaskScore]) -> None:
        if group:
            summary[key] = sum(t.score for t in group) / len(group)
            counts[key] = len(group)

    for kind in KINDS:
        put(kind, [t for t in scores if t.kind == kind])
        for meta in V2_META_TASKS[kind]:
            put(f"{kind}/{meta}", [t for t in scores if t.kind == kind and t.meta_task == meta])
    put("Overall", scores)
    return summary, counts


def evaluate_mmeb_v2(
    embed: EmbedFn,
    root: str | os.PathLike | None,
    work_dir: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    tasks: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    max_rows: int | None = None,
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    fingerprint: str | None = None,
    ctx: DistContext | None = None,
    frame_input: FrameInput = "frames",
    video_input: bool = False,
) -> V2Result:
    """MMEB-V2: hit@1 (image, video) and ndcg_linear@5 (visual documents) per task, the summary.

    ``frame_input``: ``frames`` (a video as its frame list) or ``tiled`` (one tiled image);
    ``video_input``: the backbone takes frame lists as videos; see :func:`run_mmeb_v2`.

    ``root``: the MMEB-V2 folder of video and visual-document tasks (:mod:`mme5.eval.v2.readers`) and,
    when it holds ``image-query/``, of the image tasks (:mod:`mme5.eval.v2.images`); otherwise
    ``image_dir`` / ``image_root``: the image tasks' MMEB-V1 folder and image root (as for
    :func:`mme5.eval.evaluate_mmeb`); ``work_dir``: where the tiled video frames are written.
    Tasks asked for (default: all 78) but absent are listed in ``missing``.
    """
    chosen = resolve_v2_tasks(tasks, kinds)
    bench = load_mmeb_v2(root, chosen, work_dir, image_dir, max_rows)
    if not bench.sets and not bench.image_tasks:
        raise ConfigError(f"none of the {len(chosen)} requested MMEB-V2 task(s) is present (root '{root}')")
    folder = resolve_cache_dir(cache_dir)
    cache = EmbeddingCache(folder) if folder is not None else None
    return run_mmeb_v2(
        embed,
        bench,
        image_root,
        batch_size,
        cache,
        fingerprint,
        ctx,
        max_rows,
        frame_input=frame_input,
        video_input=video_input,
    )


def default_work_dir(output_dir: str | os.PathLike | None) -> Path:
    """Where tiled frames go: ``<output_dir>/v2_frames``, else the user cache's ``mme5/v2_frames``."""
    if output_dir is not None:
        return Path(output_dir) / "v2_frames"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mme5" / "v2_frames"
