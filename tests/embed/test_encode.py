"""``mme5 encode`` on a tiny export: formats, ids, precisions, --dim, bad rows, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mme5.cli.main import main
from mme5.embed.inputs import load_side, read_rows
from mme5.embed.precision import calibration_ranges, quantize, truncate
from mme5.embed.writer import encode_file
from mme5.model.encoder import Encoder
from mme5.model.export import export
from mme5.model.load import load

INSTRUCTION = "Represent the item for retrieval:"


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "tiny"
    export(Encoder("tiny-llava", max_length=32), folder, instructions={"retrieval": INSTRUCTION})
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"img{i}.png")
    (root / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "sub" / "deep.jpg")
    return root


def rows_file(tmp: Path, images: Path) -> Path:
    """A JSONL with text, image, pair rows and three bad ones (missing image, malformed line, empty)."""
    lines = [
        json.dumps({"id": "t0", "text": "a red square"}),
        json.dumps({"id": "i0", "image": str(images / "img0.png")}),
        json.dumps({"id": "p0", "text": "noise", "image": "img1.png"}),
        json.dumps({"id": "missing", "image": "nope.png"}),
        "{this is not json",
        json.dumps({"id": "empty", "text": ""}),
        json.dumps({"id": "t1", "text": "Кошка на столе"}),
        json.dumps({"id": "i1", "image": "img2.png"}),
    ]
    path = tmp / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = ["t0", "i0", "p0", "t1", "i1"]


def reference(model_dir: Path, path: Path, images: Path, ids: list[str], instruction=None) -> np.ndarray:
    """Embeddings straight from the loaded model, row by row (the oracle of the file pipeline)."""
    model = load(model_dir, device="cpu")
    rows = {r.id: r for r in read_rows(path, image_root=images).rows}
    prompt = model.resolve_instruction(instruction)
    sides = [load_side(rows[i], images, prompt) for i in ids]
    return model.encode_sides(sides, batch_size=2).numpy()


def test_jsonl_to_npy_with_ids_skips_counted_and_listed(tiny_export, images, tmp_path):
    src = rows_file(tmp_path, images)
    out = tmp_path / "emb.npy"
    report = encode_file(
        tiny_export,
        src,
        out,
        batch_size=2,
        part_size=3,
        image_root=images,
        instruction="retrieval",
        progress=False,
    )
    assert json.loads((tmp_path / "emb.ids.json").read_text()) == GOOD
    emb = np.load(out)
    want = reference(tiny_export, src, images, GOOD, "retrieval")
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)
    assert report.rows == 8 and report.written == 5 and report.encoded == 5 and report.skipped == 3
    assert report.skip_reasons == {"image_missing": 1, "malformed_row": 1, "empty_row": 1}
    skipped = [json.loads(line) for line in (tmp_path / "emb.skipped.jsonl").read_text().splitlines()]
    assert [s["id"] for s in skipped] == ["missing", "line5", "empty"]
    assert not (tmp_path / "emb.parts").exists()
    meta = json.loads((tmp_path / "emb.meta.json").read_text())
    assert meta["bytes_per_vector"] == 4 * 64 and meta["dim"] == 64


@pytest.mark.parametrize("precision,dim", [("int8", None), ("ubinary", 24), ("float32", 16)])
def test_parquet_and_csv_inputs_precisions_and_dim(tiny_export, images, tmp_path, precision, dim):
    ids = ["a", "b", "c", "d"]
    texts = ["one", None, "three", "four"]
    imgs = [None, "img0.png", "img3.png", None]
    table = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts, "image": imgs}), table)
    out = tmp_path / "emb.parquet"
    report = encode_file(
        tiny_export,
        table,
        out,
        batch_size=3,
        part_size=2,
        image_root=images,
        dim=dim,
        precision=precision,
        progress=False,
    )
    got = pq.read_table(out)
    assert got.column("id").to_pylist() == ids
    emb = np.array(got.column("embedding").to_pylist())
    floats = truncate(reference(tiny_export, table, images, ids), dim)
    ranges = calibration_ranges(floats[:2]) if precision == "int8" else None  # the first part calibrates
    want = quantize(floats, precision, ranges)
    assert emb.shape == want.shape
    if precision == "float32":
        np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)
    else:  # codes: an fp32 rounding at a bucket edge may move one component by one step
        assert np.abs(emb.astype(np.int16) - want.astype(np.int16)).max() <= (
            1 if precision == "int8" else 255
        )
        assert (emb != want).mean() < 0.02
    d = dim or 64
    assert report.bytes_per_vector == {"float32": 4 * d, "int8": d, "ubinary": -(-d // 8)}[precision]
    if precision == "int8":
        np.testing.assert_allclose(np.load(tmp_path / "emb.ranges.npy"), ranges, rtol=1e-5, atol=1e-6)
    # the same rows as CSV give the same output
    csv = tmp_path / "rows.csv"
    csv.write_text(
        "id,text,image\n"
        + "".join(f"{i},{t or ''},{m or ''}\n" for i, t, m in zip(ids, texts, imgs, strict=True))
    )
    encode_file(
        tiny_export,
        csv,
        tmp_path / "csv.npy",
        batch_size=3,
        part_size=2,
        image_root=images,
        dim=dim,
        precision=precision,
        progress=False,
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "csv.npy"), emb.astype(np.load(tmp_path / "csv.npy").dtype)
    )


def test_image_folder_ids_are_relative_paths(tiny_export, images, tmp_path, monkeypatch):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    monkeypatch.chdir(images.parent)  # the folder given as a relative path
    try:
        report = encode_file(tiny_export, images.name, tmp_path / "f.npy", progress=False)
    finally:
        (images / "broken.png").unlink()
    ids = json.loads((tmp_path / "f.ids.json").read_text())
    assert ids == ["img0.png", "img1.png", "img2.png", "img3.png", "sub/deep.jpg"]
    assert report.skipped == 1 and np.load(tmp_path / "f.npy").shape == (5, 64)
    assert json.loads((tmp_path / "f.skipped.jsonl").read_text())["id"] == "broken.png"


def test_bad_options_are_one_line(tiny_export, images, tmp_path, capsys):
    src = rows_file(tmp_path, images)
    base = ["encode", "--model", str(tiny_export), "--input", str(src), "--progress", "false"]
    assert main([*base, "--output", str(tmp_path / "a.npy"), "--precision", "int4"]) == 2
    err = capsys.readouterr().err.strip()
    choices = "float32, int8, uint8, binary, ubinary"
    assert err == f"mme5 encode: error: unknown precision 'int4'; expected one of {choices}"
    assert main([*base, "--output", str(tmp_path / "a.npy"), "--dim", "65"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' weight-loading bar
    assert err == "mme5 encode: error: --dim 65 is not between 1 and the model's embedding dimension 64"
    assert not (tmp_path / "a.npy").exists() and not (tmp_path / "a.parts").exists()
    assert main([*base, "--output", str(tmp_path / "a.txt")]) == 2
    assert "must end in .npy or .parquet" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "a.npy"), "--image_root", str(images)]) == 0
    assert "encoded 5 items (0 from finished parts)" in capsys.readouterr().out
    assert main([*base, "--output", str(tmp_path / "a.npy")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing_finished_parts(tiny_export, tmp_path):
    """A real SIGKILL after some parts; the rerun encodes only the rest and equals an uninterrupted run."""
    n, part = 160, 4
    src = tmp_path / "many.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "text": f"item number {i} " * (1 + i % 5)}) + "\n" for i in range(n)
        )
    )
    out = tmp_path / "many.npy"
    cmd = [
        sys.executable,
        "-m",
        "mme5.cli.main",
        "encode",
        "--model",
        str(tiny_export),
        "--input",
        str(src),
        "--output",
        str(out),
        "--part_size",
        str(part),
        "--batch_size",
        "2",
        "--progress",
        "false",
    ]
    env = dict(os.environ, MME5_TRACEBACK="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = tmp_path / "many.parts"
    deadline = time.monotonic() + 300
    while len(list(parts.glob("part-*.npz"))) < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("part-*.npz")))
    assert 3 <= done < n // part and not out.exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    line = rerun.stdout.splitlines()[0]
    assert line.startswith(
        f"encoded {n - done * part} items ({done * part} from finished parts), wrote {n}"
    ), line
    fresh = tmp_path / "fresh.npy"
    report = encode_file(tiny_export, src, fresh, batch_size=2, part_size=part, progress=False)
    assert report.encoded == n and report.reused == 0
    assert json.loads((tmp_path / "many.ids.json").read_text()) == [f"r{i}" for i in range(n)]
    np.testing.assert_allclose(np.load(out), np.load(fresh), rtol=1e-5, atol=1e-6)


def test_parts_made_with_other_options_are_refused(tiny_export, images, tmp_path):
    src = rows_file(tmp_path, images)
    out = tmp_path / "o.npy"
    parts = tmp_path / "o.parts"
    parts.mkdir()
    (parts / "options.json").write_text(json.dumps({"precision": "int8"}))
    with pytest.raises(Exception, match="holds parts made with other"):
        encode_file(tiny_export, src, out, image_root=images, progress=False)
