"""``mme5 evaluate``: MMEB and XTD on an exported folder, a checkpoint or a backbone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mme5.errors import ConfigError
from mme5.eval.datasets import XTD_LANGUAGES
from mme5.eval.metrics import TieRule
from mme5.eval.runner import EvalResult, covers
from mme5.eval.v2.runner import FrameInput, V2Result
from mme5.model.settings import DType, Quantization


def evaluate(
    model: str,
    mmeb_dir: str | None = None,
    xtd_dir: str | None = None,
    image_root: str | None = None,
    mmeb_image_root: str | None = None,
    xtd_image_root: str | None = None,
    demo_root: str | None = None,
    mmeb_v2_root: str | None = None,
    v2_tasks: list[str] | None = None,
    v2_kinds: list[str] | None = None,
    v2_frame_input: FrameInput = "frames",
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
) -> dict[str, EvalResult | V2Result]:
    """Evaluate an embedding model on MMEB, XTD and/or MMEB-V2 and print the tables.

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
        mmeb_v2_root: MMEB-V2 folder: video-tasks/ (mme5 rows or the official hub snapshots, frames under
            video-tasks/frames/), visdoc-tasks/, and image-query/ + image-tasks/ for the image tasks
            (without image-query/ they are read from mmeb_dir). "demo": the drawn V2 demo subset of
            the demo corpus (<demo_root>/mmeb_v2, or <output_dir>/mmeb_v2_demo). Skipped when None.
        v2_tasks: MMEB-V2 tasks to evaluate (default: all 78; absent ones are listed as missing).
        v2_kinds: only these MMEB-V2 kinds (image, video, visdoc).
        v2_frame_input: how a video reaches the model: "frames" (its 8 sampled frames as a frame list:
            one video through the backbone's video input for Qwen2-VL / Qwen2.5-VL, one image per
            frame otherwise) or "tiled" (the frames tiled into one image, for a one-image model).
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
    if mmeb_dir is None and xtd_dir is None and mmeb_v2_root is None:
        raise ConfigError("nothing to evaluate: give --mmeb_dir, --xtd_dir, --mmeb_v2_root or --demo_root")
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
    report = markdown_report(**results, title=loaded.description) if results else ""
    print(report)
    if output_dir is not None and results:
        out = Path(output_dir)
        write_json(out / "results.json", **results)
        write_text(out / "results.md", report)
        print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    everything: dict[str, EvalResult | V2Result] = dict(results)
    if mmeb_v2_root is not None:
        everything["mmeb_v2"] = _evaluate_v2(
            loaded,
            mmeb_v2_root,
            demo_root,
            mmeb_dir,
            mmeb_root,
            v2_tasks,
            v2_kinds,
            v2_frame_input,
            results.get("mmeb"),
            output_dir,
            common,
        )
    return everything


def _evaluate_v2(
    loaded, root, demo_root, mmeb_dir, mmeb_root, tasks, kinds, frame_input, mmeb_result, output_dir, common
) -> V2Result:
    """MMEB-V2 (image tasks from ``mmeb_dir``, reusing the MMEB run when there was one)."""
    from mme5.eval.cache import EmbeddingCache, resolve_cache_dir
    from mme5.eval.v2 import load_mmeb_v2, resolve_v2_tasks, run_mmeb_v2, v2_table, write_v2
    from mme5.eval.v2.runner import default_work_dir, takes_video

    if root == "demo":
        from mme5.demo.v2 import build_v2_demo

        if demo_root:
            from mme5.demo import open_demo_corpus

            base = open_demo_corpus(demo_root).mmeb_v2_dir  # made with the corpus (older ones: now)
        else:
            base = default_work_dir(output_dir).parent / "mmeb_v2_demo"
        root = str(build_v2_demo(base))
    chosen = resolve_v2_tasks(tasks, kinds)
    bench = load_mmeb_v2(root, chosen, default_work_dir(output_dir), mmeb_dir, common["max_rows"])
    if not bench.sets and not bench.image_tasks:
        raise ConfigError(
            f"none of the {len(chosen)} requested MMEB-V2 task(s) is in '{root}' (video-tasks/, "
            f"visdoc-tasks/, image-query/) or in the MMEB folder '{mmeb_dir}'"
        )
    folder = resolve_cache_dir(common["cache_dir"])
    result = run_mmeb_v2(
        loaded.embed,
        bench,
        mmeb_root,
        common["batch_size"],
        EmbeddingCache(folder) if folder is not None else None,
        common["fingerprint"],
        max_rows=common["max_rows"],
        image_result=mmeb_result if covers(mmeb_result, bench.image_tasks) else None,
        frame_input=frame_input,
        video_input=takes_video(loaded.module),
    )
    print(v2_table(result))
    if output_dir is not None:
        js, md = write_v2(output_dir, result)
        print(f"wrote {js} and {md}")
    return result


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
