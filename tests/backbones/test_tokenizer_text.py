"""The tiny twins' tokenizer text ships as package data and still covers every phrase of the demo."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mme5.backbones.tokenizer import (
    MULTILINGUAL_TEXT,
    VOCABULARY_FILE,
    training_text,
    vocabulary_lines,
    write_vocabulary_file,
)
from mme5.demo import vocabulary_texts

REGENERATE = "python -m mme5.backbones.tokenizer"


def test_shipped_vocabulary_covers_the_demo():
    shipped = set(vocabulary_lines())
    missing = [t for t in vocabulary_texts() if t not in shipped]
    assert not missing, (
        f"{len(missing)} demo text(s) missing from demo_vocabulary.txt, e.g. {missing[:3]}; "
        f"regenerate it with `{REGENERATE}`"
    )
    assert training_text().startswith(MULTILINGUAL_TEXT) and training_text().endswith(vocabulary_lines()[-1])


def test_backbones_do_not_import_the_demo():
    probe = (
        "import sys; from mme5.backbones.tokenizer import train_bpe; train_bpe(['<s>'], vocab_size=300);"
        "print(sorted(m for m in sys.modules if m.startswith('mme5.demo')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_regenerating_writes_the_shipped_bytes(tmp_path):
    from importlib import resources

    shipped = resources.files("mme5.backbones").joinpath(VOCABULARY_FILE).read_bytes()
    assert write_vocabulary_file(vocabulary_lines(), tmp_path / "v.txt").read_bytes() == shipped
    with pytest.raises(ValueError, match="single lines"):
        write_vocabulary_file(["two\nlines"], tmp_path / "w.txt")
