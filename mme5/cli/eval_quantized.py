"""``mme5 eval-quantized``: the same model at full precision, int8 and nf4 on the same evaluation, and its
embeddings truncated (Matryoshka) and quantized (int8, binary)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Union

from mme5.eval.datasets import XTD_LANGUAGES
from mme5.model.settings import DType, Quantization

#: ``full`` (the saved dtype) or one of the bitsandbytes quantizations.
Setting = Union[Literal["full"], Quantization]  # noqa: UP007 (a runtime alias that jsonargparse reads)


def eval_quantized(
    model: str,
    settings: Sequence[Setting] = ("full", "int8", "nf4"),
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
    dtype: DType | Literal["auto"] = "auto",
    device: str = "auto",
    output_dir: str = "runs/quantized",
    isolate: bool = True,
    embedding_precisions: Sequence[str] = ("int8", "ubinary"),
    dims: list[int] | None = None,
) -> None:
    """Evaluate one model at full precision and quantized (bitsandbytes) and compare.

    The first setting's embeddings are also scored truncated to ``dims`` and quantized to each of
    ``embedding_precisions`` (no second encoding), each row with its bytes per vector.

    Args:
        model: a folder written by `mme5 export`, a Hugging Face model folder of a supported family, or a
            tiny twin name (tiny-llava, ...).
        settings: precision settings, the first is the reference of the deltas.
        mmeb_dir: MMEB folder (skipped when None).
        xtd_dir: XTD folder (skipped when None).
        image_root: the folder image paths are relative to, for a benchmark without its own root below.
        mmeb_image_root: MMEB's image folder (TIGER-Lab/MMEB-eval's images.zip unpacked).
        xtd_image_root: XTD's image folder (Haon-Chen/XTD-10's XTD10_dataset.tar.gz unpacked).
        demo_root: use the demo corpus in this folder (generated when missing).
        datasets: MMEB datasets (default: all found).
        languages: XTD languages.
        max_rows: only the first N rows of each dataset / language.
        batch_size: sides per model call.
        dtype: full-precision weight dtype and 4-bit compute dtype ("auto": bfloat16 on CUDA, else float32).
        device: "auto", "cpu", "cuda", "cuda:N".
        output_dir: where quantized.json / .md / .csv / .png go.
        isolate: run each setting in a fresh process (exact per-setting peak memory; slower start).
        embedding_precisions: embedding rows: int8 | uint8 | binary | ubinary, as sentence-transformers'
            quantize_embeddings (int8 calibrated on the evaluated items; [] for none).
        dims: Matryoshka dimensions for embedding rows (default: d/4 and d/2; [] for none).
    """
    from mme5.cli.evaluate import folders_with_demo
    from mme5.eval.quantized import compare_quantized, comparison_table, device_name

    mmeb_dir, xtd_dir, image_root = folders_with_demo(demo_root, mmeb_dir, xtd_dir, image_root)
    results = compare_quantized(
        model,
        settings,
        mmeb_dir,
        xtd_dir,
        mmeb_image_root if mmeb_image_root is not None else image_root,
        datasets,
        languages,
        max_rows,
        batch_size,
        dtype,
        device,
        output_dir,
        isolate,
        embedding_precisions,
        dims,
        xtd_image_root if xtd_image_root is not None else image_root,
    )
    print(comparison_table(results, device_name()))
    print(f"wrote {output_dir}/quantized.json, .md, .csv, .png")


def main(argv: Sequence[str]) -> int:
    """``mme5 eval-quantized --model M [--settings "[full, int8, nf4]"] ...`` (see :func:`eval_quantized`)."""
    from mme5.cli.parsing import run_function

    run_function(eval_quantized, argv, "mme5 eval-quantized")
    return 0
