"""The `mme5` command: one verb per module of :mod:`mme5.cli`, listed in :data:`VERBS`.

    mme5 demo --root .mme5-demo
    mme5 fit --config configs/demo.yaml
    mme5 export --ckpt runs/demo/lightning_logs/version_0/checkpoints/last.ckpt --out exported/demo
    mme5 evaluate --model exported/demo --demo_root .mme5-demo
    mme5 <verb> --help
    mme5 --verbose <verb> ...      (or mme5 <verb> ... --verbose: third-party logs and progress bars too)

Each verb module has ``main(argv) -> int``; :func:`main` imports only the one asked for and runs it
through :func:`mme5.errors.run_command`, the one place where user errors become one line. Before that,
:func:`mme5.logs.configure` filters third-party noise unless ``--verbose`` is given.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from mme5 import __version__, logs
from mme5.errors import run_command

# A child process of an mme5 command (a spawned evaluation worker re-imports this module) keeps the
# parent's verbosity: the filters are per process, the choice travels in the environment.
if logs.ENV in os.environ:
    logs.configure()

#: verb -> (module whose ``main(argv)`` runs it, one-line summary for ``mme5 --help``).
VERBS: dict[str, tuple[str, str]] = {
    "fit": ("mme5.cli.fit", "train an embedding model from a YAML config (LightningCLI)"),
    "validate": ("mme5.cli.validate", "run a config's validation loop, e.g. on a checkpoint (LightningCLI)"),
    "export": ("mme5.cli.export", "write a training checkpoint as a Hugging Face-style model folder"),
    "evaluate": ("mme5.cli.evaluate", "score a model on MMEB, MMEB-V2 and/or XTD and print the tables"),
    "eval-quantized": ("mme5.cli.eval_quantized", "compare a model at full precision, int8 and nf4"),
    "encode": ("mme5.cli.encode", "embed texts and images (parquet, JSONL, CSV, a folder) to .npy / parquet"),
    "convert": ("mme5.cli.convert", "turn public parquet training sets into mme5 shards"),
    "synthesize": ("mme5.cli.synthesize", "generate synthetic training shards from images with a VLM"),
    "demo": ("mme5.cli.demo", "generate the demo corpus (no download) and print where it is"),
    "mine": ("mme5.cli.mine", "mine hard negatives for a shard set with a model into a new shard set"),
}


def usage() -> str:
    """The text of ``mme5 --help``."""
    width = max(map(len, VERBS))
    verbs = "\n".join(f"  {verb:<{width}}  {summary}" for verb, (_, summary) in VERBS.items())
    return (
        f"usage: mme5 <verb> [options]    (mme5 <verb> --help for the verb's options)\n\n"
        f"multimodal, multilingual embedding models trained the mmE5 way (mme5 {__version__})\n\n"
        f"verbs:\n{verbs}\n\noptions:\n  -h, --help  show this message\n  --version   print the version\n"
        f"  --verbose   keep third-party logs and progress bars (before or after the verb; MME5_VERBOSE=1)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mme5` console script (``argv``: ``sys.argv[1:]``); returns the exit code."""
    verbose, args = logs.take_verbose(sys.argv[1:] if argv is None else argv)
    logs.configure(True if verbose else None)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "--version":
        print(f"mme5 {__version__}")
        return 0
    verb = args[0]
    if verb not in VERBS:
        print(
            f"mme5: error: unknown verb '{verb}'; expected one of {', '.join(VERBS)} (mme5 --help)",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(VERBS[verb][0])
    return run_command(f"mme5 {verb}", lambda: module.main(args[1:]))


if __name__ == "__main__":
    sys.exit(main())
