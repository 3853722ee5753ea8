"""``mme5 evaluate``: MMEB and XTD on an exported folder, a checkpoint or a backbone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mme5.errors import ConfigError
from mme5.eval.datasets import XTD_LANGUAGES
from mme5.eval.metrics import TieRule
from mme5.eval.runner import EvalResult
from mme5.model.settings import DType, Quantization


def evaluate(
    model: str,
    mmeb_dir: str | None = None,
    xtd_dir: str | None = None,
    image_root: str | None = None,
    mmeb_image_root: str | None = None,
    xtd_image_root: str | None = None,
    demo_root: str | None = None,
    datasets: list[str] | None = None,
    languages: Sequence[str] = XTD_LANGUAGES,
    max_rows: int | None = None,
    batch_size: int = 64,
    output_dir: str | None = None,
    cache_dir: str | None = "auto",
    tie_rule: TieRule = "official",
    quantization: Quantization | None = None,
    dtype: DType | None = None,
    device: str = "auto",
) -> dict[str, EvalResult]:
    """Evaluate an embedding model on MMEB and/or XTD and print the tables.

    Args:
        model: a Lightning checkpoint (*.ckpt), a folder written by `mme5 export`, a Hugging Face model
            folder of a supported family, or a tiny twin name (tiny-llava, ...).
        mmeb_dir: MMEB folder (one parquet or HF dataset folder per dataset); skipped when None.
        xtd_dir: XTD folder (<lang>.parquet or <lang>/test-*.parquet); skipped when None.
        image_root: the folder image paths are relative to, for a benchmark without its own root below.
        mmeb_image_root: MMEB's image folder: TIGER-Lab/MMEB-eval's images.zip unpacked
            (`unzip images.zip -d eval_images/`, then `--mmeb_image_root eval_images`).
        xtd_image_root: XTD's image folder: Haon-Chen/XTD-10's XTD10_dataset.tar.gz unpacked
            (`tar -xzf XTD10_dataset.tar.gz`, then `--xtd_image_root XTD10_dataset`).
        demo_root: use the demo corpus in this folder (generated when missing) for MMEB, XTD and images.
        datasets: MMEB datasets to evaluate (default: the 36 official + the folder's datasets.json).
        languages: XTD languages to evaluate.
        max_rows: only the first N rows of each dataset / language (None: all).
        batch_size: sides per model call.
        output_dir: write results.json and results.md here (None: print only).
        cache_dir: embedding cache keyed by the model's fingerprint: "auto" (the user cache directory,
            $MME5_CACHE/embeddings, else $XDG_CACHE_HOME/mme5/embeddings or ~/.cache/mme5/embeddings), a
            folder, or None (off).
        tie_rule: how an exact tie with the truth ranks: "official" (MMEB: the truth wins, as
            np.argmax; XTD: the tie ranks above it, as mmE5's argsort recall), "truth_wins" or
            "truth_loses". The share of tied rows is reported beside the scores.
        quantization: load the weights in 8-bit ("int8") or 4-bit ("nf4", "fp4") through bitsandbytes.
        dtype: override the weight dtype (None: the export's or checkpoint's own; float32 for a backbone).
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N".
    """
    from mme5.atomic import write_text
    from mme5.eval.models import load_model
    from mme5.eval.report import markdown_report, write_json
    from mme5.eval.runner import evaluate_mmeb, evaluate_xtd

    mmeb_dir, xtd_dir, image_root = folders_with_demo(demo_root, mmeb_dir, xtd_dir, image_root)
    mmeb_root = mmeb_image_root if mmeb_image_root is not None else image_root
    xtd_root = xtd_image_root if xtd_image_root is not None else image_root
    if mmeb_dir is None and xtd_dir is None:
        raise ConfigError("nothing to evaluate: give --mmeb_dir, --xtd_dir or --demo_root")
    loaded = load_model(model, quantization=quantization, device=device, dtype=dtype, batch_size=batch_size)
    results: dict[str, EvalResult] = {}
    common = {
        "max_rows": max_rows,
        "batch_size": batch_size,
        "cache_dir": cache_dir,
        "fingerprint": loaded.fingerprint,
        "tie_rule": tie_rule,
    }
    if mmeb_dir is not None:
        results["mmeb"] = evaluate_mmeb(loaded.embed, mmeb_dir, mmeb_root, datasets=datasets, **common)
    if xtd_dir is not None:
        results["xtd"] = evaluate_xtd(loaded.embed, xtd_dir, xtd_root, languages=languages, **common)
    report = markdown_report(**results, title=loaded.description)
    print(report)
    if output_dir is not None:
        out = Path(output_dir)
        write_json(out / "results.json", **results)
        write_text(out / "results.md", report)
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return results


def folders_with_demo(
    demo_root: str | None, mmeb_dir: str | None, xtd_dir: str | None, image_root: str | None
) -> tuple[str | None, str | None, str | None]:
    """The evaluation folders, with the demo corpus's filling those not given when ``demo_root`` is set."""
    if demo_root is None:
        return mmeb_dir, xtd_dir, image_root
    from mme5.demo import open_demo_corpus

    paths = open_demo_corpus(demo_root)
    return mmeb_dir or str(paths.mmeb_dir), xtd_dir or str(paths.xtd_dir), image_root or str(paths.image_root)


def main(argv: Sequence[str]) -> int:
    """``mme5 evaluate --model M [--mmeb_dir D] [--xtd_dir D] ...`` (arguments as for :func:`evaluate`)."""
    from mme5.cli.parsing import run_function

    run_function(evaluate, argv, "mme5 evaluate")
    return 0
