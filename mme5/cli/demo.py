"""``mme5 demo``: generate the demo corpus (no download needed) and print where everything is.

    mme5 demo --root demo_corpus
    mme5 demo --root /tmp/demo --seed 1 --train_samples 2000 --eval_rows 40

A folder that already holds the corpus with the same parameters is reused as is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence


def make_demo(
    root: str = "demo_corpus",
    seed: int = 0,
    train_samples: int = 6000,
    eval_rows: int = 60,
    image_size: int = 64,
    train_shards: int = 8,
    negatives: int = 3,
    candidates: int = 10,
    xtd_pool: int = 100,
    overwrite: bool = False,
) -> None:
    """Generate the demo corpus under ``root`` (unless already there) and print its paths and counts.

    Args:
        root: folder of the corpus (created if missing; must be empty or hold a demo corpus).
        seed: generation seed (same seed, same corpus).
        train_samples: training samples.
        eval_rows: rows per MMEB-style evaluation dataset.
        image_size: image side in pixels.
        train_shards: number of training shards.
        negatives: hard negatives per training sample (1-3).
        candidates: candidates per retrieval / VQA / grounding evaluation row.
        xtd_pool: images in the XTD-style pool (one row per image and language).
        overwrite: replace a demo corpus made by another mme5 version or with other parameters.
    """
    from mme5.demo import ensure_demo_corpus, read_manifest

    start = time.perf_counter()
    paths = ensure_demo_corpus(
        root,
        seed=seed,
        train_samples=train_samples,
        eval_rows=eval_rows,
        image_size=image_size,
        train_shards=train_shards,
        negatives=negatives,
        candidates=candidates,
        xtd_pool=xtd_pool,
        overwrite=overwrite,
    )
    counts = read_manifest(paths.root)["counts"]
    print(f"demo corpus: {paths.root}  ({time.perf_counter() - start:.1f} s)")
    print(f"  train shards : {paths.train_pattern}  ({sum(counts['train'].values())} samples)")
    for kind, n in counts["train"].items():
        print(f"      {kind:<16} {n}")
    print(f"  MMEB-style   : {paths.mmeb_dir}  ({len(counts['mmeb'])} datasets)")
    for name, n in counts["mmeb"].items():
        print(f"      {name:<22} {n} rows")
    print(
        f"  XTD-style    : {paths.xtd_dir}  ({', '.join(f'{k}: {v}' for k, v in counts['xtd'].items())} rows)"
    )
    print(f"  image root   : {paths.image_root}")


def main(argv: Sequence[str]) -> int:
    """``mme5 demo [--root DIR] [--seed N] ...`` (arguments as for :func:`make_demo`)."""
    from mme5.cli.parsing import run_function

    run_function(make_demo, argv, "mme5 demo")
    return 0
