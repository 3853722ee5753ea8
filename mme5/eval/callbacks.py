"""Lightning callbacks that run MMEB / XTD evaluation during ``fit``.

They call ``pl_module.embed_sides(sides, batch_size)`` (the EmbeddingModule's evaluation entry), on
every rank: the distinct items are split over ranks and all-gathered, the metrics reduced across
ranks. Rank 0 writes ``<bench>_step<N>.json`` / ``.md``, ``<bench>_history.json`` and a plot of the
scores over training steps (``<bench>_scores.png``) into ``output_dir`` (default:
``<trainer.log_dir>/eval``), and logs the headline numbers (``mmeb/Overall``, ``xtd/mean_R@10``, ...)
to the trainer's loggers and ``trainer.callback_metrics`` (so a ModelCheckpoint can monitor them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from mme5.atomic import write_text
from mme5.distributed import DistContext
from mme5.errors import ConfigError, MissingPathError
from mme5.eval.cache import EmbeddingCache, model_fingerprint, resolve_cache_dir
from mme5.eval.datasets import XTD_LANGUAGES, Benchmark
from mme5.eval.items import check_images
from mme5.eval.metrics import TieRule, resolve_tie_rule
from mme5.eval.report import headline, markdown_report, plot_history, write_json
from mme5.eval.runner import EvalResult, covers, load_mmeb, load_xtd, run_benchmark
from mme5.records import Side

log = logging.getLogger("mme5.eval")

#: How many image paths (evenly spread over the benchmark's items) ``setup`` checks before training.
SETUP_IMAGE_SAMPLE = 256


def _check_image_sample(items: Sequence[Any], image_root: str | None, what: str) -> None:
    """:func:`check_images` on :data:`SETUP_IMAGE_SAMPLE` of the items' images, evenly spread."""
    with_images = [it for it in items if it.image_path]
    step = max(1, len(with_images) // SETUP_IMAGE_SAMPLE)
    check_images(with_images[::step][:SETUP_IMAGE_SAMPLE], image_root, what=what)


class _BenchmarkEvaluation(Callback):
    benchmark = ""

    def __init__(
        self,
        image_root: str | None,
        every_n_steps: int | None,
        on_fit_end: bool,
        max_rows: int | None,
        batch_size: int,
        output_dir: str | None,
        cache_dir: str | None,
        tie_rule: TieRule = "official",
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ConfigError(
                f"{type(self).__name__}: every_n_steps must be >= 1 or None, got {every_n_steps}"
            )
        if batch_size < 1:
            raise ConfigError(f"{type(self).__name__}: batch_size must be >= 1, got {batch_size}")
        self.image_root = image_root
        self.every_n_steps = every_n_steps
        self.on_fit_end_enabled = on_fit_end
        self.max_rows = max_rows
        self.batch_size = batch_size
        self.output_dir = output_dir
        self.cache_dir = cache_dir
        self.tie_rule: TieRule = tie_rule
        resolve_tie_rule(self.benchmark, tie_rule)  # a bad value fails when the callback is built
        self.history: list[dict[str, float]] = []
        self.last_result: Any = None
        self._bench: Any = None
        self._last_step: int | None = None

    # ---- what subclasses provide ---------------------------------------------------------------
    def _load(self) -> Benchmark:
        raise NotImplementedError

    # ---- hooks -----------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not callable(getattr(pl_module, "embed_sides", None)):
            raise ConfigError(
                f"{type(self).__name__} needs a LightningModule with embed_sides(sides, batch_size) "
                f"(mme5.training.module.EmbeddingModule); got {type(pl_module).__name__}"
            )
        if self._bench is None:
            self._bench = self._load()
        self.check_inputs()

    def check_inputs(self) -> None:
        """Fail before the first step, with one line naming the path, when the image root is not a folder
        or a sample of the benchmark's image paths (:data:`SETUP_IMAGE_SAMPLE`, evenly spread) does not
        resolve under it."""
        name = type(self).__name__
        if self.image_root is not None and not Path(self.image_root).is_dir():
            raise MissingPathError(
                f"{name}: image_root '{self.image_root}' is not a folder "
                f"(the folder the {self.benchmark.upper()} image paths are relative to)"
            )
        if self._bench is None:
            return
        _check_image_sample(self._bench.items.items, self.image_root, name)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_end, not on_fit_end: at on_fit_end Lightning has already moved the model to the CPU
        if self.on_fit_end_enabled and trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._last_step = state_dict.get("last_step")

    # ---- the evaluation --------------------------------------------------------------------------
    def out_dir(self, trainer: pl.Trainer) -> Path:
        """Where reports go: ``output_dir``, else ``<log_dir or default_root_dir>/eval``."""
        if self.output_dir is not None:
            return Path(self.output_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "eval"

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> EvalResult:
        """Evaluate the module now (every rank must call this), report on rank 0, log the headline."""
        if self._bench is None:
            self._bench = self._load()
        step = trainer.global_step
        was_training = pl_module.training
        pl_module.eval()

        def embed(sides: list[Side]) -> torch.Tensor:
            embed_sides: Any = pl_module.embed_sides
            return embed_sides(sides, self.batch_size)

        cache, fingerprint = None, None
        cache_folder = resolve_cache_dir(self.cache_dir)
        if cache_folder is not None:
            cache = EmbeddingCache(cache_folder)
            encoder: Any = getattr(pl_module, "encoder", None)
            fingerprint = (
                encoder.fingerprint()
                if callable(getattr(encoder, "fingerprint", None))
                else model_fingerprint(pl_module)
            )
        try:
            result = self._run(embed, cache, fingerprint, step)
        finally:
            pl_module.train(was_training)
        self._last_step = step
        self.last_result = result
        numbers = self._headline(result)
        self.history.append({"step": step, **numbers})
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in numbers.items()})
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(numbers, step=step)
            self._write(trainer, result)
        return result

    def _run(self, embed: Any, cache: EmbeddingCache | None, fingerprint: str | None, step: int) -> Any:
        return run_benchmark(
            self.benchmark,
            embed,
            self._bench,  # type: ignore[arg-type]
            self.image_root,
            self.batch_size,
            cache,
            fingerprint,
            DistContext.current(),
            step=step,
            tie_rule=self.tie_rule,
        )

    def _headline(self, result: Any) -> dict[str, float]:
        return headline(**{self.benchmark: result})

    def _write(self, trainer: pl.Trainer, result: EvalResult) -> None:
        out = self.out_dir(trainer)
        name = self.benchmark
        write_json(out / f"{name}_step{result.step}.json", **{name: result})
        write_text(
            out / f"{name}_step{result.step}.md",
            markdown_report(**{name: result}, title=f"{name.upper()} at step {result.step}"),
        )
        write_text(out / f"{name}_history.json", json.dumps(self.history, indent=1))
        plot_history(self.history, out / f"{name}_scores.png", title=f"{name.upper()} during training")
        log.info(
            "%s at step %d: %s",
            name,
            result.step,
            ", ".join(f"{k} {v:.1f}" for k, v in self._headline(result).items()),
        )


class MMEBEvaluation(_BenchmarkEvaluation):
    """Evaluate on MMEB (public layout) during fit: Precision@1 per dataset, meta-task / IND / OOD / overall.

    Args:
        mmeb_dir: folder with one parquet (or HF dataset folder) per dataset.
        image_root: folder the image paths in the parquet files are relative to: the official
            ``images.zip`` of TIGER-Lab/MMEB-eval unpacked (``unzip images.zip -d eval_images/``); XTD's
            callback has its own. Checked at setup, before the first training step.
        datasets: dataset names to evaluate; None: the 36 official ones found in the folder plus those in
            its datasets.json (requested but absent ones are reported as missing).
        every_n_steps: also evaluate every N optimizer steps (None: only at the end of training).
        on_fit_end: evaluate when training ends.
        max_rows: evaluate only the first N rows of each dataset (None: all).
        batch_size: sides per ``embed_sides`` call.
        output_dir: where JSON, markdown and the plot go (default: ``<log_dir>/eval``).
        cache_dir: on-disk embedding cache (keyed by the model's fingerprint): a folder, "auto" (the
            user cache directory, ``$MME5_CACHE/embeddings`` or ``~/.cache/mme5/embeddings``), or None
            (no cache: the weights change between evaluations of a fit).
        tie_rule: how exact ties with the truth rank: "official" (the benchmark's own rule),
            "truth_wins" or "truth_loses".
    """

    benchmark = "mmeb"

    def __init__(
        self,
        mmeb_dir: str,
        image_root: str | None = None,
        datasets: Sequence[str] | None = None,
        every_n_steps: int | None = None,
        on_fit_end: bool = True,
        max_rows: int | None = None,
        batch_size: int = 64,
        output_dir: str | None = None,
        cache_dir: str | None = None,
        tie_rule: TieRule = "official",
    ) -> None:
        super().__init__(
            image_root, every_n_steps, on_fit_end, max_rows, batch_size, output_dir, cache_dir, tie_rule
        )
        self.mmeb_dir = mmeb_dir
        self.datasets = list(datasets) if datasets is not None else None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(mmeb_dir=str(self.mmeb_dir), datasets=self.datasets)

    def _load(self) -> Benchmark:
        return load_mmeb(self.mmeb_dir, self.datasets, self.max_rows)


class XTDEvaluation(_BenchmarkEvaluation):
    """Evaluate on XTD (text -> image, one folder entry per language) during fit: Recall@1/5/10, mean R@10.

    Args:
        xtd_dir: folder with ``<lang>.parquet`` or ``<lang>/test-*.parquet``.
        image_root: folder the image paths are relative to: the official ``XTD10_dataset.tar.gz`` of
            Haon-Chen/XTD-10 unpacked (``XTD10_dataset/``); MMEB's callback has its own. Checked at
            setup, before the first training step.
        languages: languages to evaluate (absent ones are reported as missing).
        every_n_steps: also evaluate every N optimizer steps (None: only at the end of training).
        on_fit_end: evaluate when training ends.
        max_rows: evaluate only the first N rows per language (None: all).
        batch_size: sides per ``embed_sides`` call.
        output_dir: where JSON, markdown and the plot go (default: ``<log_dir>/eval``).
        cache_dir: on-disk embedding cache (keyed by the model's fingerprint): a folder, "auto" (the
            user cache directory, ``$MME5_CACHE/embeddings`` or ``~/.cache/mme5/embeddings``), or None
            (no cache: the weights change between evaluations of a fit).
        tie_rule: how exact ties with the truth rank: "official" (the benchmark's own rule),
            "truth_wins" or "truth_loses".
    """

    benchmark = "xtd"

    def __init__(
        self,
        xtd_dir: str,
        image_root: str | None = None,
        languages: Sequence[str] = XTD_LANGUAGES,
        every_n_steps: int | None = None,
        on_fit_end: bool = True,
        max_rows: int | None = None,
        batch_size: int = 64,
        output_dir: str | None = None,
        cache_dir: str | None = None,
        tie_rule: TieRule = "official",
    ) -> None:
        super().__init__(
            image_root, every_n_steps, on_fit_end, max_rows, batch_size, output_dir, cache_dir, tie_rule
        )
        self.xtd_dir = xtd_dir
        self.languages = list(languages)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(xtd_dir=str(self.xtd_dir), languages=self.languages)

    def _load(self) -> Benchmark:
        return load_xtd(self.xtd_dir, self.languages, self.max_rows)


class MMEBV2Evaluation(_BenchmarkEvaluation):
    """Evaluate on MMEB-V2 during fit: hit@1 (image, video) / ndcg_linear@5 (visual documents) per task,
    per-kind, per-meta-task and overall means (:mod:`mme5.eval.v2`); logged as ``mmeb_v2/<key>``.

    Args:
        root: MMEB-V2 folder of video and visual-document tasks (layout: :mod:`mme5.eval.v2.readers`).
        image_dir: the image tasks' MMEB folder (None: the image tasks are listed as missing).
        image_root: folder the image tasks' image paths are relative to.
        tasks: task names (default: all 78; absent ones are listed as missing); kinds: only these kinds.
        work_dir: where the tiled video frames go (default: ``<output dir>/v2_frames``).
        frame_input: a video as its frame list ("frames") or tiled into one image ("tiled").
        every_n_steps, on_fit_end, max_rows, batch_size, output_dir, cache_dir: as for
            :class:`MMEBEvaluation`.
    """

    benchmark = "mmeb_v2"

    def __init__(
        self,
        root: str | None,
        image_dir: str | None = None,
        image_root: str | None = None,
        tasks: Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        work_dir: str | None = None,
        frame_input: str = "frames",
        every_n_steps: int | None = None,
        on_fit_end: bool = True,
        max_rows: int | None = None,
        batch_size: int = 64,
        output_dir: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        from mme5.eval.v2 import resolve_v2_tasks

        super().__init__(image_root, every_n_steps, on_fit_end, max_rows, batch_size, output_dir, cache_dir)
        self.root, self.image_dir, self.work_dir = root, image_dir, work_dir
        if frame_input not in ("frames", "tiled"):
            raise ConfigError(f"MMEBV2Evaluation: frame_input is 'frames' or 'tiled', not '{frame_input}'")
        self.frame_input: Any = frame_input
        self.tasks = resolve_v2_tasks(tasks, kinds)  # a bad name fails when the callback is built
        self._trainer_out: Path | None = None
        self._mmeb_callbacks: list[MMEBEvaluation] = []
        self._video_input = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(root=str(self.root), tasks=[t.name for t in self.tasks])

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from mme5.eval.v2.runner import takes_video

        self._trainer_out = self.out_dir(trainer)
        self._video_input = takes_video(pl_module)  # its backbone takes frame lists as videos
        self._mmeb_callbacks = [cb for cb in trainer.callbacks if isinstance(cb, MMEBEvaluation)]  # type: ignore[attr-defined]
        super().setup(trainer, pl_module, stage)

    def check_inputs(self) -> None:
        """As for MMEB, but each part against its own root: the video frames and document pages as read
        (their paths are whole), the image tasks of ``image-query/`` under the V2 root's image folder
        and those of ``image_dir`` under ``image_root`` (checked when they are read, at the first
        evaluation, or by an :class:`MMEBEvaluation` of the same folder)."""
        name = type(self).__name__
        if self.image_root is not None and not Path(self.image_root).is_dir():
            raise MissingPathError(f"{name}: image_root '{self.image_root}' is not a folder")
        if self._bench is None:
            return
        _check_image_sample(self._bench.items.items, None, name)
        if self._bench.image_bench is not None:
            _check_image_sample(self._bench.image_bench.items.items, self._bench.v2_image_root, name)

    def _same_step_image_result(self, step: int) -> EvalResult | None:
        """An MMEB run of this fit at ``step`` over the same folder, images and rows that scored every
        V2 image task under the tie rule V2 uses: its scores are the V2 image tasks' (not encoded again)."""
        tasks = self._bench.image_tasks if self._bench is not None else []
        for cb in self._mmeb_callbacks:
            result = cb.last_result
            same_source = (cb.mmeb_dir, cb.image_root, cb.max_rows) == (
                self.image_dir,
                self.image_root,
                self.max_rows,
            )
            if result is not None and result.step == step and same_source and covers(result, tasks):
                return result
        return None

    def _load(self) -> Any:
        from mme5.eval.v2 import load_mmeb_v2

        work = self.work_dir or (self._trainer_out or Path(self.output_dir or ".")) / "v2_frames"
        return load_mmeb_v2(self.root, self.tasks, work, self.image_dir, self.max_rows)

    def _run(self, embed: Any, cache: EmbeddingCache | None, fingerprint: str | None, step: int) -> Any:
        from mme5.eval.v2 import run_mmeb_v2

        return run_mmeb_v2(
            embed,
            self._bench,
            self.image_root,
            self.batch_size,
            cache,
            fingerprint,
            DistContext.current(),
            max_rows=self.max_rows,
            step=step,
            image_result=self._same_step_image_result(step),
            frame_input=self.frame_input,
            video_input=self._video_input,
        )

    def _headline(self, result: Any) -> dict[str, float]:
        return {f"mmeb_v2/{k}": v for k, v in result.summary.items()}

    def _write(self, trainer: pl.Trainer, result: Any) -> None:
        from mme5.eval.v2 import write_v2

        out = self.out_dir(trainer)
        write_v2(out, result, stem=f"mmeb_v2_step{result.step}")
        write_text(out / "mmeb_v2_history.json", json.dumps(self.history, indent=1))
        plot_history(self.history, out / "mmeb_v2_scores.png", title="MMEB-V2 during training")
        log.info(
            "mmeb_v2 at step %d: %s",
            result.step,
            ", ".join(f"{k} {v:.1f}" for k, v in self._headline(result).items()),
        )
