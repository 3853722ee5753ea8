"""`mme5 export` writes a model card from the run it exports, and `--push_to_hub` uploads the folder.

The upload is tested through :func:`mme5.model.hub.push_to_hub`'s ``api`` argument with a stand-in
that implements ``create_repo`` / ``upload_folder`` by writing to a local folder (there is no network
here), and through the real ``huggingface_hub.HfApi`` offline, whose failure is one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from mme5.cli.main import main as mme5_main
from mme5.model.export import export_checkpoint, export_notes
from mme5.model.hub import push_to_hub


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A `mme5 fit` run folder: checkpoints/last.ckpt, config.yaml and eval/*_history.json."""
    from mme5.training.module import EmbeddingModule, EncoderSettings

    root = tmp_path_factory.mktemp("run") / "lightning_logs" / "version_0"
    (root / "checkpoints").mkdir(parents=True)
    module = EmbeddingModule(encoder=EncoderSettings(model="tiny-llava", max_length=32))
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        root / "checkpoints" / "last.ckpt",
    )
    (root / "config.yaml").write_text("model:\n  encoder:\n    model: tiny-llava\n    max_length: 32\n")
    (root / "eval").mkdir()
    history = [{"step": 100, "mmeb/Overall": 10.0}, {"step": 200, "mmeb/Overall": 12.345, "mmeb/IND": 13.5}]
    (root / "eval" / "mmeb_history.json").write_text(json.dumps(history))
    return root


def test_the_card_holds_base_model_recipe_scores_prompt_and_loading(run, tmp_path, capsys):
    folder = Path(export_checkpoint(str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "export")))
    card = (folder / "README.md").read_text()
    assert "**Base model**: `tiny-llava`" in card
    assert "last non-pad token" in card and "L2-normalised" in card
    assert "**MMEB** (step 200): mmeb/Overall 12.35, mmeb/IND 13.50" in card
    assert "max_length: 32" in card  # the recipe
    assert "`{instruction}\\n{text}`" in card and "| `retrieval` |" in card
    for runtime in ("mme5.load(", "SentenceTransformer(", "AutoModel.from_pretrained(", "vllm serve "):
        assert runtime in card
    out = capsys.readouterr().out
    # one line per serving limit (this tokenizer prepends <s>, which vLLM's chat requests leave out)
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {n}" for n in export_notes(folder)] and len(notes) == 2
    assert "vision_tower.embeddings" in notes[0] and "add_special_tokens" in notes[1]


def test_a_card_without_a_run_says_so(tmp_path):
    from mme5.model.encoder import Encoder
    from mme5.model.export import export

    card = (export(Encoder("tiny-mllama"), tmp_path / "e") / "README.md").read_text()
    assert "The run recorded no evaluation results" in card and "Not recorded" in card
    assert "vllm serve" not in card and "not served by vLLM after 0.10.2" in card


class LocalHub:
    """A stand-in for ``huggingface_hub.HfApi``: repositories are folders under ``root``."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, **kw):
        self.calls.append(("create_repo", repo_id, private, repo_type))
        target = self.root / repo_id
        if target.exists() and not exist_ok:
            raise FileExistsError(repo_id)
        target.mkdir(parents=True, exist_ok=True)
        return f"local://{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, **kw):
        self.calls.append(("upload_folder", repo_id, repo_type, commit_message))
        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(run, tmp_path):
    folder = Path(export_checkpoint(str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "export")))
    hub = LocalHub(tmp_path / "hub")
    url = push_to_hub(folder, "me/demo-model", private=True, api=hub)
    assert url == "local://me/demo-model"
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"] and hub.calls[0][2] is True
    uploaded = tmp_path / "hub" / "me" / "demo-model"
    assert sorted(p.name for p in uploaded.iterdir()) == sorted(p.name for p in folder.iterdir())
    # pushing again reuses the repository
    push_to_hub(folder, "me/demo-model", api=hub)
    with pytest.raises(ValueError, match="not a hub repository id"):
        push_to_hub(folder, "no-slash", api=hub)


def test_push_to_hub_offline_is_one_line(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    ckpt = str(run / "checkpoints" / "last.ckpt")
    args = ["export", "--ckpt", ckpt, "--out", str(tmp_path / "e"), "--push_to_hub", "me/demo"]
    assert mme5_main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("mme5 export: error: --push_to_hub me/demo: the upload failed")
