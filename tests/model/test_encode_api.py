"""`mme5.load(folder).encode` speaks sentence-transformers: its arguments, input forms and return types."""

from __future__ import annotations

import functools
import http.server
import io
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mme5
from mme5.model.encoder import Encoder, EncoderSettings, LoraSettings
from mme5.model.export import export
from mme5.model.load import ImageInputError, TruncationWarning, UnknownPromptError, load
from mme5.records import Side, compose_text


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = export(Encoder("tiny-llava", max_length=32), tmp_path_factory.mktemp("encode") / "export")
    return mme5.load(str(folder), device="cpu")


def picture(seed: int = 0, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_returns_numpy_by_default_and_tensors_or_lists_on_request(model):
    texts = ["a red circle", "a blue square", "Кошка на столе"]
    default = model.encode(texts)
    assert isinstance(default, np.ndarray) and default.dtype == np.float32 and default.shape == (3, 64)
    tensor = model.encode(texts, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (3, 64)
    np.testing.assert_allclose(tensor.numpy(), default, atol=1e-6)
    as_list = model.encode(texts, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == 3 and all(v.shape == (64,) for v in as_list)
    # one input (not in a list) -> one vector, as sentence-transformers returns it
    one = model.encode("a red circle")
    assert one.shape == (64,)
    np.testing.assert_allclose(one, default[0], atol=1e-6)
    # the mme5 keyword form gives the same vectors
    np.testing.assert_allclose(model.encode(texts=texts), default, atol=1e-6)


def test_sentence_transformers_keywords(model):
    texts = ["a red circle", "a blue square"]
    plain = model.encode(texts)
    shown = model.encode(
        texts, batch_size=1, show_progress_bar=False, device="cpu", normalize_embeddings=True
    )
    np.testing.assert_allclose(shown, plain, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(shown, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        model.encode(texts, batch_size=0)


def test_normalize_embeddings_normalises_an_unnormalised_model(tmp_path):
    raw = load(
        export(Encoder(EncoderSettings("tiny-llava", normalize=False)), tmp_path / "raw"), device="cpu"
    )
    vectors = raw.encode(["a red circle", "two"])
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    normed = raw.encode(["a red circle", "two"], normalize_embeddings=True)
    np.testing.assert_allclose(normed, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), atol=1e-6)


def test_prompts_are_the_saved_instructions_and_unknown_names_are_errors(model):
    retrieval = model.prompts["retrieval"]
    by_name = model.encode(["a red circle"], prompt_name="retrieval")
    by_text = model.encode(["a red circle"], prompt=retrieval)
    by_instruction = model.encode(["a red circle"], instruction="retrieval")
    composed = model.encode_sides([Side(compose_text(retrieval, "a red circle"))]).numpy()
    for got in (by_name, by_text, by_instruction):
        np.testing.assert_allclose(got, composed, atol=1e-6)
    # prompt wins over prompt_name, as in sentence-transformers
    np.testing.assert_allclose(
        model.encode(["a red circle"], prompt="Other:", prompt_name="retrieval"),
        model.encode(["a red circle"], prompt="Other:"),
        atol=1e-6,
    )
    # free instruction text is still accepted
    assert model.encode(["x"], instruction="Find the matching image:").shape == (1, 64)
    for kwargs in ({"prompt_name": "retreival"}, {"instruction": "retreival"}):
        with pytest.raises(
            UnknownPromptError, match=r"'retreival' is not one of this model's prompts"
        ) as info:
            model.encode(["x"], **kwargs)
        assert "retrieval" in str(info.value) and "\n" not in str(info.value)


def test_images_as_numpy_pil_bytes_paths_and_dicts(model, tmp_path):
    array = picture()
    pil = Image.fromarray(array)
    path = tmp_path / "picture.png"
    pil.save(path)
    expected = model.encode_sides([Side(None, pil)]).numpy()
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    for image in (array, pil, buffer.getvalue(), path, str(path)):
        np.testing.assert_allclose(model.encode([image]), expected, atol=1e-5)
    # channels first and float images in [0, 1] are images too
    np.testing.assert_allclose(model.encode([np.moveaxis(array, -1, 0)]), expected, atol=1e-5)
    np.testing.assert_allclose(model.encode([array.astype(np.float32) / 255.0]), expected, atol=1e-5)
    # a dict input is one (text, image) item; a list may mix texts, images and pairs
    pair = model.encode([{"text": "a photo", "image": array}])
    np.testing.assert_allclose(pair, model.encode_sides([Side("a photo", pil)]).numpy(), atol=1e-5)
    mixed = model.encode(["a photo", array, {"text": "a photo", "image": array}])
    np.testing.assert_allclose(mixed[1:2], expected, atol=1e-5)
    np.testing.assert_allclose(mixed[2:], pair, atol=1e-5)
    with pytest.raises(ImageInputError, match=r"shape \(5, 5, 7\)"):
        model.encode([np.zeros((5, 5, 7), dtype=np.uint8)])
    with pytest.raises(ValueError, match="keys \\['caption'\\]"):
        model.encode([{"caption": "x"}])


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def image_server(tmp_path):
    """A local http.server on a thread serving ``tmp_path`` (there is no internet here)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_image_urls(model, image_server):
    base, root = image_server
    pil = Image.fromarray(picture(3))
    pil.save(root / "cat.png")
    expected = model.encode_sides([Side(None, pil)]).numpy()
    # a URL string is an image in `inputs` (sentence-transformers' rule) and in images=
    np.testing.assert_allclose(model.encode([f"{base}/cat.png"]), expected, atol=1e-5)
    np.testing.assert_allclose(model.encode(images=[f"{base}/cat.png"]), expected, atol=1e-5)
    np.testing.assert_allclose(model.encode(images=[(root / "cat.png").as_uri()]), expected, atol=1e-5)
    with pytest.raises(ImageInputError, match=r"image URL '.*/missing\.png' could not be read") as info:
        model.encode([f"{base}/missing.png"])
    assert "\n" not in str(info.value)
    # a text that merely mentions a URL stays a text
    assert model.encode(["see http://example.org/cat.png please"]).shape == (1, 64)


def test_truncation_is_counted_in_one_warning(model):
    long_text = "word " * 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors = model.encode([long_text, "short", long_text + "more"])
    found = [w for w in caught if issubclass(w.category, TruncationWarning)]
    assert len(found) == 1
    assert "2 of 3 texts are longer than max_length=32 tokens" in str(found[0].message)
    assert vectors.shape == (3, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.encode(["short"])
    assert not [w for w in caught if issubclass(w.category, TruncationWarning)]


def test_a_sharded_checkpoint_folder_loads(tmp_path):
    """A `.ckpt` folder (Lightning's save_distributed_checkpoint: torch.distributed.checkpoint shards plus
    meta.pt) used to be reported as a checkpoint that "does not exist"; it loads."""
    import lightning as L
    import torch.distributed.checkpoint as dcp

    from mme5.training.module import EmbeddingModule

    module = EmbeddingModule(encoder=EncoderSettings("tiny-llava", max_length=24, lora=LoraSettings(rank=4)))
    with torch.no_grad():
        for name, p in module.encoder.model.named_parameters():
            if "lora_" in name:
                p.add_(0.2 * torch.randn_like(p))
    folder = tmp_path / "last.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "assuming ... a single process"
        dcp.save({"state_dict": module.state_dict()}, checkpoint_id=folder, no_dist=True)
    torch.save(
        {"hyper_parameters": dict(module.hparams), "pytorch-lightning_version": L.__version__},
        folder / "meta.pt",
    )
    sides = [Side("a red circle"), Side(None, Image.fromarray(picture(1)))]
    loaded = mme5.load(str(folder), device="cpu")
    torch.testing.assert_close(loaded.encode_sides(sides), module.embed_sides(sides), atol=1e-5, rtol=1e-4)
    empty = tmp_path / "empty.ckpt"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"is a folder, not a checkpoint of `mme5 fit`"):
        mme5.load(str(empty))


def test_mme5_load_reads_a_single_file_checkpoint(tmp_path):
    import lightning as L

    from mme5.training.module import EmbeddingModule

    module = EmbeddingModule(encoder=EncoderSettings("tiny-llava", max_length=24))
    ckpt = Path(tmp_path) / "x.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        ckpt,
    )
    vectors = mme5.load(str(ckpt), device="cpu").encode(["a red circle"])
    np.testing.assert_allclose(vectors, module.embed_sides([Side("a red circle")]).numpy(), atol=1e-5)
