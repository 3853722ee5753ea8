"""Hub ids resolve as ``from_pretrained`` resolves them: the cache under HF_HOME, revisions, offline mode.

No network: a real Hub cache layout (``hub/models--org--name/{blobs,snapshots/<commit>,refs}``, files
as symlinks into ``blobs/``, as ``huggingface_hub`` writes it) is built from a tiny twin in a temporary
HF_HOME, and the online path is pointed at an endpoint that refuses connections.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from mme5.backbones import HubModelError, get_adapter
from mme5.backbones.hub import download_command, hub_cache_dir, split_hub_id
from mme5.backbones.llava import LlavaAdapter
from mme5.backbones.llava_next import LlavaNextAdapter
from mme5.records import Side

MAIN = "a" * 40
OTHER = "b" * 40


def write_snapshot(hub: Path, repo_id: str, commit: str, source: str, refs: tuple[str, ...]) -> Path:
    """Put the files of folder ``source`` into the Hub cache at ``commit``, named by ``refs``."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in sorted(Path(source).iterdir()):
        if not file.is_file():
            continue
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            shutil.copyfile(file, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / file.name)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture()
def hf_home(tmp_path, monkeypatch):
    """An HF_HOME whose cache holds mme5-test/tiny-llava at main (LLaVA) and at v2 (LLaVA-NeXT)."""
    home = tmp_path / "hf"
    hub = home / "hub"
    main = write_snapshot(hub, "mme5-test/tiny-llava", MAIN, get_adapter("tiny-llava").source, ("main",))
    other = write_snapshot(hub, "mme5-test/tiny-llava", OTHER, get_adapter("tiny-llava-next").source, ("v2",))
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return {"home": home, "main": main, "other": other}


def test_hub_ids_and_revisions_are_parsed():
    assert split_hub_id("Qwen/Qwen2-VL-2B-Instruct") == ("Qwen/Qwen2-VL-2B-Instruct", None)
    assert split_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    assert split_hub_id("org/name@" + MAIN) == ("org/name", MAIN)
    for not_an_id in ("tiny-llava", "./org/name", "/abs/path", "~/x/y", "a/b/c", "org/name@"):
        assert split_hub_id(not_an_id) is None, not_an_id
    assert download_command("org/name", "v2") == "hf download org/name --revision v2"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def test_offline_hub_id_resolves_to_the_cached_snapshot_and_loads(hf_home):
    adapter = get_adapter("mme5-test/tiny-llava")
    assert type(adapter) is LlavaAdapter and Path(adapter.source) == hf_home["main"]
    processor = adapter.load_processor(adapter.source)
    model = adapter.load_model(adapter.source)
    inputs = adapter.build_inputs(processor, [Side("a cup of coffee")], max_length=16)
    with torch.no_grad():
        assert torch.isfinite(adapter.last_hidden_state(model, inputs)).all()


def test_revision_selects_a_branch_or_a_commit(hf_home):
    by_branch = get_adapter("mme5-test/tiny-llava@v2")
    assert type(by_branch) is LlavaNextAdapter and Path(by_branch.source) == hf_home["other"]
    by_commit = get_adapter(f"mme5-test/tiny-llava@{MAIN}")
    assert type(by_commit) is LlavaAdapter and Path(by_commit.source) == hf_home["main"]


def test_hf_home_decides_which_cache_is_read(hf_home, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(HubModelError, match="not in the Hub cache"):
        get_adapter("mme5-test/tiny-llava")


def test_offline_and_not_cached_is_one_line_with_the_download_command(hf_home):
    with pytest.raises(HubModelError) as info:
        get_adapter("mme5-test/absent")
    message = str(info.value)
    assert "\n" not in message
    assert "HF_HUB_OFFLINE is set" in message and "hf download mme5-test/absent" in message
    with pytest.raises(HubModelError, match=r"hf download mme5-test/tiny-llava --revision v9"):
        get_adapter("mme5-test/tiny-llava@v9")


def test_unreachable_hub_falls_back_to_the_cache(hf_home, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    assert Path(get_adapter("mme5-test/tiny-llava").source) == hf_home["main"]
    with pytest.raises(HubModelError) as info:
        get_adapter("mme5-test/absent")
    assert "\n" not in str(info.value) and "hf download mme5-test/absent" in str(info.value)


def test_a_name_that_is_neither_folder_nor_hub_id_says_so(tmp_path):
    with pytest.raises(Exception, match=r"not found \(no such folder, nor a Hugging Face Hub id"):
        get_adapter(str(tmp_path / "missing"))
