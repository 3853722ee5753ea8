"""Every failure a user meets is one line that names the thing and the fix (issue #17, item 2)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest
import torch

from mme5.cli.main import main
from mme5.cli.parsing import function_parser, lists_from_scalars, run_function
from mme5.devices import DeviceError, check_device
from mme5.errors import ConfigError, short_argument_error
from mme5.logs import check_logger_packages
from tests.helpers import REPO

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")


def _one_line(err: str, prog: str) -> str:
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err
    return err


@no_cuda
@pytest.mark.parametrize("verb", ["evaluate", "eval-quantized"])
def test_device_cuda_without_cuda_is_one_line_before_any_work(verb, tmp_path, capsys):
    args = [verb, "--model", "tiny-llava", "--device", "cuda", "--demo_root", str(tmp_path / "demo")]
    assert main(args) == 2
    err = _one_line(capsys.readouterr().err, f"mme5 {verb}")
    assert "--device cuda: no CUDA GPU is visible" in err and "--device cpu" in err
    assert not (tmp_path / "demo").exists()  # nothing generated, nothing loaded


@no_cuda
def test_a_nested_device_option_is_checked_too(capsys):
    # synthesize's transformers backend takes a device; the check walks nested options
    args = [
        "synthesize",
        "--backend",
        "mme5.synth.backends.TransformersBackend",
        "--backend.init_args.model",
        "tiny-qwen2_vl",
        "--backend.init_args.device",
        "cuda:1",
        "--output_dir",
        "unused",
    ]
    assert main(args) == 2
    err = _one_line(capsys.readouterr().err, "mme5 synthesize")
    assert "--backend.init_args.device cuda:1: no CUDA GPU is visible" in err


def test_check_device():
    assert check_device("auto") == "auto" and check_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="not a device; expected auto, cpu, cuda or cuda:N"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU is visible"):
            check_device("cuda:0", "--device")


def _takes_lists(
    sizes: Sequence[int] = (1, 2),
    datasets: list[str] | None = None,
    names: tuple[str, ...] = (),
    onepass: dict | list[dict] | None = None,
    label: str = "x",
) -> dict:
    """A function with list options.

    Args:
        sizes: integers.
        datasets: names.
        names: more names.
        onepass: a mapping or a list of them.
        label: a plain string.
    """
    return {
        "sizes": list(sizes),
        "datasets": datasets,
        "names": list(names),
        "onepass": onepass,
        "label": label,
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--sizes", "256"], {"sizes": [256]}),
        (["--sizes=256"], {"sizes": [256]}),
        (["--sizes", "[256, 512]"], {"sizes": [256, 512]}),
        (["--datasets", "MSCOCO_t2i"], {"datasets": ["MSCOCO_t2i"]}),
        (["--datasets", "123"], {"datasets": ["123"]}),  # a name, not a number
        (["--datasets", "null"], {"datasets": None}),
        (["--datasets", "A: b"], {"datasets": ["A: b"]}),
        (["--names", "x"], {"names": ["x"]}),
        (["--onepass", '{"block_m": 8}'], {"onepass": {"block_m": 8}}),  # a dict is a valid member
        (["--label", "256"], {"label": "256"}),
    ],
)
def test_a_bare_value_of_a_list_option_is_a_one_item_list(argv, expected):
    got = run_function(_takes_lists, argv, "t")
    assert {k: got[k] for k in expected} == expected


def test_list_rewriting_leaves_appends_and_other_options_alone():
    parser = function_parser(_takes_lists, "t")
    argv = ["--sizes+", "3", "--label", "a", "--sizes", "[4]", "--", "--sizes", "5"]
    assert lists_from_scalars(parser, argv) == argv


def test_a_verb_takes_a_bare_dataset_name(tmp_path, capsys):
    # --datasets X used to fail with "Expected a <class 'list'>"; now it reaches the device check
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    assert main(["evaluate", "--model", "tiny-llava", "--datasets", "MSCOCO_t2i", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "datasets" not in err


def test_a_type_error_is_one_short_line_with_a_pointer_to_help(capsys):
    assert main(["evaluate", "--model", "m", "--max_rows", "many"]) == 2
    err = _one_line(capsys.readouterr().err, "mme5 evaluate")
    assert err == (
        "mme5 evaluate: error: max_rows: expected int or NoneType; got many "
        "(the options: mme5 evaluate --help)\n"
    )


def test_short_argument_error_keeps_the_real_problem():
    message = (
        'Parser key "trainer.logger": Does not validate against any of the Union subtypes Subtypes: '
        "[<class 'Logger'>, <class 'bool'>] Errors: - Problem with given class_path 'x.TensorBoardLogger': "
        "the following arguments are required: save_dir - Expected a <class 'bool'> Given value type: "
        "<class 'Namespace'> Given value: Namespace(class_path='x')"
    )
    assert short_argument_error(message) == (
        "trainer.logger: Problem with given class_path 'x.TensorBoardLogger': the following arguments are "
        "required: save_dir"
    )
    assert short_argument_error("unrecognized arguments: --x") == "unrecognized arguments: --x"


def test_missing_logger_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # absent, whether or not it is installed here
    with pytest.raises(
        Exception, match=r"WandbLogger needs the wandb package.*pip install 'mme5\[loggers\]'"
    ):
        check_logger_packages([{"class_path": "lightning.pytorch.loggers.WandbLogger"}])
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ConfigError, match=r"TensorBoardLogger needs the tensorboard or tensorboardX package"):
        check_logger_packages({"class_path": "lightning.pytorch.loggers.TensorBoardLogger"})
    check_logger_packages(None)
    check_logger_packages(False)
    check_logger_packages({"class_path": "lightning.pytorch.loggers.CSVLogger"})


@pytest.mark.slow
def test_fit_errors_are_one_line_from_the_command_line(tmp_path):
    """LightningCLI's parser: a wrong type and a missing logger package, as a user's shell sees them (the
    GPU settings without CUDA: in process, tests/cli/test_configs.py)."""
    cases = [
        (["--trainer.max_steps", "abc"], "Parser key \"trainer.max_steps\": Expected a <class 'int'>"),
        (["--trainer.logger", "lightning.pytorch.loggers.MLFlowLogger"], "MLFlowLogger needs the mlflow"),
    ]
    for extra, expected in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "mme5.cli", "fit", "--config", "configs/demo.yaml", *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = [line for line in proc.stderr.splitlines() if line.strip() and line != "Seed set to 0"]
        assert len(lines) == 1 and lines[0].startswith("mme5 fit: error: ") and expected in lines[0], lines
        assert "usage:" not in proc.stdout + proc.stderr
