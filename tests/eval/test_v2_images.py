"""MMEB-V2 image tasks in VLM2Vec's V2 layout (``image-query/<Task>/test-*.parquet``, images under
``image-tasks/MMEB/``), against an oracle written from the official parsers (TIGER-AI-Lab/VLM2Vec at
6e1e1d4, ``src/data/eval_dataset/image_*.py``), its candidate pool (``base_eval_dataset.py`` lines
121-137) and its local ranking (``eval.py`` lines 325-343), hit@1 computed by hand."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from mme5.errors import MissingPathError
from mme5.eval.datasets import EvalDataError
from mme5.eval.runner import DatasetScore, EncodeStats, EvalResult
from mme5.eval.v2 import V2_TASKS, evaluate_mmeb_v2, load_mmeb_v2, resolve_v2_tasks, run_mmeb_v2
from mme5.eval.v2.images import V2_IMAGE_PARSERS
from mme5.records import Side

TOKEN = "<|image_1|>"  # VLM_IMAGE_TOKENS[PHI3V], processor.py line 60
TASKS = ["ImageNet-1K", "OK-VQA", "VisDial", "CIRR", "MSCOCO_i2t", "MSCOCO_t2i", "WebQA", "RefCOCO-Matching"]


# --- the oracle: the official code's logic, written out ---------------------------------------------


def official_process_input_text(instruction, text=None, add_image_token=False):
    """processor.py lines 663-673 (a backbone outside GME / LamRA / E5-V / InternVideo2)."""
    prompt = instruction
    if text:
        prompt = prompt + " " + text
    if add_image_token:
        prompt = TOKEN + " " + prompt
    return prompt


def official_rows(parser, dataset_name, batch, image_root):
    """``data_prepare`` of each parser: [(query_text, query_image | None, cand_texts, cand_images,
    cand_names)], the images as joined paths (``os.path.join(image_root, ...)``)."""
    out = []
    if parser in ("image_cls", "image_i2t", "image_qa"):
        # image_cls_dataset.py / image_i2t_eval.py / image_qa_dataset.py lines 15-31
        for qry_inst, qry_text, qry_img_path, tgt_texts in zip(
            batch["qry_inst"], batch["qry_text"], batch["qry_img_path"], batch["tgt_text"], strict=True
        ):
            if parser == "image_qa":
                qry_inst = "\n" + qry_inst.replace("<|image_1|>", "").strip()  # image_qa line 17
            else:
                qry_inst = qry_inst.replace("<|image_1|>", "")  # image_cls / image_i2t line 17
            qry_text = official_process_input_text(qry_inst, text=qry_text, add_image_token=True)
            qry_text = qry_text.replace(" \n", "\n") + "\n"
            out.append(
                (
                    qry_text,
                    os.path.join(image_root, qry_img_path),
                    tgt_texts,
                    [None] * len(tgt_texts),
                    tgt_texts,
                )
            )
    elif parser == "image_t2i":
        # image_t2i_eval.py lines 16-46
        for qry_inst, qry_text, tgt_inst, tgt_captions, tgt_img_paths in zip(
            batch["qry_inst"],
            batch["qry_text"],
            batch["tgt_inst"],
            batch["tgt_text"],
            batch["tgt_img_path"],
            strict=True,
        ):
            qry_inst = qry_inst.replace("<|image_1|>", TOKEN)
            query_text = qry_inst + " " + qry_text + "\n"
            if dataset_name == "VisDial":
                query_text += "\n"
            if tgt_captions[0].strip():
                tgt_inst = tgt_inst.replace("<|image_1|>", "")
                texts = []
                for tgt_cap in tgt_captions:
                    t = official_process_input_text(tgt_inst + " " + tgt_cap, text="", add_image_token=True)
                    texts.append(t.replace(" \n", "\n") + "\n")
            else:
                tgt_inst = tgt_inst.replace("<|image_1|>", "")
                t = official_process_input_text(tgt_inst, text="", add_image_token=True)
                texts = [t.replace(" \n", "\n") + "\n"] * len(tgt_img_paths)
            images = [os.path.join(image_root, p) for p in tgt_img_paths]
            out.append((query_text, None, texts, images, list(tgt_img_paths)))
    else:
        # image_i2i_vg_dataset.py lines 15-49
        for qry_inst, qry_text, qry_img_path, tgt_inst, tgt_captions, tgt_img_paths in zip(
            batch["qry_inst"],
            batch["qry_text"],
            batch["qry_img_path"],
            batch["tgt_inst"],
            batch["tgt_text"],
            batch["tgt_img_path"],
            strict=True,
        ):
            qry_inst = "\n" + qry_inst.replace("<|image_1|>", "").strip()
            qry_text = official_process_input_text(qry_inst, text=qry_text, add_image_token=True)
            qry_text = qry_text.replace(" \n", "\n") + "\n"
            if tgt_captions[0].strip():
                tgt_inst = tgt_inst.replace("<|image_1|>", "")
                texts = []
                for tgt_cap in tgt_captions:
                    t = official_process_input_text(tgt_inst + " " + tgt_cap, text="", add_image_token=True)
                    texts.append(t.replace(" \n", "\n") + "\n")
            else:
                tgt_inst = tgt_inst.replace("<|image_1|>", "")
                t = official_process_input_text(tgt_inst, text="", add_image_token=True)
                texts = [t.replace(" \n", "\n")] * len(tgt_img_paths)  # line 38: no "\n"
            images = [os.path.join(image_root, p) for p in tgt_img_paths]
            names = [p + ":" + c.strip('"') for p, c in zip(tgt_img_paths, tgt_captions, strict=True)]
            out.append((qry_text, os.path.join(image_root, qry_img_path), texts, images, names))
    return out


def official_pool(rows):
    """generate_cand_dataset (base_eval_dataset.py lines 126-137): the first candidate of each name."""
    pool = {}
    for _, _, texts, images, names in rows:
        for t, img, n in zip(texts, images, names, strict=True):
            pool.setdefault(n, (t, img))
    return pool


def _side(text, image):
    return Side(text=text or None, image=Image.open(image).convert("RGB") if image else None)


def oracle_hit1(rows, embedder):
    """eval.py lines 325-343 with hit@1 = the label on top; an exact tie with the label goes to the
    label (mme5's MMEB rule, ``truth_wins``)."""
    pool = official_pool(rows)

    def emb(text, image):
        return embedder([_side(text, image)]).numpy().astype(np.float64)[0]

    hits = []
    for q_text, q_img, _, _, names in rows:
        q = emb(q_text, q_img)
        scores = {n: float(q @ emb(*pool[n])) for n in names}
        hits.append(all(scores[names[0]] >= s for s in scores.values()))
    return 100.0 * float(np.mean(hits))


# --- fixture in the official layout ------------------------------------------------------------------


def _draw(path: Path, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (24, 24), ((53 * k) % 256, (97 * k + 40) % 256, (151 * k + 80) % 256))
    ImageDraw.Draw(im).rectangle([k % 12, (3 * k) % 12, 12 + k % 12, 12 + (3 * k) % 12], fill=(250, 250, 250))
    im.save(path)


def _rows(task: str) -> dict[str, list]:
    """Rows of one task with the hub's columns for its parser."""
    img = [f"{task}/img_{k}.png" for k in range(6)]
    if task == "ImageNet-1K":
        classes = ["tench", "goldfish", "great white shark", "tiger shark"]
        return {
            "qry_inst": [f"{TOKEN}\nRepresent the given image for classification"] * 4,
            "qry_text": [""] * 4,
            "qry_img_path": img[:4],
            "tgt_text": [[classes[r]] + [c for c in classes if c != classes[r]] for r in range(4)],
            "tgt_img_path": [[""] * 4] * 4,
        }
    if task == "OK-VQA":
        return {
            "qry_inst": [f" {TOKEN}\n Represent the given image with the following question: "] * 3,
            "qry_text": ["What is on the plate?", "Which colour is the sky?", "How many?"],
            "qry_img_path": img[:3],
            "tgt_text": [["pasta", "rice", "fish"], ["blue", "grey", "red"], ["two", "three", "one"]],
        }
    if task == "MSCOCO_i2t":
        return {
            "qry_inst": [f"{TOKEN}\nFind an image caption describing the given everyday image."] * 3,
            "qry_text": [""] * 3,
            "qry_img_path": img[:3],
            "tgt_text": [
                ["a red bus", "two dogs", "a kite"],
                ["two dogs", "a kite", "a red bus"],
                ["a kite", "a red bus", "two dogs"],
            ],
        }
    if task in ("VisDial", "MSCOCO_t2i"):
        inst = (
            "Represent the given dialogue about an image, which is used for image retrieval:"
            if task == "VisDial"
            else "Find me an everyday image that matches the given caption:"
        )
        # MSCOCO_t2i row 0: a distractor with the truth's pixels under another path (an exact tie)
        first = (
            [img[0], f"{task}/copy_of_0.png", img[2]] if task == "MSCOCO_t2i" else [img[0], img[1], img[2]]
        )
        return {
            "qry_inst": [inst] * 3,
            "qry_text": ["Q: is it red A: yes", "Q: any people A: no", "Q: indoors A: yes"],
            "qry_img_path": [""] * 3,
            "tgt_inst": [f"{TOKEN}\nRepresent the given image."] * 3,
            "tgt_text": [[""] * 3] * 3,
            "tgt_img_path": [first, [img[1], img[2], img[0]], [img[2], img[0], img[1]]],
        }
    if task == "WebQA":
        return {
            "qry_inst": ["Find a Wikipedia image that answers this question:"] * 3,
            "qry_text": ["Where is the tower?", "What colour is the roof?", "Is it old?"],
            "qry_img_path": [""] * 3,
            "tgt_inst": [f"{TOKEN}\nRepresent the given Wikipedia image with related text information:"] * 3,
            # row 1 names img_0 again with another caption: the pool keeps row 0's text for it
            "tgt_text": [
                ["Tower in Paris", "A red roof", "Old mill"],
                ["A red roof", "Tower at night", ""],
                ["Old mill", "Tower in Paris", "A red roof"],
            ],
            "tgt_img_path": [[img[0], img[1], img[2]], [img[1], img[0], img[3]], [img[2], img[0], img[1]]],
        }
    if task == "RefCOCO-Matching":
        return {
            "qry_inst": [f"{TOKEN}\nSelect the portion of the image that follows the language expressions."]
            * 3,
            "qry_text": ['"the dog on the left"', '"the cat"', '"a car"'],
            "qry_img_path": img[:3],
            "tgt_inst": [f"{TOKEN}\nSelect the portion of the image that isolates the object:"] * 3,
            # row 1's 'the dog' on img_3 is the name of row 0's '"the dog"' (quotes stripped, line 45)
            "tgt_text": [['"the dog"', '"a car"'], ['"the cat"', "the dog"], ['"a car"', '"the cat"']],
            "tgt_img_path": [[img[3], img[4]], [img[4], img[3]], [img[5], img[4]]],
        }
    assert task == "CIRR"
    return {
        "qry_inst": [f"{TOKEN}\nGiven an image, find a similar everyday image with the described changes:"]
        * 3,
        "qry_text": ["make it blue", "add a dog", "remove the car"],
        "qry_img_path": img[:3],
        "tgt_inst": [f"{TOKEN}\nRepresent the given image."] * 3,
        "tgt_text": [["", "", ""]] * 3,
        "tgt_img_path": [[img[3], img[4], img[5]], [img[4], img[5], img[3]], [img[5], img[3], img[4]]],
    }


def build_v2_images(root: Path, images: str = "image-tasks/MMEB") -> Path:
    """``<root>/image-query/<Task>/test-0000k-of-0000n.parquet`` and the drawn images."""
    for t, task in enumerate(TASKS):
        cols = _rows(task)
        folder = root / "image-query" / task
        folder.mkdir(parents=True)
        table = pa.table(cols)
        shards = [table.slice(0, 2), table.slice(2)] if task == "ImageNet-1K" else [table]
        for i, shard in enumerate(shards):
            pq.write_table(shard, folder / f"test-{i:05d}-of-{len(shards):05d}.parquet")
        for k in range(6):
            _draw(root / images / task / f"img_{k}.png", 10 * t + k)
    Image.open(root / images / "MSCOCO_t2i/img_0.png").save(root / images / "MSCOCO_t2i/copy_of_0.png")
    return root


@pytest.fixture(scope="module")
def v2_images(tmp_path_factory) -> Path:
    return build_v2_images(tmp_path_factory.mktemp("v2img") / "MMEB-V2")


def _oracle_rows(root: Path, task: str):
    return official_rows(V2_IMAGE_PARSERS[task], task, _rows(task), str(root / "image-tasks/MMEB"))


# --- tests -----------------------------------------------------------------------------------------------


def test_the_parser_table_is_image_yaml():
    kinds = [V2_IMAGE_PARSERS[n] for n in V2_IMAGE_PARSERS]
    assert len(kinds) == 36 and set(V2_IMAGE_PARSERS) == {n for n, t in V2_TASKS.items() if t.kind == "image"}
    # image.yaml: 10 cls (lines 2-61), 10 qa (63-122), 2 i2t (124-135), 6 t2i (137-172), 8 i2i_vg (174-222)
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "image_cls": 10,
        "image_qa": 10,
        "image_i2t": 2,
        "image_t2i": 6,
        "image_i2i_vg": 8,
    }
    assert V2_IMAGE_PARSERS["VisDial"] == "image_t2i" and V2_IMAGE_PARSERS["RefCOCO"] == "image_i2i_vg"


def test_texts_and_images_are_the_official_parsers(v2_images, tmp_path):
    bench = load_mmeb_v2(v2_images, resolve_v2_tasks(TASKS), tmp_path)
    assert bench.image_source == "image-query" and bench.image_bench is not None
    image_root = Path(bench.v2_image_root or "")
    assert image_root == v2_images / "image-tasks/MMEB"
    items = bench.image_bench.items

    def full(path):
        return str(image_root / path) if path else None

    for s in bench.image_bench.sets:
        rows = _oracle_rows(v2_images, s.name)
        pool = official_pool(rows)
        assert len(s.queries) == len(rows) == s.total_rows
        for r, (q_text, q_img, _, _, names) in enumerate(rows):
            q = items[s.queries[r]]
            assert (q.text, full(q.image_path)) == (q_text, q_img), (s.name, r)
            got = [(items[i].text, full(items[i].image_path)) for i in s.candidates[r]]
            assert got == [pool[n] for n in names], (s.name, r)
    # the texts carry the separated instruction as the parsers join it
    first = {s.name: items[s.queries[0]].text for s in bench.image_bench.sets}
    assert first["ImageNet-1K"] == f"{TOKEN}\nRepresent the given image for classification\n"
    assert first["OK-VQA"] == (
        f"{TOKEN}\nRepresent the given image with the following question: What is on the plate?\n"
    )
    assert first["VisDial"].endswith(": Q: is it red A: yes\n\n")  # VisDial: one more "\n" (line 21)
    assert (
        first["MSCOCO_t2i"]
        == "Find me an everyday image that matches the given caption: Q: is it red A: yes\n"
    )
    cirr = bench.image_bench.sets[[s.name for s in bench.image_bench.sets].index("CIRR")]
    assert items[cirr.candidates[0][0]].text == f"{TOKEN}\nRepresent the given image."  # no "\n" (line 38)


def test_candidates_of_one_name_are_the_first_one_met(v2_images, tmp_path):
    bench = load_mmeb_v2(v2_images, resolve_v2_tasks(["WebQA", "RefCOCO-Matching"]), tmp_path)
    assert bench.image_bench is not None
    webqa, refcoco = bench.image_bench.sets
    items = bench.image_bench.items
    # WebQA row 1, candidate 1 is img_0 with the caption "Tower at night": the pool holds row 0's text
    assert webqa.candidates[1][1] == webqa.candidates[0][0]
    assert items[webqa.candidates[1][1]].text.endswith("information: Tower in Paris\n")
    # RefCOCO-Matching: 'the dog' on img_3 is named like '"the dog"' on img_3
    assert refcoco.candidates[1][1] == refcoco.candidates[0][0]
    assert '"the dog"' in items[refcoco.candidates[1][1]].text


def test_scores_are_hit_at_1_computed_by_hand(v2_images, tmp_path, embedder):
    # image_dir names no folder: with image-query/ present it is not read
    result = evaluate_mmeb_v2(
        embedder, v2_images, tmp_path / "work", image_dir=tmp_path / "no-such-v1", kinds=["image"]
    )
    assert [t.name for t in result.tasks] == [n for n in V2_IMAGE_PARSERS if n in TASKS]
    hits = []
    for t in result.tasks:
        want = oracle_hit1(_oracle_rows(v2_images, t.name), embedder)
        hits.append(want)
        assert t.score == pytest.approx(want), t.name
        assert (t.kind, t.eval_type, t.main) == ("image", "local", "hit@1")
    assert 0 < np.mean(hits) < 100  # the embedder gets some right and some wrong
    assert result.score("MSCOCO_t2i").metrics["hit@1"] >= 100 / 3  # row 0's tie went to the truth
    # the 28 image tasks asked for (kinds=["image"]) but absent are listed, none dropped
    assert set(result.missing) == {n for n in V2_IMAGE_PARSERS if n not in TASKS}
    assert len(result.missing) + len(result.tasks) == 36
    assert result.summary["image"] == pytest.approx(np.mean(hits))


def test_max_rows_keeps_the_first_rows_and_the_cache_serves_a_rerun(v2_images, tmp_path, embedder):
    bench = load_mmeb_v2(v2_images, resolve_v2_tasks(["ImageNet-1K", "WebQA"]), tmp_path, max_rows=2)
    assert bench.image_bench is not None
    assert [(len(s.queries), s.total_rows) for s in bench.image_bench.sets] == [(2, 4), (2, 3)]
    from mme5.eval.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "cache")
    first = run_mmeb_v2(embedder, bench, cache=cache, fingerprint="hash")
    seen = embedder.sides_seen
    again = run_mmeb_v2(embedder, bench, cache=cache, fingerprint="hash")
    assert embedder.sides_seen == seen and again.encode.from_cache == first.encode.distinct_items
    assert [t.metrics for t in again.tasks] == [t.metrics for t in first.tasks]
    assert first.score("ImageNet-1K").rows == 2 and first.score("ImageNet-1K").total_rows == 4


def test_an_mmeb_v1_run_is_not_taken_for_the_v2_image_tasks(v2_images, tmp_path, embedder):
    bench = load_mmeb_v2(v2_images, resolve_v2_tasks(["OK-VQA"]), tmp_path)
    v1 = EvalResult(
        "mmeb",
        [DatasetScore("OK-VQA", "VQA", False, 3, 3, 9, {"precision@1": -1.0, "hit@1": -1.0})],
        [],
        {},
        3,
        9,
        EncodeStats(),
        0.0,
    )
    result = run_mmeb_v2(embedder, bench, image_result=v1)
    assert result.score("OK-VQA").score == pytest.approx(
        oracle_hit1(_oracle_rows(v2_images, "OK-VQA"), embedder)
    )


def test_images_directly_under_image_tasks(tmp_path, embedder):
    """``download_data.sh`` lines 57-61 move ``MMEB/*`` up into ``image-tasks/`` (image.yaml's root)."""
    root = build_v2_images(tmp_path / "V2", images="image-tasks")
    result = evaluate_mmeb_v2(embedder, root, tmp_path / "work", tasks=["CIRR"])
    rows = official_rows("image_i2i_vg", "CIRR", _rows("CIRR"), str(root / "image-tasks"))
    assert result.score("CIRR").score == pytest.approx(oracle_hit1(rows, embedder))


def test_image_tasks_absent_from_image_query_are_listed(v2_images, tmp_path, embedder):
    bench = load_mmeb_v2(v2_images, resolve_v2_tasks(["ImageNet-A", "Country211"]), tmp_path)
    assert bench.image_tasks == [] and bench.missing == ["ImageNet-A", "Country211"]
    result = run_mmeb_v2(embedder, bench)
    assert result.tasks == [] and result.missing == ["ImageNet-A", "Country211"]


def test_without_image_query_the_image_tasks_are_missing_or_from_image_dir(tmp_path):
    bench = load_mmeb_v2(tmp_path, resolve_v2_tasks(["ImageNet-1K", "K700"]), tmp_path)
    assert bench.image_source == "none" and bench.missing == ["ImageNet-1K", "K700"]


def _copy_task(src: Path, dst: Path, task: str) -> None:
    import shutil

    shutil.copytree(src / "image-query" / task, dst / "image-query" / task)
    shutil.copytree(src / "image-tasks/MMEB" / task, dst / "image-tasks/MMEB" / task)


def test_a_missing_column_is_one_line_naming_file_and_column(v2_images, tmp_path):
    root = tmp_path / "V2"
    _copy_task(v2_images, root, "OK-VQA")
    path = root / "image-query/OK-VQA/test-00000-of-00001.parquet"
    pq.write_table(pq.read_table(path).drop(["qry_inst"]), path)
    with pytest.raises(EvalDataError) as err:
        load_mmeb_v2(root, resolve_v2_tasks(["OK-VQA"]), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "missing column(s) qry_inst" in msg


def test_a_missing_image_fails_before_encoding_with_the_count(v2_images, tmp_path, embedder):
    root = tmp_path / "V2"
    _copy_task(v2_images, root, "CIRR")
    (root / "image-tasks/MMEB/CIRR/img_4.png").unlink()
    (root / "image-tasks/MMEB/CIRR/img_0.png").unlink()
    bench = load_mmeb_v2(root, resolve_v2_tasks(["CIRR"]), tmp_path)
    calls = embedder.calls
    with pytest.raises(MissingPathError, match=r"CIRR/img_0\.png' \(and 1 more\) does not exist"):
        run_mmeb_v2(embedder, bench)
    assert embedder.calls == calls  # nothing was encoded


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/hostname", "CIRR/../../outside.png", "link/x.png"])
def test_image_paths_outside_the_root_are_refused(v2_images, tmp_path, bad):
    root = tmp_path / "V2"
    _copy_task(v2_images, root, "CIRR")
    _draw(tmp_path / "elsewhere" / "x.png", 1)
    (root / "image-tasks/MMEB/link").symlink_to(tmp_path / "elsewhere")
    path = root / "image-query/CIRR/test-00000-of-00001.parquet"
    cols = _rows("CIRR")
    cols["tgt_img_path"] = [[bad, *cols["tgt_img_path"][0][1:]], *cols["tgt_img_path"][1:]]
    pq.write_table(pa.table(cols), path)
    with pytest.raises(EvalDataError, match="image root") as err:
        load_mmeb_v2(root, resolve_v2_tasks(["CIRR"]), tmp_path)
    assert "CIRR (test-00000-of-00001.parquet row 0)" in str(err.value) and bad in str(err.value)
