"""The `mme5` command: its verb registry, `--help` / `--version`, and its one error regime."""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
from lightning.fabric.utilities.exceptions import MisconfigurationException

import mme5
import mme5.cli.demo
from mme5.cli.main import VERBS, main
from mme5.errors import ConfigError
from tests.helpers import REPO


def test_help_lists_exactly_the_verbs_with_their_summaries(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("verbs:\n")[1].split("\n\n")[0].splitlines()]
    assert (
        listed
        == list(VERBS)
        == [
            "fit",
            "validate",
            "export",
            "evaluate",
            "eval-quantized",
            "encode",
            "convert",
            "synthesize",
            "demo",
            "mine",
        ]
    )
    for _, summary in VERBS.values():
        assert summary in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mme5 {mme5.__version__}"


@pytest.mark.parametrize("verb", [v for v in VERBS if v not in ("fit", "validate")])
def test_every_function_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as done:
        main([verb, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: mme5 {verb} ")


@pytest.mark.slow
def test_fit_and_validate_help_through_the_console_script(capsys):
    """`fit --help` as a shell runs it; `validate --help` (the same parser) in process."""
    proc = subprocess.run(
        [sys.executable, "-m", "mme5.cli", "fit", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--trainer.default_root_dir" in proc.stdout and "--model.encoder" in proc.stdout
    with pytest.raises(SystemExit) as done:
        main(["validate", "--help"])
    out = capsys.readouterr().out
    assert done.value.code in (0, None)
    assert "--trainer.default_root_dir" in out and "--model.encoder" in out


@pytest.mark.parametrize("verb", ["test", "predict", "nonsense"])
def test_verbs_that_do_nothing_here_are_gone(verb, capsys):
    assert main([verb]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"unknown verb '{verb}'" in err and "eval-quantized" in err


def test_no_verb_prints_the_usage_and_fails(capsys):
    assert main([]) == 2
    assert "verbs:" in capsys.readouterr().err


def test_an_argument_error_is_one_line(capsys):
    assert main(["demo", "--seed", "not-a-number"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mme5 demo: error:") and "seed" in err


@pytest.mark.parametrize(
    "error",
    [ConfigError("demo.root: expected a folder"), MisconfigurationException("strategy 'x' needs package y")],
)
def test_user_errors_are_one_line(error, monkeypatch, capsys):
    @functools.wraps(mme5.cli.demo.make_demo)  # the same options
    def fails(**kwargs):
        raise error

    monkeypatch.setattr("mme5.cli.demo.make_demo", fails)
    assert main(["demo", "--root", "unused"]) == 2
    assert capsys.readouterr().err == f"mme5 demo: error: {error}\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    @functools.wraps(mme5.cli.demo.make_demo)
    def bug(**kwargs):
        raise RuntimeError("an mme5 bug")

    monkeypatch.setattr("mme5.cli.demo.make_demo", bug)
    with pytest.raises(RuntimeError, match="an mme5 bug"):
        main(["demo", "--root", "unused"])


def test_a_bug_prints_its_traceback_from_the_command_line(tmp_path):
    # a ValueError that is not an Mme5Error (here: from inside the verb, not the parser) is a bug
    script = (
        "import functools, sys, mme5.cli.demo as d\n"
        "def bug(**kw): raise ValueError('an mme5 bug')\n"
        "d.make_demo = functools.wraps(d.make_demo)(bug)\n"
        "from mme5.cli.main import main\n"
        "sys.exit(main(['demo', '--root', 'x']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "ValueError: an mme5 bug" in proc.stderr
