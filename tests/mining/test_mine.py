"""``mme5 mine`` on a tiny shard set with a tiny export: exclusions against an oracle, the written set
reads back and trains, and bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from mme5.cli.main import main
from mme5.data.datamodule import ShardDataModule
from mme5.data.shardsets import ShardSet
from mme5.mining import REPORT_FILE, MiningOptions, mine
from mme5.model.encoder import Encoder
from mme5.model.export import export
from mme5.model.load import EmbeddingModel, load
from mme5.records import Example, ShardSetWriter, Side, decode_sample, iter_shard, read_sizes, write_shard
from mme5.training.losses import LossSettings
from mme5.training.module import EmbeddingModule, EncoderSettings, OptimizerSettings
from tests.helpers.shard_fixtures import png_bytes

WORDS = [
    "red",
    "green",
    "blue",
    "small",
    "large",
    "round",
    "square",
    "old",
    "new",
    "bright",
    "dark",
    "striped",
]
BATCH = 64  # one forward pass for every list here, so the oracle's embeddings are the very same


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "tiny"
    export(Encoder("tiny-llava", max_length=32), folder, instructions={"retrieval": "Find it:"})
    return folder


@pytest.fixture(scope="module")
def model(tiny_export) -> EmbeddingModel:
    return load(tiny_export, device="cpu")


def examples() -> list[Example]:
    """18 samples, two doc_instructions; one positive shared by two samples, one query asked twice
    with different positives, some images on both sides, one existing negative each."""
    out = []
    for i in range(18):
        a, b = WORDS[i % 12], WORDS[(5 * i + 3) % 12]
        image = png_bytes(100 + i) if i % 5 == 0 else None
        out.append(
            Example(
                id=f"ex-{i}",
                query=Side(text=f"what is the {a} {b} thing number {i}?"),
                positive=Side(text=f"a {a} {b} object, item {i}", image_bytes=image, image_ext="png"),
                negatives=[Side(text=f"an unrelated {b} note {i}")],
                instruction="Find the matching item:",
                doc_instruction="Represent the item:" if i % 2 == 0 else "Represent the answer:",
                source="test",
            )
        )
    out[3].positive = Side(text=out[1].positive.text)  # same content, same doc_instruction as ex-1
    out[7].query = Side(text=out[5].query.text)  # one query, two positives (ex-5 and ex-7)
    return out


def write_input(folder: Path) -> Path:
    with ShardSetWriter(folder, prefix="train", samples_per_shard=7) as w:
        for ex in examples():
            w.write(ex)
    return folder


def oracle(model: EmbeddingModel, exs: list[Example], opts: MiningOptions) -> list[list[str]]:
    """The mined negatives' texts per sample, by brute force over the full score matrix."""
    cands: dict[int, int] = {}
    sides, raw, group = [], [], []
    for ex in exs:
        seen = ex.candidate_sides()
        pairs = [(ex.positive, seen[0])]
        if opts.include_negatives:
            pairs += list(zip(ex.negatives, seen[1:], strict=True))
        for r, s in pairs:
            if s.content_id() not in cands:
                cands[s.content_id()] = len(sides)
                sides.append(s)
                raw.append(r)
                group.append(ex.doc_instruction if opts.scope == "doc_instruction" else "")
    q = model.encode_sides([ex.query_side() for ex in exs], batch_size=BATCH).numpy()
    c = model.encode_sides(sides, batch_size=BATCH).numpy()
    s = q @ c.T
    out = []
    for i, ex in enumerate(exs):
        p = cands[ex.candidate_sides()[0].content_id()]
        pos_score = float(s[i, p])
        thr = {"relative": opts.margin * pos_score, "absolute": pos_score - opts.margin}.get(
            opts.margin_kind, np.inf
        )
        same_query = [e for e in exs if e.query_side().content_id() == ex.query_side().content_id()]
        positive_content = {e.positive.content_id() for e in same_query}
        ok = [
            j
            for j in range(len(sides))
            if group[j] == group[p] and raw[j].content_id() not in positive_content and s[i, j] <= thr
        ]
        ok.sort(key=lambda j: -s[i, j])
        out.append([str(raw[j].text) for j in ok[opts.skip_top : opts.skip_top + opts.negatives]])
    return out


def read_back(folder: Path) -> list[Example]:
    sizes = read_sizes(folder)
    exs = []
    for shard in sorted(folder.glob("*.tar")):
        exs += [decode_sample(s) for s in iter_shard(shard, expected=sizes[shard.name])]
    return exs


@pytest.mark.parametrize(
    "opts",
    [
        MiningOptions(negatives=3, margin=0.95),
        MiningOptions(negatives=2, skip_top=3, margin=0.02, margin_kind="absolute", include_negatives=True),
        MiningOptions(negatives=4, skip_top=1, margin_kind="none", scope="all"),
    ],
    ids=["relative", "absolute-skip-with-negatives", "none-all"],
)
def test_mined_negatives_match_the_oracle(model, tmp_path, opts):
    src = write_input(tmp_path / "in")
    report = mine(model, str(src), tmp_path / "out", opts, batch_size=BATCH, samples_per_shard=5)
    exs = examples()
    want = oracle(model, exs, opts)
    got = read_back(tmp_path / "out")
    assert [e.id for e in got] == [e.id for e in exs]
    for ex, orig, expected in zip(got, exs, want, strict=True):
        texts = [n.text for n in ex.negatives]
        assert texts == expected, ex.id
        assert orig.positive.content_id() not in {n.content_id() for n in ex.negatives}
        assert ex.positive.content_id() == orig.positive.content_id() and ex.query.text == orig.query.text
        mined = ex.meta["mined"]
        assert mined["fingerprint"] == model.fingerprint() and len(mined["scores"]) == len(texts)
        assert mined["ranks"] == list(range(opts.skip_top, opts.skip_top + len(texts)))
        assert mined["scores"] == sorted(mined["scores"], reverse=True)
        if opts.margin_kind == "relative":
            assert all(sc <= opts.margin * mined["positive_score"] + 1e-5 for sc in mined["scores"])
    # ex-5 and ex-7 ask the same question: neither gets the other's positive
    assert exs[7].positive.text not in [n.text for n in got[5].negatives]
    assert exs[5].positive.text not in [n.text for n in got[7].negatives]
    saved = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert saved["fingerprint"] == model.fingerprint() and saved["options"]["negatives"] == opts.negatives
    assert saved["samples"] == saved["written"] == 18 and report.duplicate_candidates >= 1
    assert saved["negatives"] == sum(len(e.negatives) for e in got)
    assert read_sizes(tmp_path / "out") == {p: 5 if p != "shard-000003.tar" else 3 for p in saved["shards"]}


def test_the_margin_excludes_likely_false_negatives(model, tmp_path):
    src = write_input(tmp_path / "in")
    loose = mine(model, str(src), tmp_path / "loose", MiningOptions(negatives=2, margin_kind="none"))
    strict = mine(model, str(src), tmp_path / "strict", MiningOptions(negatives=2, margin=0.9))
    assert loose.above_margin == 0 and strict.above_margin > 0
    for ex in read_back(tmp_path / "strict"):
        m = ex.meta["mined"]
        assert all(s <= 0.9 * m["positive_score"] + 1e-5 for s in m["scores"])


def test_keep_existing_appends_the_old_negatives(model, tmp_path):
    src = write_input(tmp_path / "in")
    mine(model, str(src), tmp_path / "out", MiningOptions(negatives=2, keep_existing=True))
    for ex, orig in zip(read_back(tmp_path / "out"), examples(), strict=True):
        assert [n.text for n in ex.negatives[-1:]] == [orig.negatives[0].text]
        assert ex.meta["mined"]["existing_negatives"] == 1


@pytest.mark.slow
def test_mined_set_trains_through_the_data_module(tiny_export, tmp_path):
    src = write_input(tmp_path / "in")
    out = tmp_path / "mined"
    assert (
        main(
            ["mine", "--model", str(tiny_export), "--shards", str(src), "--out", str(out), "--negatives", "2"]
        )
        == 0
    )
    data = ShardDataModule(
        model="tiny-llava", train=[ShardSet(str(out))], batch_size=4, num_workers=0, max_length=32
    )
    module = EmbeddingModule(
        encoder=EncoderSettings(model="tiny-llava", max_length=32),
        loss=LossSettings(),
        optimizer=OptimizerSettings(lr=1e-3),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2
    assert np.isfinite(float(trainer.logged_metrics["train/loss"]))


def test_bad_input_is_one_line(tiny_export, tmp_path, capsys):
    src = write_input(tmp_path / "in")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("no shards here")
    write_shard(tmp_path / "empty" / "shard-000000.tar", [])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "shard-000000.tar").write_bytes(b"")
    fresh = ["--out", str(tmp_path / "o")]
    good = ["--model", str(tiny_export), "--shards", str(src)]
    cases = [
        (["--model", str(tiny_export), "--shards", str(tmp_path / "notes"), *fresh], "holds no *.tar"),
        (["--model", str(tiny_export), "--shards", str(tmp_path / "empty"), *fresh], "no readable sample"),
        (["--model", str(tiny_export), "--shards", str(tmp_path / "nowhere"), *fresh], "does not exist"),
        (["--model", str(tmp_path / "no-model"), "--shards", str(src), *fresh], "does not exist"),
        (["--model", str(tmp_path / "notes"), "--shards", str(src), *fresh], "not an mme5 export"),
        ([*good, *fresh, "--negatives", "0"], "negatives must be >= 1"),
        ([*good, "--out", str(tmp_path / "taken")], "pass --overwrite"),
        ([*good, "--out", str(src)], "is the input shard set's folder"),
    ]
    for args, message in cases:
        code = main(["mine", *args])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith("mme5 mine: error:"), err
        assert message in err, err
    assert not (tmp_path / "o").exists()
