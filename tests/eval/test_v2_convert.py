"""The 18 MMEB-V2 video tasks read from their official hub datasets: per task, a few rows with the
official columns written in the hub layout, converted by mme5 and compared with an oracle that builds
the rows as the official loader does (TIGER-AI-Lab/VLM2Vec at 6e1e1d4, ``src/data/eval_dataset/*.py``,
each oracle citing its lines); then one root in the official layout read and scored end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from mme5.errors import ConfigError
from mme5.eval.datasets import EvalDataError
from mme5.eval.items import ItemTable
from mme5.eval.v2 import V2_TASKS, load_mmeb_v2, resolve_v2_tasks, run_mmeb_v2
from mme5.eval.v2.convert import HUB_VIDEO_TASKS, MVBENCH_SUBSETS, convert_hub_rows, video_retrieval_rows
from mme5.eval.v2.readers import read_video_task, task_present, video_task_rows
from mme5.eval.v2.tasks import tasks_of
from tests.eval.test_v2_eval import _oracle

# ---------------------------------------------------------------------------------------------------
# The oracle: the official data_prepare functions restated on a column batch (``batch_dict``), for a
# backbone whose video and image token is Phi-3-V's ``<|image_1|>`` (src/model/processor.py line 60).

TOK = "<|image_1|>"
TGT = "Understand the content of the provided video."  # msrvtt_dataset.py line 11 (and the others)
QA = (  # videomme_dataset.py line 18 (nextqa 18, egoschema 18, activitynetqa 23, mvbench 101)
    "Given a video and a question, select the most accurate answer from the provided candidates. "
    "Return only the exact text of your chosen answer. Question: "
)
CLS_INST = {  # video_classification_utils.py lines 16-22
    "Kinetics-700": "Recognize the category of the video content.",
    "SmthSmthV2": "What actions or object interactions are being performed by the person in the video?",
    "UCF101": "What activities or sports are being performed by the person in the video?",
    "HMDB51": "What actions or objects interactions are the person in the video doing?",
    "Breakfast": "Recognize the breakfast type that the person is cooking in the video. ",
}
BREAKFAST = [
    "pancake",
    "cereal",
    "sandwich",
    "scrambledegg",
    "friedegg",
    "coffee",
    "milk",
    "tea",
    "juice",
    "salad",
]


def process_input_text(instruction, text=None, add_video_token=False, add_image_token=False):
    # processor.py lines 663-673
    prompt = instruction
    if text:
        prompt = prompt + " " + text
    if add_video_token:
        prompt = TOK + " " + prompt
    if add_image_token:
        prompt = TOK + " " + prompt
    return prompt


def process_query(query, prompt, video_token=TOK):
    # videomme_dataset.py lines 10-15 (the same in mvbench, nextqa, egoschema, activitynetqa)
    return f"{video_token} {prompt} {query}" if prompt else f"{query} {video_token}"


def qa_template(question, candidates, answer):
    # src/utils/vision_utils/vision_utils.py lines 34-46
    question = f"{question}\n" + "Options:\n"
    answer_idx, options = -1, []
    for idx, c in enumerate(candidates):
        question += f"({chr(ord('A') + idx)}) {c}\n"
        options.append(f"({chr(ord('A') + idx)}) {c}")
        if c == answer:
            answer_idx = idx
    return question.rstrip(), options, f"({chr(ord('A') + answer_idx)}) {answer}", answer_idx


def _out(q, qf, ct, cf, names, label):
    return {
        "query_text": q,
        "query_frames": qf,
        "cand_text": ct,
        "cand_frames": cf,
        "names": names,
        "label": label,
    }


def o_retrieval(task, b, fr):
    """msrvtt_dataset.py lines 21-41, msvd 21-40, didemo 21-41, vatex 21-40, youcook2 21-40."""
    inst = {
        "MSR-VTT": "Find a video that contains the following visual content:",  # msrvtt line 10
        "MSVD": "Find the video snippet that corresponds to the given summary:",  # msvd line 10
        "DiDeMo": "Find a video that includes the following described scenes:",  # didemo line 10
        "VATEX": "Select a video that fits the description provided:",  # vatex line 10
        "YouCook2": "Find a video that demonstrates the following action while making a recipe:",  # line 10
    }[task]
    if task == "MSR-VTT":
        it = [(n, c) for n, _, c in zip(b["video_id"], b["video"], b["caption"], strict=False)]
    elif task == "MSVD":
        it = [(n, c[0]) for n, _, c in zip(b["video_id"], b["video"], b["caption"], strict=False)]
    elif task == "DiDeMo":
        it = [
            (os.path.splitext(os.path.basename(v))[0], c)
            for v, c in zip(b["video"], b["caption"], strict=False)
        ]
    elif task == "VATEX":
        it = [(n, c[0]) for n, c in zip(b["videoID"], b["enCap"], strict=False)]
    else:
        it = [(n, t) for n, _, t in zip(b["id"], b["video_path"], b["sentence"], strict=False)]
    tgt = process_input_text(TGT, add_video_token=True)
    return [_out(process_input_text(inst, text=c), None, [tgt], [os.path.join(fr, n)], [n], n) for n, c in it]


def o_classification(name, b, fr):
    """video_classification_datasets.py lines 21-39 (corpus: lines 61-64)."""
    out = []
    for video_id, label in zip(b["video_id"], b["pos_text"], strict=False):
        q = process_input_text(CLS_INST[name], add_video_token=True)
        out.append(_out(q, os.path.join(fr, video_id), [label], [None], [label], label))
    return out


def o_ssv2(b, fr):
    """ssv2_dataset.py lines 20-40; the first 1000 rows (video.yaml line 6, dataset_utils.py 11-14)."""
    out = []
    for video_id, pos, cands in list(zip(b["video_id"], b["pos_text"], b["neg_text"], strict=False))[:1000]:
        q = process_input_text(CLS_INST["SmthSmthV2"], add_video_token=True)
        out.append(_out(q, os.path.join(fr, str(video_id)), cands, [None] * len(cands), cands, pos))
    return out


def o_videomme(b, fr):
    """videomme_dataset.py lines 19, 30-35, 63-71."""
    out, letters = [], ["A", "B", "C", "D"]
    cols = ("question", "videoID", "options", "answer", "question_id", "domain", "sub_category")
    for query, vid, options, answer, *_ in zip(*(b[c] for c in cols), strict=False):
        q = process_query(query + "\n" + "\n".join(options), prompt=QA)
        texts = [o[o.find(". ") :].strip(". ") for o in options]
        out.append(
            _out(q, f"{fr}/{vid}", texts, [None] * len(options), options, options[letters.index(answer)])
        )
    return out


def o_mvbench(b, fr):
    """mvbench_dataset.py lines 112-119, 150-158."""
    out = []
    for subset, query, video, cands, answer in zip(
        b["subset"], b["question"], b["video"], b["candidates"], b["answer"], strict=False
    ):
        query, cands, answer, _ = qa_template(process_query(query, prompt=QA), cands, answer)
        out.append(_out(query, f"{fr}/{subset}/{video}", cands, [None] * len(cands), cands, answer))
    return out


def o_nextqa(b, fr):
    """nextqa_dataset.py lines 30-37, 65-73."""
    out = []
    cols = ("video", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4")
    for video, query, answer, _qid, _type, a0, a1, a2, a3, a4 in zip(*(b[c] for c in cols), strict=False):
        options = [a0, a1, a2, a3, a4]
        query, _, _, _ = qa_template(process_query(query, prompt=QA), options, answer)
        out.append(_out(query, f"{fr}/{video}", options, [None] * 5, options, options[answer]))
    return out


def o_egoschema(b, fr):
    """egoschema_dataset.py lines 30-36, 64-72."""
    out = []
    for vid, query, answer, _qi, options in zip(
        b["video_idx"], b["question"], b["answer"], b["question_idx"], b["option"], strict=False
    ):
        q = process_query(query + " ".join(options), prompt=QA)
        texts = [o[o.find(". ") :].strip(". ") for o in options]
        out.append(_out(q, f"{fr}/{vid}", texts, [None] * len(options), options, options[int(answer)]))
    return out


def o_activitynetqa(b, fr):
    """activitynetqa_dataset.py lines 24, 34-39, 67-75."""
    opts = ["yes", "no"]
    return [
        _out(process_query(q + "? (A) yes; (B) no.", prompt=QA), f"{fr}/v_{v}", opts, [None, None], opts, a)
        for v, q, a, _ in zip(b["video_name"], b["question"], b["answer"], b["question_id"], strict=False)
    ]


def o_moment(b, fr):
    """moment_retrieval_datasets.py lines 10-11, 25-39, 57-76 (the clip folders listed sorted here)."""
    out = []
    for query, video_path in zip(b["query"], b["video_path"], strict=False):
        video_name = os.path.splitext(os.path.basename(video_path))[0]
        frames_dir = os.path.join(fr, video_name)
        q = process_input_text(
            "Find the clip that corresponds to the described scene in the given video:",
            text=query,
            add_video_token=True,
        )
        names, pos = [], None
        for d in sorted(os.listdir(frames_dir)):
            if d == "query" or os.path.isfile(os.path.join(frames_dir, d)):
                continue
            if d.startswith("positive"):
                pos = os.path.join(frames_dir, d)
            names.append(os.path.join(frames_dir, d))
        tgt = process_input_text(TGT, add_video_token=True)
        out.append(_out(q, os.path.join(frames_dir, "query"), [tgt] * len(names), names, names, pos))
    return out


def o_momentseeker(b, fr):
    """momentseeker_dataset.py lines 12-15, 26-94."""
    out = []
    for query, pos, neg, given in zip(
        b["query"], b["positive_frames"], b["negative_frames"], b["input_frames"], strict=False
    ):
        if given.endswith(".mp4"):
            q = process_input_text(
                "Find the clip that corresponds to the given sentence and video segment:",
                text=query,
                add_video_token=True,
            )
            qf = os.path.join(fr, "video_frames", given.split(".mp4")[0].replace("/", "_"))
        elif given.endswith(".jpg"):
            q = process_input_text(
                "Select the video clip that aligns with the given text and image:",
                text=query,
                add_image_token=True,
            )
            qf = os.path.join(fr, "", f"query_{given}")
        else:
            q, qf = process_input_text("Find the clip that corresponds to the given text:", text=query), None
        pos_names = [
            os.path.join(fr, "video_frames", e["output_path"].replace("/", "_").split(".mp4")[0]) for e in pos
        ]
        neg_names = [
            os.path.join(fr, "video_frames", e["output_path"].replace("/", "_").split(".mp4")[0]) for e in neg
        ]
        names = pos_names + neg_names
        tgt = process_input_text("Understand the content of the provided video clip.", add_video_token=True)
        out.append(_out(q, qf, [tgt] * len(names), names, names, pos_names))
    return out


# ---------------------------------------------------------------------------------------------------
# Fixtures in the official hub layout (adhoc/data/download_datasets.py: video-tasks/<repo name>/...).

PATH_NAMES = {"QVHighlight", "Charades-STA", "MomentSeeker"}  # the official names are frame paths


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _qa_options(i: int) -> list[str]:
    return [f"A. red {i}", f"B. blue {i}", "C. green. dark", "D.odd"]  # D: no ". " (find = -1)


def hub_fixture(root: Path) -> dict[str, tuple[Path, list[dict]]]:
    """Task -> (the file written, its rows); folders for the moment-retrieval candidates."""
    vt = root / "video-tasks"
    out: dict[str, tuple[Path, list[dict]]] = {}

    def put(task, rel, rows):
        _write(vt / rel, rows)
        out[task] = (vt / rel, rows)

    put(
        "MSR-VTT",
        "MSR-VTT/test_1k/test-00000-of-00001.parquet",
        [
            {"video_id": f"video{i}", "video": f"video{i}.mp4", "caption": f"a man {i}", "url": "x"}
            for i in range(3)
        ],
    )
    put(
        "MSVD",
        "MSVD/test.parquet",
        [
            {"video_id": f"-_aaMGK6GGw_{i}", "video": f"v{i}.avi", "caption": [f"dog {i}", "second"]}
            for i in range(2)
        ],
    )
    _write(vt / "MSVD/test.jsonl", [{"video_id": "ignored"}])  # parquet first (download_datasets.py 116-127)
    put(
        "DiDeMo",
        "DiDeMo/data/test-00000-of-00001.parquet",
        [{"video": f"videos/clip_{i}.mp4", "caption": f"a cat {i}"} for i in range(2)],
    )
    put(
        "VATEX",
        "VATEX/test.jsonl",
        [{"videoID": f"id{i}", "enCap": [f"cap {i}", "b"], "chCap": []} for i in range(2)],
    )
    put(
        "YouCook2",
        "YouCook2/val-00000-of-00001.parquet",
        [
            {"id": f"y{i}", "video_path": f"val/{i}.mp4", "sentence": f"stir {i}", "youtube_id": "z"}
            for i in range(2)
        ],
    )
    put(
        "K700",
        "Kinetics-700/test.parquet",
        [{"video_id": f"k{i}", "pos_text": lab} for i, lab in enumerate(["archery", "yoga", "archery"])],
    )
    put(
        "HMDB51",
        "HMDB51/default/test/0000.parquet",
        [{"video_id": f"h{i}", "pos_text": "wave"} for i in range(2)],
    )
    put("UCF101", "UCF101/test.jsonl", [{"video_id": f"u{i}", "pos_text": "Kayaking"} for i in range(2)])
    put("Breakfast", "Breakfast/test.parquet", [{"video_id": f"b{i}", "pos_text": "tea"} for i in range(2)])
    put(
        "SmthSmthV2",
        "SmthSmthV2/test.parquet",
        [
            {"video_id": 1000 + i, "pos_text": f"Pushing {i}", "neg_text": [f"Pulling {i}", f"Pushing {i}"]}
            for i in range(1003)
        ],
    )
    put(
        "Video-MME",
        "Video-MME/test.parquet",
        [
            {
                "video_id": "001",
                "duration": "short",
                "domain": "d",
                "sub_category": "s",
                "url": "u",
                "videoID": f"vm{i}",
                "question_id": f"{i}-1",
                "task_type": "t",
                "question": f"What colour {i}?",
                "options": _qa_options(i),
                "answer": "ABCD"[i % 4],
            }
            for i in range(4)
        ],
    )
    mv = []
    for s in reversed(MVBENCH_SUBSETS):  # written in any order; read in the loader's
        rows = [
            {
                "video": f"{s}_{i}.mp4",
                "question": f"Q {s}?",
                "candidates": ["up", "down", "up"],
                "answer": "up",
                "accurate_start": 0.0,
            }
            for i in range(1 if s != "action_sequence" else 2)
        ]
        ext = "jsonl" if s == "episodic_reasoning" else "parquet"
        _write(vt / f"MVBench/{s}/train-00000-of-00001.{ext}", rows)
    for s in MVBENCH_SUBSETS:
        n = 2 if s == "action_sequence" else 1
        mv += [
            {
                "video": f"{s}_{i}.mp4",
                "question": f"Q {s}?",
                "candidates": ["up", "down", "up"],
                "answer": "up",
                "accurate_start": 0.0,
                "subset": s,
            }
            for i in range(n)
        ]
    out["MVBench"] = (vt / "MVBench", mv)
    put(
        "NExTQA",
        "NExTQA/MC/test-00000-of-00001.parquet",
        [
            {
                "video": 4010069381 + i,
                "frame_count": 9,
                "width": 1,
                "height": 1,
                "question": f"why {i}",
                "answer": i % 5,
                "qid": i,
                "type": "CW",
                **{f"a{k}": f"opt {k}" for k in range(5)},
            }
            for i in range(3)
        ],
    )
    put(
        "EgoSchema",
        "egoschema/Subset/test.jsonl",
        [
            {
                "video_idx": f"e{i}",
                "question": f"What did c do {i}?",
                "answer": str(i),
                "question_idx": f"q{i}",
                "option": [f"A. first {i}", f"B. second {i}", "C. x", "D. y", "E. z"],
            }
            for i in range(2)
        ],
    )
    put(
        "ActivityNetQA",
        "ActivityNetQA/test.parquet",
        [
            {
                "video_name": f"an{i}",
                "question": f"is it day {i}",
                "answer": ["yes", "no"][i],
                "question_id": f"v{i}",
                "type": 3,
            }
            for i in range(2)
        ],
    )
    for task in ("QVHighlight", "Charades-STA"):
        fr = root / V2_TASKS[task].data_dir
        for v in ("vidA", "vidB"):
            for clip in ("query", "negative_1", "positive_0", "negative_0"):
                (fr / v / clip).mkdir(parents=True, exist_ok=True)
        put(
            task,
            f"{task}/test.parquet",
            [
                {"query": f"a man talks {i}", "video_path": f"some/dir/vid{'AB'[i]}.mp4", "duration": 1.0}
                for i in range(2)
            ],
        )
    pos = [
        {"output_path": "movie/clip_p0.mp4", "start": 0.0},
        {"output_path": "movie/clip_p1.mp4", "start": 1.0},
    ]
    neg = [{"output_path": "movie/clip_n0.mp4", "start": 2.0}]
    put(
        "MomentSeeker",
        "MomentSeeker/test.parquet",
        [
            {
                "query": "he opens the door",
                "positive_frames": pos,
                "negative_frames": neg,
                "input_frames": "movie/q0.mp4",
            },
            {
                "query": "the dog runs",
                "positive_frames": pos[:1],
                "negative_frames": neg,
                "input_frames": "img_3.jpg",
            },
            {"query": "rain falls", "positive_frames": pos[1:], "negative_frames": neg, "input_frames": ""},
        ],
    )
    return out


def oracle(task: str, rows: list[dict], frame_root: str) -> list[dict]:
    """The official rows of a task (its data_prepare on the rows as one batch)."""
    batch = {k: [r.get(k) for r in rows] for k in rows[0]}
    name = {"K700": "Kinetics-700"}.get(task, task)  # video.yaml line 30
    if task in ("MSR-VTT", "MSVD", "DiDeMo", "VATEX", "YouCook2"):
        return o_retrieval(task, batch, frame_root)
    if task in ("K700", "HMDB51", "UCF101", "Breakfast"):
        return o_classification(name, batch, frame_root)
    fn = {
        "SmthSmthV2": o_ssv2,
        "Video-MME": o_videomme,
        "MVBench": o_mvbench,
        "NExTQA": o_nextqa,
        "EgoSchema": o_egoschema,
        "ActivityNetQA": o_activitynetqa,
        "QVHighlight": o_moment,
        "Charades-STA": o_moment,
        "MomentSeeker": o_momentseeker,
    }[task]
    return fn(batch, frame_root)


def as_official(task: str, row: dict, frame_root: str) -> dict:
    """An mme5 reader row in the oracle's terms (frame folders as paths under the frame root)."""

    def path(v):
        return os.path.join(frame_root, v) if v else None

    names, label = row["cand_names"], row["label_name"]
    if task in PATH_NAMES:
        names = [path(n) for n in names]
        label = [path(n) for n in label] if isinstance(label, list) else path(label)
    return _out(
        row["query_text"],
        path(row["query_video"]),
        row["cand_text"],
        [path(v) for v in row["cand_video"]],
        names,
        label,
    )


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub") / "MMEB-V2"
    return root, hub_fixture(root)


def test_every_video_task_has_a_converter():
    assert sorted(HUB_VIDEO_TASKS) == sorted(t.name for t in tasks_of("video"))


@pytest.mark.parametrize("task", [t.name for t in tasks_of("video")])
def test_hub_rows_become_the_official_rows(hub_root, task):
    root, written = hub_root
    assert task_present(root, V2_TASKS[task])
    data = video_task_rows(root, V2_TASKS[task])
    fr = str(root / V2_TASKS[task].data_dir)
    want = oracle(task, written[task][1], fr)
    got = [as_official(task, r, fr) for r in data.rows]
    assert len(got) == len(want) and got == want
    if task == "SmthSmthV2":
        assert len(got) == 1000  # of 1003
    if task == "Breakfast":  # video_classification_utils.py line 2, in order
        assert [c["cand_name"] for c in data.corpus] == BREAKFAST
    elif task in ("K700", "HMDB51", "UCF101"):
        names = [c["cand_name"] for c in data.corpus]
        first, last, n = {
            "K700": ("waiting_in_line", "clay_pottery_making", 700),  # utils line 3
            "UCF101": ("Kayaking", "Fencing", 101),  # line 5
            "HMDB51": ("ride_bike", "fall_floor", 51),
        }[task]  # line 6
        assert (names[0], names[-1], len(set(names))) == (first, last, n)
        assert all(c["cand_text"] == c["cand_name"] and c["cand_video"] == "" for c in data.corpus)
    else:
        assert data.corpus == []


def test_spot_checks_of_the_official_texts(hub_root):
    root, _ = hub_root
    rows = {
        t: video_task_rows(root, V2_TASKS[t]).rows
        for t in ("Video-MME", "MVBench", "Breakfast", "MomentSeeker")
    }
    vm = rows["Video-MME"][0]
    assert (
        vm["query_text"].startswith(f"{TOK} Given a video")
        and "Question:  What colour 0?\nA. red 0" in vm["query_text"]
    )
    assert vm["cand_text"] == ["red 0", "blue 0", "green. dark", "d"] and vm["label_name"] == "A. red 0"
    mv = rows["MVBench"][0]
    assert mv["query_video"] == "episodic_reasoning/episodic_reasoning_0.mp4"
    assert mv["query_text"].endswith("Options:\n(A) up\n(B) down\n(C) up") and mv["label_name"] == "(C) up"
    assert rows["Breakfast"][0]["query_text"].endswith("in the video. ")
    ms = rows["MomentSeeker"]
    assert ms[1]["query_video"] == "query_img_3.jpg" and ms[2]["query_video"] == ""
    assert ms[0]["cand_names"][0] == "video_frames/movie_clip_p0"


def test_bad_hub_rows_fail_in_one_line(tmp_path):
    with pytest.raises(EvalDataError) as e:
        convert_hub_rows("Video-MME", [{"question": "q", "videoID": "v", "options": ["A. a"], "answer": "A"}])
    assert str(e.value) == "Video-MME (row 0): no column 'question_id'"
    _write(
        tmp_path / "video-tasks/NExTQA/MC/test.parquet",
        [{"video": 1, "question": "q", "answer": 0, "qid": 1}],
    )
    with pytest.raises(EvalDataError) as e:
        read_video_task(tmp_path, V2_TASKS["NExTQA"], ItemTable(), tmp_path / "w")
    assert str(e.value) == "NExTQA (video-tasks/NExTQA/MC/test.parquet row 0): no column 'type'"
    assert "\n" not in str(e.value)
    _write(tmp_path / "video-tasks/MVBench/action_sequence/train.parquet", [{"video": "a"}])
    assert task_present(tmp_path, V2_TASKS["MVBench"])
    with pytest.raises(
        EvalDataError, match=r"subset 'episodic_reasoning' has no train files .*\(and 18 more\)"
    ):
        read_video_task(tmp_path, V2_TASKS["MVBench"], ItemTable(), tmp_path / "w")
    assert not task_present(tmp_path, V2_TASKS["MSR-VTT"])
    _write(tmp_path / "video-tasks/MSR-VTT/test.parquet", [{"video_id": "v"}])  # no test_1k folder: fallback
    assert task_present(tmp_path, V2_TASKS["MSR-VTT"])
    with pytest.raises(
        EvalDataError, match=r"^MSR-VTT \(video-tasks/MSR-VTT/test.parquet row 0\): no column 'video'$"
    ):
        read_video_task(tmp_path, V2_TASKS["MSR-VTT"], ItemTable(), tmp_path / "w")
    with pytest.raises(EvalDataError, match=r"ActivityNetQA .*answer 'maybe'"):
        convert_hub_rows(
            "ActivityNetQA", [{"video_name": "v", "question": "q", "answer": "maybe", "question_id": 1}]
        )
    with pytest.raises(ConfigError, match="video tasks"):
        convert_hub_rows("ImageNet-1K", [])


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


# ---------------------------------------------------------------------------------------------------
# End to end: a root in the official layout (hub snapshots + frame folders of drawn JPEGs) scored.

E2E = ["HMDB51", "Video-MME", "MSR-VTT", "QVHighlight", "MomentSeeker"]  # report order


def _draw(folder: Path, seed: int, n: int = 4) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    color = tuple(int(c) for c in rng.integers(0, 255, 3))
    for i in range(n):
        im = Image.new("RGB", (24, 24), (240, 240, 240))
        ImageDraw.Draw(im).rectangle([i * 4, 4, i * 4 + 8, 16], fill=color)
        im.save(folder / f"frame_{i + 1:04d}.jpg", quality=90)


def _official_root(root: Path) -> None:
    vt = root / "video-tasks"
    _write(
        vt / "HMDB51/test.parquet",
        [{"video_id": f"k{i}", "pos_text": lab} for i, lab in enumerate(["wave", "golf", "chew"])],
    )
    _write(
        vt / "Video-MME/test.parquet",
        [
            {
                "videoID": f"m{i}",
                "question": f"colour {i}?",
                "options": _qa_options(i),
                "answer": "ABCD"[i],
                "question_id": str(i),
                "domain": "d",
                "sub_category": "s",
            }
            for i in range(3)
        ],
    )
    _write(
        vt / "MSR-VTT/test_1k/test-00000-of-00001.parquet",
        [{"video_id": f"video{i}", "video": f"video{i}.mp4", "caption": f"caption {i}"} for i in range(4)],
    )
    _write(
        vt / "QVHighlight/test.parquet", [{"query": f"q {i}", "video_path": f"v{i}.mp4"} for i in range(3)]
    )
    clips = [{"output_path": f"m/c{i}.mp4"} for i in range(3)]
    _write(
        vt / "MomentSeeker/test.parquet",
        [
            {
                "query": "a",
                "positive_frames": clips[:1],
                "negative_frames": clips[1:],
                "input_frames": "m/q.mp4",
            },
            {
                "query": "b",
                "positive_frames": clips[1:2],
                "negative_frames": clips[2:],
                "input_frames": "p.jpg",
            },
        ],
    )
    seed = 0
    for task, folders in {
        "HMDB51": ["k0", "k1", "k2"],
        "Video-MME": ["m0", "m1", "m2"],
        "MSR-VTT": ["video0", "video1", "video2"],  # video3 absent: listed, its row skipped
        "QVHighlight": [
            f"v{i}/{c}" for i in range(2) for c in ("query", "positive_1", "negative_1", "negative_2")
        ],
        "MomentSeeker": ["video_frames/m_q", "video_frames/m_c0", "video_frames/m_c1", "video_frames/m_c2"],
    }.items():
        for f in folders:
            seed += 1
            _draw(root / V2_TASKS[task].data_dir / f, seed)
    Image.new("RGB", (24, 24), (10, 200, 10)).save(root / V2_TASKS["MomentSeeker"].data_dir / "query_p.jpg")


def test_official_layout_is_read_and_scored_end_to_end(tmp_path, embedder):
    root = tmp_path / "MMEB-V2"
    _official_root(root)
    bench = load_mmeb_v2(root, resolve_v2_tasks(E2E), tmp_path / "work")
    assert bench.missing == []
    by = {s.name: s for s in bench.sets}
    assert by["MSR-VTT"].skipped == 1 and by["QVHighlight"].skipped == 1  # v2 has no frame folders
    assert any("MSR-VTT" in m and "video3 (absent)" in m for m in bench.missing_frames)
    assert len(by["HMDB51"].pool) == 51 and by["HMDB51"].names[:4] == ["wave", "golf", "chew", "ride_bike"]
    assert (by["QVHighlight"].local or [])[:1] == [[0, 1, 2]] and by["MomentSeeker"].rels[0] == {0: 1.0}
    result = run_mmeb_v2(embedder, bench, frame_input="tiled")
    assert [t.name for t in result.tasks] == E2E
    want = _oracle(bench, embedder)
    for t in result.tasks:
        assert t.metrics["hit@1"] == pytest.approx(want[t.name][0])
    # the same rows as mme5's own files give the same scores (one reader for both)
    own = tmp_path / "own"
    (own / "video-tasks").mkdir(parents=True)
    (own / "video-tasks/frames").symlink_to(root / "video-tasks/frames")
    for task in E2E:
        data = video_task_rows(root, V2_TASKS[task])
        _write(own / f"video-tasks/{task}.jsonl", data.rows)
        if data.corpus:
            _write(own / f"video-tasks/{task}.corpus.jsonl", data.corpus)
    again = run_mmeb_v2(
        embedder, load_mmeb_v2(own, resolve_v2_tasks(E2E), tmp_path / "work"), frame_input="tiled"
    )
    assert [t.metrics for t in again.tasks] == [t.metrics for t in result.tasks]
