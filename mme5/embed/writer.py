"""Encode rows in parts that a killed run resumes from, then write the ``.npy`` or parquet output.

Layout while running, for ``--output OUT.npy`` (or ``OUT.parquet``)::

    OUT.parts/options.json       what the parts were made with (input identity, model, dim, precision, ...)
    OUT.parts/ranges.npy         int8 / uint8 only: the calibration ranges [2, dim]
    OUT.parts/part-000000.npz    rows [0, part_size): ``emb`` (quantized), ``ids``, skipped ids + reasons

Each part is written atomically (:mod:`mme5.atomic`) once all its rows are embedded, so a part file is
complete or absent. A rerun with the same options skips the parts that exist and encodes the rest; other
options refuse to mix (one line). When every part exists the output is assembled:

* ``OUT.npy`` (embeddings [n, dim], float32 / int8 / uint8) with ``OUT.ids.json`` (the ids in row
  order), or ``OUT.parquet`` with columns ``id`` and ``embedding`` (a fixed-size list);
* ``OUT.skipped.jsonl``: one ``{"id", "reason", "message"}`` per row that could not be embedded;
* ``OUT.meta.json``: model, dim, precision, bytes per vector, counts; ``OUT.ranges.npy`` for int8;

and ``OUT.parts/`` is removed.

int8 calibration: unless ``ranges`` names a ``[2, dim]`` ``.npy`` file, the ranges are the per-dimension
min and max of the float embeddings (after ``--dim`` truncation) of the first part, i.e. of the first
``part_size`` embedded rows, as sentence-transformers computes them from ``calibration_embeddings``.
They are stored once (before the first int8 part) and reused by every later part and resumed run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mme5.atomic import atomic_open
from mme5.embed.inputs import Row, RowError, Source, load_side, read_rows
from mme5.embed.precision import (
    DTYPES,
    bytes_per_vector,
    calibration_ranges,
    check_dim,
    check_precision,
    quantize,
    truncate,
)
from mme5.errors import ConfigError, MissingPathError

OUTPUT_SUFFIXES = (".npy", ".parquet")


@dataclass
class EncodeReport:
    """What one ``encode_file`` call did."""

    output: str
    rows: int
    """Rows in the input."""
    written: int
    """Embeddings in the output (rows minus skipped)."""
    encoded: int
    """Items this call passed through the model (rows of parts finished earlier are not re-encoded)."""
    reused: int
    """Rows of parts that an earlier, interrupted run had finished."""
    skipped: int
    skip_reasons: dict[str, int] = field(default_factory=dict)
    parts: int = 0
    dim: int = 0
    precision: str = "float32"
    bytes_per_vector: int = 0
    seconds: float = 0.0
    """Wall time of the whole call (model loading and output assembly included)."""
    encode_seconds: float = 0.0
    """Wall time of reading, embedding, quantizing and writing the parts (no model loading)."""
    encode_cpu_seconds: float = 0.0
    """CPU time of this process (all its threads) over the same span: robust to other load on the machine."""
    files: list[str] = field(default_factory=list)


def _sibling(output: Path, suffix: str) -> Path:
    return output.with_name(output.stem + suffix)


def output_files(output: Path, precision: str) -> list[Path]:
    """Every file the finished output consists of."""
    main = [output] + ([_sibling(output, ".ids.json")] if output.suffix == ".npy" else [])
    extra = [_sibling(output, ".skipped.jsonl"), _sibling(output, ".meta.json")]
    if precision in ("int8", "uint8"):
        extra.append(_sibling(output, ".ranges.npy"))
    return main + extra


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)  # pyright: ignore[reportArgumentType]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def _input_identity(source: Source) -> dict[str, Any]:
    st = source.path.stat()
    ident: dict[str, Any] = {"path": str(source.path.resolve()), "rows": len(source.rows)}
    if source.path.is_file():
        ident.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    else:
        ident["first_last"] = [source.rows[0].id, source.rows[-1].id] if source.rows else []
    return ident


def encode_file(
    model: str | os.PathLike,
    input: str | os.PathLike,
    output: str | os.PathLike,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str | None = None,
    dim: int | None = None,
    precision: str = "float32",
    instruction: str | None = None,
    id_column: str = "id",
    text_column: str = "text",
    image_column: str = "image",
    image_root: str | os.PathLike | None = None,
    part_size: int = 1024,
    ranges: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> EncodeReport:
    """Embed every row of ``input`` with ``model`` into ``output`` (``.npy`` or ``.parquet``), in parts.

    See the module docstring for the files, resuming and the int8 calibration. Rows that cannot be
    embedded (missing or undecodable image, empty row, malformed line) are skipped, counted by reason
    and listed in ``OUT.skipped.jsonl``.
    """
    t0 = time.perf_counter()
    precision = check_precision(precision)
    out = Path(output)
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output '{out}' must end in .npy or .parquet")
    if batch_size < 1 or part_size < 1:
        raise ConfigError(f"batch_size and part_size must be >= 1, got {batch_size} and {part_size}")
    if dim is not None and dim < 1:
        raise ConfigError(f"--dim must be >= 1, got {dim}")
    parts_dir = _sibling(out, ".parts")
    if out.exists() and not parts_dir.exists() and not overwrite:
        raise ConfigError(f"output '{out}' exists; pass --overwrite to replace it")
    if overwrite and parts_dir.exists():
        shutil.rmtree(parts_dir)
    source = read_rows(input, id_column, text_column, image_column, image_root)
    given_ranges: np.ndarray | None = None
    if ranges is not None:
        if precision not in ("int8", "uint8"):
            raise ConfigError(f"--ranges is for int8 / uint8 precision, not {precision}")
        rfile = Path(ranges)
        if not rfile.is_file():
            raise MissingPathError(f"ranges file '{rfile}' does not exist")
        given_ranges = np.load(rfile).astype(np.float32)
    n = len(source.rows)
    n_parts = max(1, -(-n // part_size))
    part_paths = [parts_dir / f"part-{k:06d}.npz" for k in range(n_parts)]
    options = {
        "input": _input_identity(source),
        "model": str(model),
        "dim": dim,
        "precision": precision,
        "instruction": instruction,
        "columns": [id_column, text_column, image_column],
        "image_root": str(source.image_root.resolve()),
        "part_size": part_size,
        "dtype": dtype,
        "ranges": None if given_ranges is None else given_ranges.tolist(),
    }
    options_file = parts_dir / "options.json"
    if options_file.is_file():
        saved = json.loads(options_file.read_text())
        if saved != options:
            diff = sorted(k for k in options if saved.get(k) != options[k])
            raise ConfigError(
                f"'{parts_dir}' holds parts made with other {', '.join(diff)}; rerun with the same "
                f"options, or remove it (or pass --overwrite) to start again"
            )
    todo = [k for k, p in enumerate(part_paths) if not p.is_file()]
    reused = sum(min(part_size, n - k * part_size) for k in range(n_parts) if k not in set(todo))
    encoded = 0
    out_dim = dim
    ranges_file = parts_dir / "ranges.npy"
    if todo:
        from mme5.model.load import load

        embedder = load(model, dtype=dtype, device=device)  # type: ignore[arg-type]
        out_dim = check_dim(dim, int(embedder.encoder.hidden_size))
        parts_dir.mkdir(parents=True, exist_ok=True)
        if not options_file.is_file():
            _write_text(options_file, json.dumps(options, indent=1))
        prompt = embedder.resolve_instruction(instruction)
        cal: np.ndarray | None = given_ranges
        if cal is None and ranges_file.is_file():
            cal = np.load(ranges_file)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, initial=reused, unit="item", desc=f"encode {source.path.name}")
        t_enc, cpu_enc = time.perf_counter(), time.process_time()
        try:
            for k in todo:
                rows = source.rows[k * part_size : (k + 1) * part_size]
                floats, ids, skipped = _encode_part(
                    embedder, rows, source.image_root, prompt, batch_size, bar
                )
                encoded += len(ids)
                floats = truncate(floats, out_dim) if len(ids) else np.zeros((0, out_dim), np.float32)
                if precision in ("int8", "uint8") and cal is None and len(ids):
                    if len(ids) < 2:
                        raise ConfigError(
                            f"int8 calibration needs at least 2 embeddings in the first part, got "
                            f"{len(ids)}: raise --part_size or pass --ranges"
                        )
                    cal = calibration_ranges(floats)
                    _save_npy(ranges_file, cal)
                emb = quantize(floats, precision, cal) if len(ids) else _empty(out_dim, precision)
                _save_npz(
                    part_paths[k],
                    emb=emb,
                    ids=np.array(ids, dtype=np.str_),
                    skipped_ids=np.array([s[0] for s in skipped], dtype=np.str_),
                    skipped_reasons=np.array([s[1] for s in skipped], dtype=np.str_),
                    skipped_messages=np.array([s[2] for s in skipped], dtype=np.str_),
                )
        finally:
            if bar is not None:
                bar.close()
        encode_seconds = time.perf_counter() - t_enc
        encode_cpu = time.process_time() - cpu_enc
    else:
        encode_seconds = encode_cpu = 0.0
    report = _assemble(out, parts_dir, part_paths, precision, given_ranges, options, out_dim)
    report.encoded, report.reused, report.encode_seconds = encoded, reused, encode_seconds
    report.encode_cpu_seconds = encode_cpu
    report.seconds = time.perf_counter() - t0
    meta = _sibling(out, ".meta.json")
    _write_text(meta, json.dumps(asdict(report), indent=1))
    shutil.rmtree(parts_dir)
    return report


def _empty(dim: int, precision: str) -> np.ndarray:
    width = dim if precision in ("float32", "int8", "uint8") else (dim + 7) // 8
    return np.zeros((0, width), dtype=DTYPES[precision])


def _encode_part(
    embedder: Any, rows: list[Row], root: Path, prompt: str | None, batch_size: int, bar: Any
) -> tuple[np.ndarray, list[str], list[tuple[str, str, str]]]:
    """Float embeddings of the readable rows of one part, their ids, and (id, reason, message) skips."""
    out: list[np.ndarray] = []
    ids: list[str] = []
    skipped: list[tuple[str, str, str]] = []
    for start in range(0, len(rows), batch_size):
        sides, batch_ids = [], []
        for row in rows[start : start + batch_size]:
            try:
                sides.append(load_side(row, root, prompt))
                batch_ids.append(row.id)
            except RowError as exc:
                skipped.append((row.id, exc.reason, str(exc)))
        if sides:
            emb = embedder.encode_sides(sides, batch_size=batch_size, progress=False)
            out.append(np.asarray(emb.float().cpu().numpy() if hasattr(emb, "numpy") else emb, np.float32))
            ids += batch_ids
        if bar is not None:
            bar.update(min(batch_size, len(rows) - start))
    floats = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    return floats, ids, skipped


def _assemble(
    out: Path,
    parts_dir: Path,
    part_paths: list[Path],
    precision: str,
    given_ranges: np.ndarray | None,
    options: dict[str, Any],
    dim: int | None,
) -> EncodeReport:
    embs, ids, skipped = [], [], []
    for p in part_paths:
        with np.load(p, allow_pickle=False) as z:
            embs.append(z["emb"])
            ids += [str(x) for x in z["ids"]]
            skipped += list(
                zip(
                    (str(x) for x in z["skipped_ids"]),
                    (str(x) for x in z["skipped_reasons"]),
                    (str(x) for x in z["skipped_messages"]),
                    strict=True,
                )
            )
    emb = np.concatenate(embs) if embs else np.zeros((0, 0), DTYPES[precision])
    width = emb.shape[1]
    out_dim = dim if dim is not None else (width if precision in ("float32", "int8", "uint8") else width * 8)
    files = output_files(out, precision)
    if out.suffix == ".npy":
        _save_npy(out, emb)
        _write_text(_sibling(out, ".ids.json"), json.dumps(ids, ensure_ascii=False))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        values = pa.array(emb.reshape(-1))
        table = pa.table(
            {"id": pa.array(ids, pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(values, width)}
        )
        with atomic_open(out, "wb") as f:
            pq.write_table(table, f)
    _write_text(
        _sibling(out, ".skipped.jsonl"),
        "".join(
            json.dumps({"id": i, "reason": r, "message": m}, ensure_ascii=False) + "\n" for i, r, m in skipped
        ),
    )
    if precision in ("int8", "uint8"):
        cal = given_ranges if given_ranges is not None else np.load(parts_dir / "ranges.npy")
        _save_npy(_sibling(out, ".ranges.npy"), cal)
    return EncodeReport(
        output=str(out),
        rows=int(options["input"]["rows"]),
        written=len(ids),
        encoded=0,
        reused=0,
        skipped=len(skipped),
        skip_reasons=dict(Counter(r for _, r, _ in skipped)),
        parts=len(part_paths),
        dim=int(out_dim),
        precision=precision,
        bytes_per_vector=bytes_per_vector(int(out_dim), precision),
        files=[str(f) for f in files],
    )
