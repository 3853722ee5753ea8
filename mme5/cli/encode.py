"""``mme5 encode``: embed a table of texts and image paths (or a folder of images) into .npy or parquet."""

from __future__ import annotations

from collections.abc import Sequence

from mme5.model.settings import DType


def encode(
    model: str,
    input: str,
    output: str,
    batch_size: int = 32,
    device: str = "auto",
    dtype: DType | None = None,
    dim: int | None = None,
    precision: str = "float32",
    instruction: str | None = None,
    id_column: str = "id",
    text_column: str = "text",
    image_column: str = "image",
    image_root: str | None = None,
    part_size: int = 1024,
    ranges: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> None:
    """Embed every row of a parquet / JSONL / CSV file (or every image of a folder) with ids.

    The output is written in parts of ``part_size`` rows; a killed run, rerun with the same options,
    keeps the finished parts and encodes only the rest. Rows that cannot be embedded are skipped,
    counted and listed in OUT.skipped.jsonl.

    Args:
        model: a folder written by `mme5 export` (or a checkpoint, a model folder, a tiny twin name).
        input: a .parquet, .jsonl or .csv file with an id column and text and/or image columns, or a
            folder of images (ids: their paths relative to it).
        output: OUT.npy (with OUT.ids.json) or OUT.parquet (columns id, embedding).
        batch_size: items per forward pass.
        device: "auto" (CUDA when available), "cpu", "cuda", "cuda:N".
        dtype: weight dtype (default: the export's).
        dim: Matryoshka truncation: keep the first DIM components and L2-normalise again.
        precision: float32 | int8 | uint8 | binary | ubinary, as sentence-transformers'
            quantize_embeddings defines them (int8: per-dimension min/max ranges calibrated on the
            first part, or --ranges; ubinary: np.packbits(x > 0)).
        instruction: prepended to every text; a saved task name of the export selects its instruction.
        id_column: the id column (missing: the row number).
        text_column: the text column.
        image_column: the image column (paths relative to image_root, or bytes).
        image_root: where relative image paths start (default: the input file's folder).
        part_size: rows per part file (the unit a resumed run keeps).
        ranges: a [2, dim] .npy of int8 calibration ranges (e.g. a corpus run's OUT.ranges.npy).
        progress: show a progress bar with totals.
        overwrite: replace an existing finished output.
    """
    from mme5.embed.writer import encode_file

    report = encode_file(
        model,
        input,
        output,
        batch_size=batch_size,
        device=None if device == "auto" else device,
        dtype=dtype,
        dim=dim,
        precision=precision,
        instruction=instruction,
        id_column=id_column,
        text_column=text_column,
        image_column=image_column,
        image_root=image_root,
        part_size=part_size,
        ranges=ranges,
        progress=progress,
        overwrite=overwrite,
    )
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.skip_reasons.items()))
    print(
        f"encoded {report.encoded} items ({report.reused} from finished parts), wrote {report.written} "
        f"embeddings of dim {report.dim} at {report.precision} ({report.bytes_per_vector} bytes each), "
        f"skipped {report.skipped}{f' ({reasons})' if reasons else ''} in {report.seconds:.1f}s"
    )
    print("wrote " + ", ".join(report.files))


def main(argv: Sequence[str]) -> int:
    """``mme5 encode --model M --input rows.jsonl --output emb.npy [...]`` (see :func:`encode`)."""
    from mme5.cli.parsing import run_function

    run_function(encode, argv, "mme5 encode")
    return 0
