"""Fixtures of the synthesis tests: a tiny random LLaVA and a folder of real photos."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Real photos shipped with scikit-image (no download).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "retina",
    "horse",
    "brick",
    "grass",
)


def write_photos(folder: Path, side: int = 96) -> Path:
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        a = np.asarray(getattr(data, name)())
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        img = Image.fromarray(a).convert("RGB")
        img.thumbnail((side, side))
        img.save(folder / f"{name}.jpg", quality=90)
    return folder


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from tests.helpers.synth_tiny_vlm import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest single-threaded on a shared 2-core machine."""
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
