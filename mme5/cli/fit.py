"""``mme5 fit``: train with LightningCLI over EmbeddingModule and ShardDataModule.

    mme5 fit --config configs/demo.yaml
    mme5 fit --config configs/mme5-llama-3.2-11b-vision.yaml --print_config

Everything a run writes (logs, checkpoints, evaluation reports, the resolved config) goes under
``trainer.default_root_dir`` unless the config names another folder.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

import mme5.cli.parsing  # noqa: F401 - jsonargparse's settings (attribute docstrings in --help)
from mme5.errors import ConfigError
from mme5.logs import check_logger_packages

# Lightning 2.6 still builds torch's deprecated LeafSpec on every batch transfer (harmless; a line per rank).
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
)
# The verb registry hands LightningCLI its arguments explicitly (they are sys.argv minus the verb), which
# Lightning warns about on every run as if they could disagree.
warnings.filterwarnings(
    "ignore", message=r"LightningCLI's args parameter is intended to run from within Python"
)

#: The LightningCLI subcommands mme5 offers (``test`` / ``predict`` have nothing to run here).
SUBCOMMANDS = ("fit", "validate")


class MME5CLI(LightningCLI):
    """LightningCLI with the encoder's model linked into the DataModule (it builds the collator), and only
    the ``fit`` / ``validate`` subcommands."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("model.encoder.model", "data.model")
        parser.link_arguments("model.encoder.max_length", "data.max_length")

    def after_fit(self) -> None:
        """Save the end-of-training state as ``last.ckpt`` and print the final evaluation tables."""
        self._save_final_checkpoint()
        if self.trainer.is_global_zero:
            self._print_final_evaluation()

    def _print_final_evaluation(self) -> None:
        from mme5.eval.callbacks import MMEBEvaluation, MMEBV2Evaluation, XTDEvaluation
        from mme5.eval.report import markdown_report
        from mme5.eval.runner import EvalResult
        from mme5.eval.v2 import v2_table

        found: dict[str, EvalResult] = {}
        trainer: Any = self.trainer
        for cb in trainer.callbacks:
            if isinstance(cb, (MMEBEvaluation, XTDEvaluation)) and cb.last_result is not None:
                found[cb.benchmark] = cb.last_result
        if found:
            title = f"Evaluation after step {self.trainer.global_step}"
            print("\n" + markdown_report(mmeb=found.get("mmeb"), xtd=found.get("xtd"), title=title))
        for cb in trainer.callbacks:
            if isinstance(cb, MMEBV2Evaluation) and cb.last_result is not None:
                print(f"\nMMEB-V2 after step {self.trainer.global_step}\n{v2_table(cb.last_result)}")

    def _save_final_checkpoint(self) -> None:
        cb: Any = self.trainer.checkpoint_callback
        if cb is None or not getattr(cb, "save_last", False) or cb.dirpath is None:
            return
        last = os.path.join(cb.dirpath, cb.CHECKPOINT_NAME_LAST + cb.FILE_EXTENSION)
        self.trainer.save_checkpoint(last, weights_only=False)  # the full state: --ckpt_path resumes from it
        rank_zero_info(f"mme5: final checkpoint (step {self.trainer.global_step}) at {last}")

    def before_instantiate_classes(self) -> None:
        """GPU-only settings on a machine without a visible CUDA GPU, as one line that says what to do."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        trainer = config.get("trainer") if config is not None else None
        if trainer is not None:  # a logger whose package is missing: one line naming the extra
            check_logger_packages(trainer.get("logger"))
        if trainer is None or torch.cuda.is_available():
            return
        accelerator, strategy = str(trainer.get("accelerator")), trainer.get("strategy")
        if accelerator in ("gpu", "cuda"):
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"trainer.accelerator: {accelerator}, but no CUDA GPU is visible (torch "
                f"{torch.__version__} is {build}); run on a GPU machine or set trainer.accelerator: cpu"
            )
        if isinstance(strategy, str) and strategy.startswith(("fsdp", "deepspeed")) and strategy != "fsdp2":
            raise ConfigError(
                f"trainer.strategy: {strategy} needs CUDA GPUs (Lightning runs it on nothing "
                f"else); on CPU use trainer.strategy: ddp or fsdp2"
            )

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The trainer; a fit gets two callbacks unless the config names its own: mme5's progress
        display (a step bar on a terminal, periodic lines otherwise: :mod:`mme5.training.progress`; none
        with ``enable_progress_bar: false``) and a ``LearningRateMonitor`` (the learning rate logged as
        ``lr-<optimizer>`` each logging step; none with ``logger: false``)."""
        from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar

        from mme5.training.progress import default_progress_bar

        config: Any = self._get(self.config_init, "trainer", default={}) or {}
        if "callbacks" in kwargs or self.subcommand != "fit":
            return super().instantiate_trainer(**kwargs)
        callbacks = config.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        present = [*callbacks, *extra]
        added = []
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(cb, ProgressBar) for cb in present
        ):
            added.append(default_progress_bar())
        monitored = any(isinstance(cb, LearningRateMonitor) for cb in present)
        if config.get("logger") is not False and not monitored:
            added.append(LearningRateMonitor(logging_interval="step"))
        if added:
            kwargs["callbacks"] = [*callbacks, *added]
        return super().instantiate_trainer(**kwargs)

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads the hyperparameters of ``--ckpt_path`` before anything else: a checkpoint
        that does not load (missing, refused by ``weights_only``, empty or cut short) stops here, as one
        line; one that loads is read with the allow-list of :mod:`mme5.training.checkpoints`."""
        from mme5.training.checkpoints import SAFE_GLOBALS, check_resume_path

        command = self.config.get("subcommand")
        check_resume_path(self.config[command].get("ckpt_path") if command else None)
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            super()._parse_ckpt_path()

    def _use_safe_checkpoints(self) -> None:
        """Checkpoints are written atomically in their own folder and read with ``weights_only=True``
        (:class:`mme5.training.checkpoints.AtomicCheckpointIO`, also for Lightning's ``last``)."""
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

        from mme5.training.checkpoints import AtomicCheckpointIO

        strategy: Any = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()

    def before_fit(self) -> None:
        """On CPU, leave the data workers their cores: intra-op threads that compete with worker
        processes for the same cores spin in OpenMP barriers and make a step several times slower."""
        self._use_safe_checkpoints()
        if os.environ.get("OMP_NUM_THREADS") or not isinstance(self.trainer.accelerator, CPUAccelerator):
            return
        processes = max(1, self.trainer.num_devices)
        workers = getattr(self.datamodule, "num_workers", 0) or 0
        threads = max(1, (os.cpu_count() or 1) // processes - workers)
        if threads < torch.get_num_threads():
            torch.set_num_threads(threads)
            rank_zero_info(
                f"mme5: {threads} intra-op thread(s) per process ({workers} data worker(s) per process)"
            )


def fit_cli(args: Sequence[str] | None = None, run: bool = True) -> MME5CLI:
    """Build (and by default run) the LightningCLI over EmbeddingModule and ShardDataModule."""
    from mme5.data import ShardDataModule
    from mme5.training.module import EmbeddingModule

    return MME5CLI(
        EmbeddingModule,
        ShardDataModule,
        args=list(args) if args is not None else None,
        run=run,
        save_config_kwargs={"overwrite": True},
        # an argument error is raised (mme5.errors.run_command prints it as one line), not usage + error
        parser_kwargs={
            "prog": "mme5",
            "exit_on_error": False,
            **{name: {"exit_on_error": False} for name in SUBCOMMANDS},
        },
        auto_configure_optimizers=False,
    )


def main(argv: Sequence[str]) -> int:
    """``mme5 fit [--config X.yaml] [--section.option value ...]``."""
    fit_cli(["fit", *argv])
    return 0
