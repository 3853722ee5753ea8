"""Builders and fixtures shared by the tests (imported as ``tests.helpers.<module>``)."""

from pathlib import Path

#: The repository root (scripts and subprocesses run from here).
REPO = Path(__file__).resolve().parents[2]


def repo_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the repository root on PYTHONPATH, so that a subprocess imports ``tests.helpers``."""
    paths = [str(REPO), *[p for p in env.get("PYTHONPATH", "").split(":") if p]]
    return {**env, "PYTHONPATH": ":".join(paths)}
