"""Hub rows of the video-retrieval tasks -> reader rows, columns as the official loaders read them."""

from __future__ import annotations

import pytest

from mme5.errors import ConfigError
from mme5.eval.datasets import EvalDataError
from mme5.eval.v2.convert import video_retrieval_rows


def test_columns_per_task():
    msvd = video_retrieval_rows("MSVD", [{"video_id": "v1", "video": "x.avi", "caption": ["a cat", "b"]}])
    assert msvd[0]["query_text"] == "Find the video snippet that corresponds to the given summary: a cat"
    assert msvd[0]["cand_names"] == ["v1"] and msvd[0]["label_name"] == "v1"
    didemo = video_retrieval_rows("DiDeMo", [{"video": "some/dir/clip_7.mp4", "caption": "a dog"}])
    assert didemo[0]["cand_video"] == ["clip_7"]
    yc = video_retrieval_rows("YouCook2", [{"id": "y9", "video_path": "p.mp4", "sentence": "stir"}])
    assert yc[0]["query_text"].endswith("while making a recipe: stir")


def test_bad_rows_and_tasks_fail_in_one_line():
    with pytest.raises(ConfigError, match="video-retrieval"):
        video_retrieval_rows("K700", [])
    with pytest.raises(EvalDataError, match="enCap"):
        video_retrieval_rows("VATEX", [{"videoID": "v"}])
    with pytest.raises(EvalDataError, match="non-empty list"):
        video_retrieval_rows("VATEX", [{"videoID": "v", "enCap": "not a list"}])
