"""``mme5 encode`` throughput: items/s per input kind, precision and Matryoshka dimension, on this machine.

    python tools/bench_encode.py --model exported/demo      # writes runs/bench/encode.{csv,png}

Two inputs are generated in ``work_dir``: a JSONL of short multilingual texts and a folder of 64 px
PNG images. For each (input, dim, precision) the whole pipeline of :func:`mme5.embed.encode_file`
(read, decode, embed, truncate, quantize, write atomic parts, assemble) runs ``repeats`` times; the
clock is ``EncodeReport.encode_seconds`` (model loading left out). Each CSV row names the device and
the bytes per vector of its setting. Wall-clock items/s depend on what else the machine runs (the CSV
records the load average); ``cpu_ms_per_item`` (this process's CPU time, all threads, per item) is the
steadier figure on a shared machine.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

WORDS = [
    "red",
    "circle",
    "blue",
    "square",
    "gatto",
    "rosso",
    "Кошка",
    "一杯",
    "café",
    "árbol",
    "small",
    "near",
]


def _inputs(work: Path, texts: int, images: int) -> dict[str, Path]:
    from PIL import Image

    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    jsonl = work / f"texts-{texts}.jsonl"
    if not jsonl.exists():
        lines = [
            json.dumps({"id": f"t{i}", "text": " ".join(rng.choice(WORDS, 4 + i % 9))}, ensure_ascii=False)
            for i in range(texts)
        ]
        jsonl.write_text("\n".join(lines) + "\n")
    folder = work / f"images-{images}"
    if not folder.exists():
        folder.mkdir()
        for i in range(images):
            arr = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"img{i:05d}.png")
    return {"texts": jsonl, "images": folder}


def _tiny_export(work: Path) -> Path:
    folder = work / "tiny-llava-export"
    if not (folder / "mme5_config.json").exists():
        from mme5.model.encoder import Encoder
        from mme5.model.export import export

        export(Encoder("tiny-llava", max_length=32), folder, instructions={})
    return folder


def main(
    model: str | None = None,
    out_dir: str = "runs/bench",
    work_dir: str = ".mme5-cache/bench-encode",
    texts: int = 512,
    images: int = 128,
    batch_size: int = 32,
    precisions: tuple[str, ...] = ("float32", "int8", "ubinary"),
    dims: tuple[int, ...] = (0, 16),
    repeats: int = 3,
    device: str = "cpu",
) -> None:
    """Measure ``mme5 encode`` items/s per input, dim and precision; write ``encode.csv`` and ``encode.png``.

    Args:
        model: an export folder (default: a tiny-llava export built in work_dir).
        out_dir: where encode.csv and encode.png go.
        work_dir: where the generated inputs (and the default export) are kept.
        texts: rows of the text input.
        images: images of the image-folder input.
        batch_size: items per forward pass.
        precisions: embedding precisions to time.
        dims: Matryoshka dimensions to time (0: the model's full dimension).
        repeats: runs per configuration (median, p20, p80 over them).
        device: where the model runs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mme5.embed.writer import encode_file
    from mme5.eval.quantized import device_name

    work = Path(work_dir)
    model_dir = Path(model) if model is not None else _tiny_export(work)
    inputs = _inputs(work, texts, images)
    dev = device_name()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in inputs.items():
            for dim in dims:
                for precision in precisions:
                    rates, cpu_ms, report = [], [], None
                    for r in range(repeats):
                        out = Path(tmp) / f"{kind}-{dim}-{precision}-{r}.npy"
                        report = encode_file(
                            model_dir,
                            path,
                            out,
                            batch_size=batch_size,
                            device=device,
                            dim=dim or None,
                            precision=precision,
                            progress=False,
                        )
                        rates.append(report.encoded / report.encode_seconds)
                        cpu_ms.append(1000 * report.encode_cpu_seconds / report.encoded)
                    assert report is not None
                    s = sorted(rates)
                    med = statistics.median(s)
                    p20 = float(np.quantile(s, 0.2))
                    p80 = float(np.quantile(s, 0.8))
                    rows.append(
                        {
                            "what": "mme5 encode (read+embed+quantize+write)",
                            "provider": f"{kind}",
                            "size": f"dim {report.dim} {precision}",
                            "dim": report.dim,
                            "precision": precision,
                            "bytes_per_vector": report.bytes_per_vector,
                            "items": report.encoded,
                            "batch_size": batch_size,
                            "unit": "items/s",
                            "median": round(med, 2),
                            "p20": round(p20, 2),
                            "p80": round(p80, 2),
                            "cpu_ms_per_item": round(statistics.median(cpu_ms), 3),
                            "load_avg_1min": round(os.getloadavg()[0], 1),
                            "device": dev,
                            "model": str(model_dir),
                        }
                    )
                    print(
                        f"{kind} dim {report.dim} {precision}: {med:.1f} items/s "
                        f"(p20 {p20:.1f}, p80 {p80:.1f}), {statistics.median(cpu_ms):.2f} CPU ms/item, "
                        f"{report.bytes_per_vector} bytes/vector"
                    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "encode.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    labels = [f"{r['provider']}\n{r['size']}" for r in rows]
    ax.bar(range(len(rows)), [r["median"] for r in rows], color="tab:blue")
    ax.errorbar(
        range(len(rows)),
        [r["median"] for r in rows],
        yerr=[[r["median"] - r["p20"] for r in rows], [r["p80"] - r["median"] for r in rows]],
        fmt="none",
        ecolor="black",
        capsize=3,
    )
    ax.set_xticks(range(len(rows)), labels, fontsize=6)
    ax.set_ylabel("items / s")
    ax.set_title(f"mme5 encode on {dev}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "encode.png", dpi=110)
    plt.close(fig)
    print(f"wrote {out / 'encode.csv'} and {out / 'encode.png'}")


if __name__ == "__main__":
    from mme5.cli.parsing import run_function

    run_function(main, __import__("sys").argv[1:], "bench_encode.py")
