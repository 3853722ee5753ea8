"""``mme5 mine``: mine hard negatives for a shard set with a model and write them as a new shard set."""

from __future__ import annotations

from collections.abc import Sequence

from mme5.mining.mine import Scope
from mme5.mining.retrieve import MarginKind
from mme5.model.settings import DType


def mine(
    model: str,
    shards: str,
    out: str,
    negatives: int = 8,
    skip_top: int = 0,
    margin: float = 0.95,
    margin_kind: MarginKind = "relative",
    scope: Scope = "doc_instruction",
    include_negatives: bool = False,
    keep_existing: bool = False,
    batch_size: int = 32,
    samples_per_shard: int = 1000,
    query_block: int = 1024,
    candidate_block: int = 16384,
    device: str = "auto",
    dtype: DType | None = None,
    threads: int | None = None,
    overwrite: bool = False,
) -> None:
    """Embed a shard set with a model and write it again with mined hard negatives.

    Candidates are the set's positives (and with --include_negatives its existing negatives),
    deduplicated by content (text with its instruction, image bytes), embedded with each sample's
    doc_instruction; queries with their instruction. Per query the positive (and any candidate with
    its content), candidates scoring above the margin threshold (likely false negatives) and, with
    --scope doc_instruction, candidates of other doc_instructions are excluded; the negatives are ranks
    [skip_top, skip_top + negatives) of what remains. Each sample's meta["mined"] records ranks,
    scores and the model fingerprint; OUT/mining.json records the options and counts.

    Args:
        model: a folder written by `mme5 export` (or a checkpoint, a model folder, a tiny twin name).
        shards: the input shard set: a folder of *.tar shards, a brace spec or a glob.
        out: the output folder (shard-000000.tar ..., sizes.json, mining.json).
        negatives: mined negatives per query.
        skip_top: eligible ranks skipped before taking negatives.
        margin: false-negative margin (see margin_kind).
        margin_kind: relative: drop candidates scoring above margin * positive score (NV-Retriever's
            TopK-PercPos); absolute: above positive score - margin (TopK-MarginPos); none: no margin.
        scope: doc_instruction: candidates only from samples with the query's doc_instruction; all:
            every candidate.
        include_negatives: the existing negatives join the candidates.
        keep_existing: write the existing negatives after the mined ones.
        batch_size: items per forward pass.
        samples_per_shard: samples per output shard.
        query_block: queries scored at once (retrieval memory is query_block x candidate_block).
        candidate_block: candidates scored at once.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N".
        dtype: weight dtype (default: the export's).
        threads: intra-op CPU threads (default: torch's choice); on a CPU that other processes keep
            busy, 1 avoids OpenMP threads spinning against each other (16x faster on a loaded 2-core
            machine).
        overwrite: replace shards and a report already in OUT.
    """
    import torch

    from mme5.errors import ConfigError
    from mme5.mining.mine import MiningOptions, check_paths
    from mme5.mining.mine import mine as run
    from mme5.model.load import load

    options = MiningOptions(
        negatives=negatives,
        skip_top=skip_top,
        margin=margin,
        margin_kind=margin_kind,
        scope=scope,
        include_negatives=include_negatives,
        keep_existing=keep_existing,
        query_block=query_block,
        candidate_block=candidate_block,
    )
    check_paths(shards, out, overwrite)  # before the model loads: a wrong path fails at once
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    embedder = load(model, dtype=dtype, device=None if device == "auto" else device)
    report = run(
        embedder,
        shards,
        out,
        options,
        batch_size=batch_size,
        samples_per_shard=samples_per_shard,
        overwrite=overwrite,
        model_name=model,
        progress=True,
    )
    skipped = ", ".join(f"{k} {v}" for k, v in report.skipped.items())
    print(
        f"mined {report.negatives} negatives for {report.written} of {report.samples} samples from "
        f"{report.candidates} candidates ({report.duplicate_candidates} duplicates merged); "
        f"{report.short_queries} got fewer than {negatives}, {report.above_margin} candidates above "
        f"the margin dropped; mean score positive {report.mean_positive_score:.4f}, negative "
        f"{report.mean_negative_score:.4f}; skipped {sum(report.skipped.values())}"
        f"{f' ({skipped})' if skipped else ''} in {report.seconds:.1f}s"
    )
    print(f"wrote {len(report.shards)} shard(s) and mining.json to {out}")


def main(argv: Sequence[str]) -> int:
    """``mme5 mine --model M --shards IN --out OUT [...]`` (see :func:`mine`)."""
    from mme5.cli.parsing import run_function

    run_function(mine, argv, "mme5 mine")
    return 0
