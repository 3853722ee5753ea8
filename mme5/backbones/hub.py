"""Hugging Face Hub ids as ``from_pretrained`` resolves them: download, cache, offline mode, revisions.

A backbone named ``org/name`` (optionally ``org/name@revision``: a branch, a tag or a commit hash) is
resolved once, by :func:`resolve_hub_model`, to the local snapshot folder of the Hub cache, and
everything downstream (processor, model, export) loads from that folder. The cache, the endpoint and
offline mode are read from the environment at each call, as ``huggingface_hub`` documents them:
``HF_HUB_CACHE`` or ``$HF_HOME/hub`` (default ``~/.cache/huggingface/hub``), ``HF_ENDPOINT``,
``HF_HUB_OFFLINE`` (also ``TRANSFORMERS_OFFLINE``); a token from ``HF_TOKEN`` or ``hf auth login``.

Only what ``from_pretrained`` reads is fetched: safetensors weights, configs, tokenizer and
processor files; duplicate weight formats (``*.bin`` next to safetensors, ``original/``, GGUF, ONNX)
are skipped.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mme5.backbones.base import BackboneError

log = logging.getLogger(__name__)

#: A Hub repository id (``org/name``), optionally followed by ``@revision``.
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
#: Files ``from_pretrained`` never reads when safetensors weights are present.
SKIPPED_FILES = [
    "*.bin",
    "*.bin.index.json",
    "*.pt",
    "*.pth",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "*.onnx_data",
    "*.gguf",
    "original/*",
    "onnx/*",
    "gguf/*",
]
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubModelError(BackboneError):
    """A Hub model that cannot be resolved: offline and not cached, unknown, gated or unreachable."""


def split_hub_id(name: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` for ``org/name`` or ``org/name@revision``; ``None`` for anything else."""
    if name.startswith((".", "/", "~")):
        return None
    match = HUB_ID.match(name)
    if match is None:
        return None
    return match["repo"], match["revision"]


def hub_cache_dir() -> Path:
    """The Hub cache as ``huggingface_hub`` computes it from the current environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for the cache only."""
    return any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def download_command(repo_id: str, revision: str | None) -> str:
    """The ``hf`` command that puts ``repo_id`` (at ``revision``) into the cache."""
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")


def resolve_hub_model(name: str) -> Path:
    """The local snapshot folder of Hub model ``name`` (``org/name[@revision]``), downloaded if needed.

    Offline (``HF_HUB_OFFLINE=1``) only the cache is read; online the Hub is asked for the revision
    and missing files are downloaded, and when the Hub cannot be reached a cached snapshot of the
    revision is used. Raises :class:`HubModelError` with one line naming the model and the fix.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    parts = split_hub_id(name)
    if parts is None:
        raise HubModelError(f"'{name}' is not a Hugging Face Hub id (expected org/name or org/name@revision)")
    repo_id, revision = parts
    cache = hub_cache_dir()
    where = f"'{name}'" + (f" (revision {revision})" if revision else "")
    fix = f"download it first on a machine with internet: {download_command(repo_id, revision)}"
    kwargs: dict = {
        "repo_id": repo_id,
        "revision": revision,
        "cache_dir": str(cache),
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
    }
    try:
        if hub_offline():
            folder = Path(str(snapshot_download(**kwargs, local_files_only=True)))
        else:
            folder = Path(str(snapshot_download(**kwargs, ignore_patterns=SKIPPED_FILES)))
            if not any(folder.glob("*.safetensors")) and any(folder.glob("*.json")):
                # An older repository with PyTorch weights only: fetch them too.
                folder = Path(str(snapshot_download(**kwargs, allow_patterns=["*.bin", "*.bin.index.json"])))
    except GatedRepoError:
        raise HubModelError(
            f"{where} is gated: accept its licence on the Hub, then log in (hf auth login) or set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise HubModelError(
            f"{where}: no such model on the Hub (or it is private: log in with hf auth login)"
        ) from None
    except RevisionNotFoundError:
        raise HubModelError(f"{where}: the Hub has no such revision of {repo_id}") from None
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face Hub cannot be reached"
        raise HubModelError(f"{where} is not in the Hub cache {cache} and {reason}; {fix}") from None
    except (HfHubHTTPError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubModelError(f"{where}: download failed ({first}); {fix}") from None
    if not (folder / "config.json").is_file():
        raise HubModelError(f"{where}: the snapshot {folder} has no config.json; {fix}")
    log.info("backbone %s resolved to %s", name, folder)
    return folder
