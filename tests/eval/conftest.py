"""Fixtures of the evaluation tests (the builders live in ``evalfixtures.py``, importable by workers)."""

from __future__ import annotations

import pytest

from tests.helpers.evalfixtures import EvalFixture, HashEmbedder, build_fixture


@pytest.fixture(scope="session")
def fixture_folders(tmp_path_factory) -> EvalFixture:
    return build_fixture(tmp_path_factory.mktemp("evalfix"))


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()
