"""``mme5 convert``: the public training sets, as downloaded from the hub, into mme5 WebDataset shards.

    mme5 convert data/mmE5-MMEB-hardneg data/shards/mmeb-hardneg --image_root data/mmE5-images
    mme5 convert data/mmE5-synthetic data/shards/synthetic --image_root data/mmE5-images
    mme5 convert data/MMEB-train data/shards/mmeb-train --image_root data/MMEB-train

One shard set per subset under ``out``, each with ``sizes.json``; rerunning resumes. The rules of each
set (split, cap, negatives) and where they come from: :mod:`mme5.data.convert`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from mme5.data.convert import V2_NUM_FRAMES, DatasetName


def convert(
    inputs: list[str] | str,
    out: str,
    image_root: str | None = None,
    dataset: DatasetName = "auto",
    split: str = "auto",
    rows_per_subset: int | Literal["auto"] | None = "auto",
    negatives: int | None = None,
    subsets: list[str] | None = None,
    task: str = "auto",
    samples_per_shard: int = 1000,
    image_token: str | None = None,
    seed: int = 0,
    progress: bool = True,
    num_frames: int | None = V2_NUM_FRAMES,
) -> None:
    """Convert public training sets into mme5 shards, one shard set per subset under ``out``.

    Finds the hub layouts (``<Subset>/<split>-00000-of-00001.parquet``, ``<Subset>/<Subset>.parquet``)
    and the parquet converter's (``<Subset>/<split>/0000.parquet``), applies each set's own split, cap
    and negative rule (as mmE5 / VLM2Vec load them), and prints rows in = samples out + skipped by
    reason (also in ``out/convert_report.json``).

    Args:
        inputs: a training set's folder as downloaded (``hf download ... --local-dir``), a subset
            folder or a parquet file, or a list of them (``"[a, b]"``).
        out: output folder; subset ``S`` goes to ``out/S/S-000000.tar`` ...
        image_root: the folder the parquet's image paths are joined to. The official paths start
            with ``images/<Subset>/``, so this is the folder that holds ``images/`` (not ``images/``
            itself). Paths that are absolute, hold ``..`` or lead out of it by a symlink are refused
            and counted as ``image_outside_root``.
        dataset: which set's rules to apply: ``mmeb-train`` (TIGER-Lab/MMEB-train), ``mmeb-hardneg``
            (intfloat/mmE5-MMEB-hardneg), ``mmE5-synthetic`` (intfloat/mmE5-synthetic), VLM2Vec-V2's
            ``llavahound-caption`` / ``llavahound-qa`` (video, frame folders under ``image_root``),
            ``vidore`` / ``visrag`` (visual documents), or ``auto``: from the folder's name as
            downloaded, else its files, splits and subsets (``llavahound-qa`` must be named).
        split: the split (variant) to convert, e.g. ``original``, ``diverse_instruction``, ``train``;
            ``auto``: what mmE5 trains on (``train`` for the mmE5 sets) and ``original`` for
            MMEB-train (VLM2Vec's default; ``train`` when a subset has no ``original``).
        rows_per_subset: convert the first N rows of each subset's split (a negative N: all but the
            last -N, the ``datasets`` slice rule; null: all). ``auto``: as mmE5 trains, 50000 for
            MMEB-train and mmE5-MMEB-hardneg, all but the last row (``train[:-1]``) for mmE5-synthetic.
        negatives: hard negatives per sample. Default: 3 for the mmE5 sets (texts and image paths
            padded separately by repeating the last, empty texts filled as mmE5 does), MMEB-train's one
            negative used once (any value above 1 still gives one); 0: none.
        subsets: convert only these subsets (default: all found), e.g. mmE5's 24 labelled ones.
        task: task of every sample (classification, vqa, retrieval, grounding), or ``auto``: from the
            subset name, retrieval otherwise.
        samples_per_shard: samples per shard.
        image_token: rewrite the public ``<|image_1|>`` token to this one (default: keep it; the
            backbone adapters rewrite it at encode time).
        seed: seed of the draw that fills an empty negative text (mmE5 draws it at random).
        progress: show a progress bar.
        num_frames: frames sampled per video of a VLM2Vec-V2 video set (evenly spaced, as VLM2Vec
            samples them; null: all).
    """
    from mme5.data.convert import convert as convert_sets
    from mme5.data.convert import run_totals

    reports = convert_sets(
        [inputs] if isinstance(inputs, str) else inputs,
        out,
        image_root,
        dataset=dataset,
        split=split,
        rows_per_subset=rows_per_subset,
        negatives=negatives,
        subsets=subsets,
        task=task,
        samples_per_shard=samples_per_shard,
        image_token=image_token,
        seed=seed,
        progress=progress,
        num_frames=num_frames,
    )
    for r in reports:
        print(r.summary())
    totals = run_totals(reports)
    reasons = ", ".join(f"{k}: {v}" for k, v in totals["skipped"].items()) or "none"
    skipped = sum(totals["skipped"].values())
    print(
        f"total: rows in {totals['rows_in']} = samples out {totals['samples_out']} + skipped {skipped} "
        f"({reasons}); report in {out}/convert_report.json"
    )


def main(argv: Sequence[str]) -> int:
    """``mme5 convert INPUTS OUT [--image_root DIR] ...`` (arguments as for :func:`convert`)."""
    from mme5.cli.parsing import run_function

    run_function(convert, argv, "mme5 convert", positional=True)
    return 0
