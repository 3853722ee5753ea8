"""``mme5 export --push_to_hub REPO``: upload an export folder to the Hugging Face Hub.

:func:`push_to_hub` goes through ``huggingface_hub.HfApi`` (``create_repo`` then ``upload_folder``);
any object with those two methods can stand in for it (tests use one that writes to a local folder,
since there is no network here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, cast

from mme5.errors import ConfigError, MissingPathError

__all__ = ["HubApi", "push_to_hub"]


class HubApi(Protocol):
    """The two ``huggingface_hub.HfApi`` methods an upload needs."""

    def create_repo(
        self, repo_id: str, *, private: bool | None = ..., exist_ok: bool = ..., **kw: Any
    ) -> Any: ...

    def upload_folder(self, *, repo_id: str, folder_path: str | os.PathLike, **kw: Any) -> Any: ...


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "mme5 export",
    api: HubApi | None = None,
) -> str:
    """Create (or reuse) the model repository ``repo_id`` and upload ``folder`` to it; returns its URL.

    Args:
        folder: an export folder (``mme5 export``).
        repo_id: ``user/name`` or ``org/name``.
        private: create the repository private (an existing one keeps its visibility).
        commit_message: the upload commit's message.
        api: a ``huggingface_hub.HfApi`` (default: one with the logged-in token / ``HF_TOKEN``).
    """
    path = Path(folder)
    if not path.is_dir():
        raise MissingPathError(f"export folder '{path}' does not exist")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"--push_to_hub '{repo_id}' is not a hub repository id; expected 'user/name'")
    if api is None:
        from huggingface_hub import HfApi

        api = cast(HubApi, HfApi())
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id, folder_path=str(path), repo_type="model", commit_message=commit_message
        )
    except (OSError, ValueError) as exc:  # network, authentication (HfHubHTTPError is an OSError)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--push_to_hub {repo_id}: the upload failed: {first}") from None
    return str(url) if url is not None else repo_id
