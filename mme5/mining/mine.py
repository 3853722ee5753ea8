"""``mme5 mine``: embed a shard set with a model, retrieve hard negatives, write a new shard set.

Two passes over the input. The first decodes every sample, embeds each query as the encoder sees it
(``Example.query_side()``: ``{instruction}\\n{text}``) and each distinct candidate
(``Example.candidate_sides()``: ``{doc_instruction}\\n{text}``; the positives, and with
``include_negatives`` the existing negatives too, deduplicated by :meth:`Side.content_id`, i.e. text
with its instruction plus image bytes). :func:`mme5.mining.retrieve.mine_topk` then ranks the
candidates per query, positive-aware (see there for the exact rule). The second pass re-reads the
samples in the same order and writes each one, with its mined negatives (plus the existing ones with
``keep_existing``) and a ``meta["mined"]`` record, through :class:`mme5.records.ShardSetWriter`;
``mining.json`` beside the shards records the model fingerprint, the options and the counts.

Excluded from a query's candidates: the positives of every sample with the same query (the same
content as the encoder sees it) and any candidate with the raw content of one of them (the same
text and image under another instruction), candidates of another group (``scope="doc_instruction"``:
only candidates that carry the query's own ``doc_instruction``, so that a mined negative is embedded
in training exactly as it was scored), and candidates scoring above the margin threshold.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from mme5.atomic import write_text
from mme5.errors import ConfigError, MissingPathError
from mme5.mining.retrieve import MarginKind, mine_topk, thresholds
from mme5.records import SIZES_FILE, Example, RecordError, ShardSetWriter, Side, decode_sample, iter_shard

if TYPE_CHECKING:
    from mme5.model.load import EmbeddingModel

REPORT_FILE = "mining.json"
REPORT_FORMAT = 1
Scope = Literal["doc_instruction", "all"]


@dataclass(frozen=True)
class MiningOptions:
    """How negatives are mined.

    Args:
        negatives: mined negatives per query (fewer when fewer candidates are eligible).
        skip_top: eligible ranks skipped before taking negatives: ranks [skip_top, skip_top+negatives).
        margin: the false-negative margin (see margin_kind).
        margin_kind: "relative" drops candidates scoring above margin * positive score (NV-Retriever's
            TopK-PercPos, margin 0.95); "absolute" drops those above positive score - margin
            (TopK-MarginPos); "none" keeps every score.
        scope: "doc_instruction": candidates only from samples with the query's doc_instruction;
            "all": every candidate.
        include_negatives: the existing negatives join the candidates (deduplicated with the positives).
        keep_existing: write the existing negatives after the mined ones.
        query_block: queries scored at once in retrieval.
        candidate_block: candidates scored at once in retrieval.
    """

    negatives: int = 8
    skip_top: int = 0
    margin: float = 0.95
    margin_kind: MarginKind = "relative"
    scope: Scope = "doc_instruction"
    include_negatives: bool = False
    keep_existing: bool = False
    query_block: int = 1024
    candidate_block: int = 16384

    def __post_init__(self) -> None:
        if self.negatives < 1:
            raise ConfigError(f"negatives must be >= 1, got {self.negatives}")
        if self.skip_top < 0:
            raise ConfigError(f"skip_top must be >= 0, got {self.skip_top}")
        if self.margin_kind not in ("relative", "absolute", "none"):
            raise ConfigError(f"margin_kind must be relative, absolute or none, got {self.margin_kind!r}")
        if self.scope not in ("doc_instruction", "all"):
            raise ConfigError(f"scope must be doc_instruction or all, got {self.scope!r}")
        if not math.isfinite(self.margin) or (self.margin_kind == "relative" and self.margin <= 0):
            raise ConfigError(f"margin must be finite (and > 0 when relative), got {self.margin}")
        if self.query_block < 1 or self.candidate_block < 1:
            raise ConfigError("query_block and candidate_block must be >= 1")


@dataclass
class MiningReport:
    """What a mining run did (also written as ``mining.json``)."""

    input: str
    output: str
    model: str
    fingerprint: str
    options: dict[str, Any]
    samples: int = 0
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    candidates: int = 0
    duplicate_candidates: int = 0
    negatives: int = 0
    short_queries: int = 0
    above_margin: int = 0
    mean_positive_score: float = 0.0
    mean_negative_score: float = 0.0
    seconds: float = 0.0
    shards: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"format": REPORT_FORMAT, **asdict(self)}, indent=1)


class MiningError(ConfigError):
    """The input cannot be mined (not a shard set, no sample, output in the way)."""


def _resolve_input(shards: str) -> list[tuple[str, int]]:
    """(shard url, samples) of a shard set spec; one line when it is no shard set or holds nothing."""
    from mme5.data.shardsets import ShardSet, resolve

    if not any(c in shards for c in "{*?[:") and not os.path.exists(shards):
        raise MissingPathError(f"shard set '{shards}' does not exist: expected a folder of *.tar shards")
    (rset,) = resolve([ShardSet(shards)], write_sizes_files=False)
    return [(u, n) for u, n in zip(rset.urls, rset.sizes, strict=True) if n > 0]


def _iter_examples(urls: list[tuple[str, int]], skips: Counter[str] | None) -> Iterator[Example]:
    """Every decodable sample in order; problems and undecodable samples counted in ``skips``."""

    def sink(reason: str, message: str, n: int = 1) -> None:
        if skips is not None:
            skips[reason] += n

    for url, expected in urls:
        for sample in iter_shard(url, sink, expected=expected):
            try:
                yield decode_sample(sample)
            except RecordError as exc:
                if skips is not None:
                    skips[exc.reason] += 1


def _embed(
    model: EmbeddingModel, sides: list[Side], batch_size: int, desc: str | None = None
) -> tuple[torch.Tensor, dict[int, str]]:
    """Embeddings of ``sides``; a batch that fails on a bad image is redone item by item and the items
    that fail are returned (index -> reason) with zero rows. ``desc``: show a progress bar so named."""
    out: list[torch.Tensor] = []
    failed: dict[int, str] = {}
    starts: Iterable[int] = range(0, len(sides), batch_size)
    if desc is not None:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for start in starts:
        chunk = sides[start : start + batch_size]
        try:
            out.append(model.encode_sides(chunk, batch_size=batch_size, progress=False))
            continue
        except RecordError:
            pass
        for i, side in enumerate(chunk):
            try:
                out.append(model.encode_sides([side], batch_size=1, progress=False))
            except RecordError as exc:
                failed[start + i] = exc.reason
                out.append(torch.zeros(1, model.encoder.hidden_size))
    if not out:
        return torch.empty(0, model.encoder.hidden_size), failed
    return torch.cat(out), failed


def _prepare_output(out: Path, inputs: list[tuple[str, int]], overwrite: bool) -> None:
    in_folders = {Path(u).resolve().parent for u, _ in inputs if not u.startswith(("pipe:", "http"))}
    if out.resolve() in in_folders:
        raise MiningError(f"output '{out}' is the input shard set's folder; choose another --out")
    if out.exists() and not out.is_dir():
        raise MiningError(f"output '{out}' exists and is not a folder")
    old = [*out.glob("*.tar"), out / SIZES_FILE, out / REPORT_FILE] if out.is_dir() else []
    old = [p for p in old if p.exists()]
    if old and not overwrite:
        raise MiningError(
            f"output '{out}' already holds shards or a report; pass --overwrite to replace them"
        )
    for p in old:
        p.unlink()


def check_paths(shards: str, out: str | os.PathLike, overwrite: bool = False) -> list[tuple[str, int]]:
    """The input's (shard, samples) and a ready output folder, or one line saying what is wrong: the
    input is no shard set or holds no sample, the output is the input's folder or already holds
    shards (removed with ``overwrite``). Cheap: call it before loading a model."""
    inputs = _resolve_input(shards)
    _prepare_output(Path(out), inputs, overwrite)
    return inputs


def mine(
    model: EmbeddingModel,
    shards: str,
    out: str | os.PathLike,
    options: MiningOptions | None = None,
    batch_size: int = 32,
    samples_per_shard: int = 1000,
    overwrite: bool = False,
    model_name: str | None = None,
    progress: bool = False,
) -> MiningReport:
    """Mine hard negatives for every sample of ``shards`` with ``model`` into a new shard set ``out``.

    Args:
        model: the embedding model (:func:`mme5.load`).
        shards: the input shard set (a folder of ``*.tar``, a brace spec, a glob).
        out: the output folder (shards ``shard-000000.tar`` ..., ``sizes.json``, ``mining.json``).
        options: the mining rule (:class:`MiningOptions`).
        batch_size: items per forward pass.
        samples_per_shard: samples per output shard.
        overwrite: replace shards and report already in ``out``.
        model_name: how the report names the model (default: its fingerprint only).
        progress: print a line per stage and show progress bars while embedding.
    """
    opts = options or MiningOptions()
    if batch_size < 1 or samples_per_shard < 1:
        raise ConfigError("batch_size and samples_per_shard must be >= 1")
    started = time.perf_counter()
    inputs = check_paths(shards, out, overwrite)
    out_dir = Path(out)

    # ---- pass 1: queries, distinct candidates, groups --------------------------------------------
    skips: Counter[str] = Counter()
    query_sides: list[Side] = []
    query_keys: list[int] = []
    pos_index: list[int] = []
    groups: list[int] = []
    cand_raw: list[Side] = []
    cand_sides: list[Side] = []
    cand_group: list[int] = []
    cand_of: dict[int, int] = {}
    same_raw: dict[int, list[int]] = {}
    group_of: dict[str | None, int] = {}
    duplicates = 0

    def candidate(raw: Side, seen: Side, group: int) -> int:
        nonlocal duplicates
        key = seen.content_id()
        found = cand_of.get(key)
        if found is not None:
            duplicates += 1
            return found
        cand_of[key] = len(cand_raw)
        same_raw.setdefault(raw.content_id(), []).append(len(cand_raw))
        cand_raw.append(Side(raw.text, None, raw.image_bytes, raw.image_ext))
        cand_sides.append(Side(seen.text, None, seen.image_bytes, seen.image_ext))
        cand_group.append(group)
        return cand_of[key]

    for ex in _iter_examples(inputs, skips):
        group = 0 if opts.scope == "all" else group_of.setdefault(ex.doc_instruction, len(group_of))
        q = ex.query_side()
        query_sides.append(q)
        query_keys.append(q.content_id())
        groups.append(group)
        seen = ex.candidate_sides()
        pos_index.append(candidate(ex.positive, seen[0], group))
        if opts.include_negatives:
            for raw, side in zip(ex.negatives, seen[1:], strict=True):
                candidate(raw, side, group)
    n = len(query_sides)
    if n == 0:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(skips.items())) or "none"
        raise MiningError(f"shard set '{shards}' holds no decodable sample (problems: {reasons})")

    if progress:
        print(f"mine: embedding {n} queries and {len(cand_sides)} distinct candidates", flush=True)
    q_emb, q_failed = _embed(model, query_sides, batch_size, "queries" if progress else None)
    c_emb, c_failed = _embed(model, cand_sides, batch_size, "candidates" if progress else None)
    query_sides.clear()  # the decoded images go with them
    cand_sides.clear()

    # ---- retrieval -------------------------------------------------------------------------------
    c_group_t = torch.tensor(cand_group, dtype=torch.long)
    if c_failed:
        c_group_t[list(c_failed)] = -1
    same_query: dict[int, set[int]] = {}
    raw_key = {j: key for key, js in same_raw.items() for j in js}
    for key, p in zip(query_keys, pos_index, strict=True):
        same_query.setdefault(key, set()).update(same_raw[raw_key[p]])
    width = max(len(s) for s in same_query.values())
    positives = torch.full((n, width), -1, dtype=torch.long)
    for i, key in enumerate(query_keys):
        row = sorted(same_query[key])
        positives[i, : len(row)] = torch.tensor(row)
    device = next(model.encoder.parameters()).device
    q_dev, c_dev = q_emb.to(device), c_emb.to(device)
    pos_t = torch.tensor(pos_index, dtype=torch.long, device=device)
    pos_scores = (q_dev * c_dev[pos_t]).sum(1)
    found = mine_topk(
        q_dev,
        c_dev,
        thresholds(pos_scores, opts.margin, opts.margin_kind),
        positives.to(device),
        torch.tensor(groups, dtype=torch.long, device=device),
        c_group_t.to(device),
        k=opts.negatives,
        skip_top=opts.skip_top,
        query_block=opts.query_block,
        candidate_block=opts.candidate_block,
    )
    indices, scores = found.indices.cpu(), found.scores.cpu()
    pos_scores_l = pos_scores.cpu().tolist()
    bad = set(q_failed) | {i for i, p in enumerate(pos_index) if p in c_failed}
    for i in q_failed:
        skips[f"query_{q_failed[i]}"] += 1
    for i, p in enumerate(pos_index):
        if p in c_failed and i not in q_failed:
            skips[f"positive_{c_failed[p]}"] += 1

    fingerprint = model.fingerprint()
    report = MiningReport(
        input=shards,
        output=str(out_dir),
        model=model_name or fingerprint,
        fingerprint=fingerprint,
        options=asdict(opts),
        samples=n,
        candidates=len(cand_raw) - len(c_failed),
        duplicate_candidates=duplicates,
    )

    # ---- pass 2: write --------------------------------------------------------------------------
    if progress:
        print(f"mine: writing {n - len(bad)} samples to {out_dir}", flush=True)
    pos_sum = neg_sum = 0.0
    with ShardSetWriter(out_dir, samples_per_shard=samples_per_shard) as writer:
        for i, ex in enumerate(_iter_examples(inputs, None)):
            if i >= n:
                raise MiningError(f"shard set '{shards}' changed while it was mined (more samples)")
            if i in bad:
                continue
            keep = [j for j in range(indices.shape[1]) if int(indices[i, j]) >= 0]
            mined = [cand_raw[int(indices[i, j])] for j in keep]
            mined_scores = [round(float(scores[i, j]), 6) for j in keep]
            ex.meta = {
                **ex.meta,
                "mined": {
                    "fingerprint": fingerprint,
                    "report": REPORT_FILE,
                    "ranks": [opts.skip_top + j for j in keep],
                    "scores": mined_scores,
                    "positive_score": round(pos_scores_l[i], 6),
                    "above_margin": int(found.above_threshold[i]),
                    "eligible": int(found.eligible[i]),
                    "existing_negatives": len(ex.negatives),
                },
            }
            ex.negatives = [*mined, *ex.negatives] if opts.keep_existing else mined
            writer.write(ex)
            report.written += 1
            report.negatives += len(mined)
            report.short_queries += len(mined) < opts.negatives
            report.above_margin += int(found.above_threshold[i])
            pos_sum += pos_scores_l[i]
            neg_sum += sum(mined_scores)
    report.shards = [p.name for p in writer.written]
    report.skipped = dict(sorted(skips.items()))
    report.mean_positive_score = round(pos_sum / max(1, report.written), 6)
    report.mean_negative_score = round(neg_sum / max(1, report.negatives), 6)
    report.seconds = round(time.perf_counter() - started, 3)
    write_text(out_dir / REPORT_FILE, report.to_json())
    return report
