"""``mme5 convert``: public parquet training sets (MMEB-train, mmE5-synthetic) into mme5 WebDataset shards.

    mme5 convert data/MMEB-train shards/mmeb --image_root data/images
    mme5 convert "[a.parquet, b.parquet]" shards/mix --image_root images

One shard set per source (subset) under ``out``, each with ``sizes.json``; rerunning resumes.
"""

from __future__ import annotations

from collections.abc import Sequence


def convert(
    inputs: list[str] | str,
    out: str,
    image_root: str | None = None,
    task: str = "auto",
    samples_per_shard: int = 1000,
    negatives: int | None = 3,
    image_token: str | None = None,
    progress: bool = True,
) -> None:
    """Convert public parquet training sets into mme5 shards, one shard set per source under ``out``.

    Input columns: qry, qry_image_path, pos_text, pos_image_path, neg_text, neg_image_path. Texts are
    kept (with the instruction inside ``qry`` and the ``<|image_1|>`` token), negatives parsed with a
    literal parser, short lists padded with their last item; rows in = samples out + skipped.

    Args:
        inputs: a parquet file or a folder searched for ``*.parquet``, or a list of them (``"[a, b]"``).
        out: output folder; source ``S`` goes to ``out/S/S-000000.tar`` ...
        image_root: folder the image paths in the parquet are relative to.
        task: task of every sample (classification, vqa, retrieval, grounding), or ``auto``: from the
            MMEB subset name, retrieval otherwise.
        samples_per_shard: samples per shard.
        negatives: hard negatives kept per sample; a shorter non-empty list is padded by repeating its
            last item (None: keep all as they are).
        image_token: rewrite the public ``<|image_1|>`` token to this one (default: keep it; the
            backbone adapters rewrite it at encode time).
        progress: show a progress bar.
    """
    from mme5.data.convert import convert as convert_sets

    reports = convert_sets(
        [inputs] if isinstance(inputs, str) else inputs,
        out,
        image_root,
        task,
        samples_per_shard,
        negatives,
        image_token,
        progress,
    )
    for r in reports:
        print(r.summary())
    rows = sum(r.rows_in for r in reports)
    samples = sum(r.samples_out for r in reports)
    print(f"total: rows in {rows} = samples out {samples} + skipped {rows - samples}")


def main(argv: Sequence[str]) -> int:
    """``mme5 convert INPUTS OUT [--image_root DIR] ...`` (arguments as for :func:`convert`)."""
    from mme5.cli.parsing import run_function

    run_function(convert, argv, "mme5 convert", positional=True)
    return 0
