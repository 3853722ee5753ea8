"""MMEB-V2's 36 image tasks read as VLM2Vec's V2 evaluation reads them (instruction apart from the text).

Sources: TIGER-AI-Lab/VLM2Vec at 6e1e1d4 (the commit :mod:`mme5.eval.v2.tasks` cites).

Layout under an MMEB-V2 root::

    image-query/<Task>/test-*.parquet      the rows of hub dataset ``ziyjiang/MMEB_Test_Instruct``, config
                                           <Task>, split ``test`` (``image_cls_dataset.py`` lines 39, 43;
                                           the same in the other four parsers); also ``<Task>.parquet``,
                                           ``<Task>/test/*.parquet``, ``<Task>/*.arrow`` (the file names
                                           :func:`mme5.eval.datasets.resolve_mmeb` accepts)
    image-tasks/MMEB/<...>                 the images: ``image-tasks/mmeb_v1.tar.gz`` of TIGER-Lab/MMEB-V2
                                           unpacked as it is (it holds ``MMEB/``); ``image-tasks/`` when
                                           ``MMEB/*`` was moved up, as ``experiments/public/data/
                                           download_data.sh`` lines 56-61 do, which is the folder
                                           ``experiments/public/eval/image.yaml`` names (``image_root:
                                           image-tasks/``, e.g. line 6)

Which parser reads a task (``image.yaml``): ``image_cls`` the ten classification tasks (lines 2-61),
``image_qa`` the ten VQA tasks (63-122), ``image_i2t`` MSCOCO_i2t and VisualNews_i2t (124-135),
``image_t2i`` VisDial, MSCOCO_t2i, VisualNews_t2i, WebQA, EDIS, Wiki-SS-NQ (137-172), ``image_i2i_vg``
CIRR, NIGHTS, OVEN, FashionIQ and the four grounding tasks (174-222); every task ``eval_type: local``.

Texts, with mme5's public image token ``<|image_1|>`` (:data:`mme5.records.PUBLIC_IMAGE_TOKEN`,
Phi-3-V's token in ``src/model/processor.py`` line 60; the backbone adapters rewrite it) and the
backbone-generic branch of ``process_input_text`` (processor.py lines 663-671: the instruction, then
``" " + text`` when there is text, then the image token and a space in front):

- ``image_cls`` / ``image_i2t`` query (``image_cls_dataset.py`` lines 17-20, ``image_i2t_eval.py``
  lines 17-20): ``qry_inst`` without ``<|image_1|>``, ``process_input_text(inst, text=qry_text,
  add_image_token=True)``, then ``.replace(" \\n", "\\n") + "\\n"``; the query image ``qry_img_path``
  (line 22); the candidates the texts of ``tgt_text`` without images (lines 26-27).
- ``image_qa`` (``image_qa_dataset.py`` lines 17-20, 26-27): the same, the instruction being
  ``"\\n" + qry_inst.replace("<|image_1|>", "").strip()``.
- ``image_t2i`` (``image_t2i_eval.py``): the query is text only, ``qry_inst`` (image token rewritten,
  line 18) ``+ " " + qry_text + "\\n"``, one more ``"\\n"`` for VisDial (lines 19-23). A candidate is
  the image ``tgt_img_path[j]`` (line 39) with the text ``process_input_text(tgt_inst + " " +
  tgt_text[j], text="", add_image_token=True).replace(" \\n", "\\n") + "\\n"`` when ``tgt_text[0]`` is
  not blank (lines 26-33), else that of ``tgt_inst`` alone for every candidate (lines 34-38); in both
  ``tgt_inst`` loses its ``<|image_1|>`` first (lines 27, 35).
- ``image_i2i_vg`` (``image_i2i_vg_dataset.py``): the query as ``image_qa``'s (lines 17-24); the
  candidates as ``image_t2i``'s, except that the text of ``tgt_inst`` alone gets no trailing ``"\\n"``
  (line 38).

Candidate names (``dataset_infos["cand_names"]``): the candidate texts (``image_cls_dataset.py`` line
29, ``image_qa_dataset.py`` 29, ``image_i2t_eval.py`` 29), the image paths (``image_t2i_eval.py``
line 44), ``path + ":" + caption.strip('"')`` (``image_i2i_vg_dataset.py`` line 45); the truth is the
first (``label_name``, e.g. line 30 / 45 / 48). The evaluation encodes one candidate per name, the
first one met in row order (``generate_cand_dataset``, ``base_eval_dataset.py`` lines 121-137), and
scores a row against the embeddings of its own names (``eval.py`` lines 302, 325-334); so here a
candidate whose name was met before is the item of that first one (a later row's different text or
image under the same name is not encoded, as there). ``max_rows`` keeps the first rows, as
``num_sample_per_subset`` does (``image_cls_dataset.py`` lines 44-49).

The rows become :class:`mme5.eval.datasets.RetrievalSet` s of one :class:`~mme5.eval.datasets.Benchmark`
(truth first), so :func:`mme5.eval.runner.run_benchmark` encodes each distinct item once (cache,
ranks), checks the images before encoding (a missing image fails in one line with the count of the
others, as for MMEB-V1) and scores hit@1 with the truth winning an exact tie.

Bad input: a table without a column its parser reads is one :class:`~mme5.eval.datasets.EvalDataError`
line naming the file and the column(s); an image path that is absolute, holds ``..`` or resolves
outside the image root is refused (``EvalDataError`` naming file, row and path), never read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from mme5.errors import ConfigError, MissingPathError
from mme5.eval.datasets import Benchmark, DatasetInfo, EvalDataError, RetrievalSet, dataset_files
from mme5.eval.items import Item, ItemError, ItemTable
from mme5.mmeb import MMEB_DATASETS, MMEB_META_TASK, MMEB_OOD
from mme5.records import PUBLIC_IMAGE_TOKEN

Parser = Literal["image_cls", "image_qa", "image_i2t", "image_t2i", "image_i2i_vg"]

#: The folder of the image tasks' rows under an MMEB-V2 root.
IMAGE_QUERY_DIR = "image-query"
#: Image roots under an MMEB-V2 root, the first that is a folder wins (see the module docstring).
IMAGE_ROOTS = ("image-tasks/MMEB", "image-tasks")

_BY_PARSER: dict[Parser, tuple[str, ...]] = {
    "image_cls": (
        *("ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397", "Place365"),
        *("ImageNet-A", "ImageNet-R", "ObjectNet", "Country211"),
    ),
    "image_qa": (
        *("OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W", "ScienceQA"),
        *("VizWiz", "GQA", "TextVQA"),
    ),
    "image_i2t": ("MSCOCO_i2t", "VisualNews_i2t"),
    "image_t2i": ("VisDial", "MSCOCO_t2i", "VisualNews_t2i", "WebQA", "EDIS", "Wiki-SS-NQ"),
    "image_i2i_vg": (
        *("CIRR", "NIGHTS", "OVEN", "FashionIQ"),
        *("MSCOCO", "RefCOCO", "RefCOCO-Matching", "Visual7W-Pointing"),
    ),
}
_PARSER_OF: dict[str, Parser] = {n: p for p, names in _BY_PARSER.items() for n in names}

#: The ``dataset_parser`` of each image task (``experiments/public/eval/image.yaml``), in MMEB order.
V2_IMAGE_PARSERS: dict[str, Parser] = {n: _PARSER_OF[n] for n in MMEB_DATASETS}

#: The columns each parser reads (the ``zip(batch_dict[...])`` of its ``data_prepare``, line 16 of the
#: cls / qa / i2t / i2i_vg files, line 17 of ``image_t2i_eval.py``).
PARSER_COLUMNS: dict[str, tuple[str, ...]] = {
    "image_cls": ("qry_inst", "qry_text", "qry_img_path", "tgt_text"),
    "image_qa": ("qry_inst", "qry_text", "qry_img_path", "tgt_text"),
    "image_i2t": ("qry_inst", "qry_text", "qry_img_path", "tgt_text"),
    "image_t2i": ("qry_inst", "qry_text", "tgt_inst", "tgt_text", "tgt_img_path"),
    "image_i2i_vg": ("qry_inst", "qry_text", "qry_img_path", "tgt_inst", "tgt_text", "tgt_img_path"),
}


def has_image_query(root: str | os.PathLike | None) -> bool:
    """Whether an MMEB-V2 root holds the image tasks' rows (``image-query/``)."""
    return root is not None and (Path(root) / IMAGE_QUERY_DIR).is_dir()


def v2_image_root(root: str | os.PathLike) -> Path:
    """The folder the image tasks' image paths are relative to: ``image-tasks/MMEB`` when it is a
    folder, else ``image-tasks`` (see the module docstring)."""
    for sub in IMAGE_ROOTS:
        if (Path(root) / sub).is_dir():
            return Path(root) / sub
    return Path(root) / IMAGE_ROOTS[-1]


def process_input_text(instruction: str, text: str | None = None) -> str:
    """``process_input_text(instruction, backbone, text=text, add_image_token=True)`` of
    ``src/model/processor.py`` lines 663-671 (the backbone-generic branch) with the public image token."""
    prompt = instruction
    if text:
        prompt = prompt + " " + text
    return PUBLIC_IMAGE_TOKEN + " " + prompt


def query_text(parser: Parser, task: str, qry_inst: str, qry_text: str) -> str:
    """The query text the official parser builds (see the module docstring for file:line)."""
    if parser == "image_t2i":
        out = qry_inst + " " + qry_text + "\n"  # the image token stays the public one
        return out + "\n" if task == "VisDial" else out
    if parser in ("image_qa", "image_i2i_vg"):
        inst = "\n" + qry_inst.replace(PUBLIC_IMAGE_TOKEN, "").strip()
    else:
        inst = qry_inst.replace(PUBLIC_IMAGE_TOKEN, "")
    return process_input_text(inst, qry_text).replace(" \n", "\n") + "\n"


def candidate_texts(parser: Parser, tgt_inst: str, tgt_text: Sequence[str], n: int) -> list[str]:
    """The candidate texts of a row: ``tgt_text`` itself (cls / qa / i2t), or built from ``tgt_inst``
    and the captions (t2i / i2i_vg; ``n`` = the number of candidate images)."""
    if parser not in ("image_t2i", "image_i2i_vg"):
        return list(tgt_text)
    inst = tgt_inst.replace(PUBLIC_IMAGE_TOKEN, "")
    if tgt_text and tgt_text[0].strip():
        return [process_input_text(inst + " " + cap, "").replace(" \n", "\n") + "\n" for cap in tgt_text]
    alone = process_input_text(inst, "").replace(" \n", "\n")
    return [alone + "\n" if parser == "image_t2i" else alone] * n


def candidate_names(parser: Parser, tgt_text: Sequence[str], tgt_img_path: Sequence[str]) -> list[str]:
    """``dataset_infos["cand_names"]`` of a row (see the module docstring)."""
    if parser == "image_t2i":
        return list(tgt_img_path)
    if parser == "image_i2i_vg":
        return [p + ":" + c.strip('"') for p, c in zip(tgt_img_path, tgt_text, strict=True)]
    return list(tgt_text)


def resolve_v2_images(
    root: str | os.PathLike, names: Iterable[str] | None = None
) -> tuple[list[DatasetInfo], list[str]]:
    """Find the requested image tasks (default: all 36) in ``<root>/image-query``; (found, missing)."""
    folder = Path(root) / IMAGE_QUERY_DIR
    if not folder.is_dir():
        raise MissingPathError(f"MMEB-V2 image rows folder '{folder}' does not exist")
    wanted = list(V2_IMAGE_PARSERS) if names is None else list(names)
    unknown = [n for n in wanted if n not in V2_IMAGE_PARSERS]
    if unknown:
        raise ConfigError(f"'{unknown[0]}' is not one of the 36 MMEB-V2 image tasks")
    found, missing = [], []
    for name in wanted:
        files = dataset_files(folder, name)
        if files is None:
            missing.append(name)
        else:
            found.append(DatasetInfo(name, MMEB_META_TASK[name], name in MMEB_OOD, files))
    return found, missing


def _read(path: Path, columns: tuple[str, ...]) -> dict[str, list]:
    try:
        if path.suffix == ".arrow":
            with pa.memory_map(str(path)) as source:
                try:
                    table = pa.ipc.open_stream(source).read_all()
                except pa.ArrowInvalid:
                    table = pa.ipc.open_file(source).read_all()
            names = table.column_names
        else:
            names = pq.read_schema(path).names
            table = pq.read_table(path, columns=[c for c in columns if c in names])
    except (pa.ArrowInvalid, OSError) as exc:
        raise EvalDataError(f"{path}: cannot be read as an MMEB-V2 image task table ({exc})") from None
    absent = [c for c in columns if c not in names]
    if absent:
        raise EvalDataError(
            f"{path}: missing column(s) {', '.join(absent)}; the parser reads {', '.join(columns)}"
        )
    return {c: table.column(c).to_pylist() for c in columns}


class _Images:
    """Image paths checked against the root once each: relative, no ``..``, resolving inside it."""

    def __init__(self, root: Path) -> None:
        self.root, self.real_root = root, root.resolve()
        self.ok: set[str] = set()

    def check(self, rel: str, where: str) -> str:
        if rel in self.ok:
            return rel
        posix = PurePosixPath(rel.replace("\\", "/"))
        if posix.is_absolute() or PureWindowsPath(rel).drive or ".." in posix.parts:
            raise EvalDataError(f"{where}: image path '{rel}' is absolute or leaves the image root")
        real = (self.root / posix).resolve()
        if not real.is_relative_to(self.real_root):
            raise EvalDataError(
                f"{where}: image '{rel}' resolves to '{real}', outside the image root '{self.root}'"
            )
        self.ok.add(rel)
        return rel


def _str(value: object, column: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EvalDataError(f"{where}: {column} must be a string, got {type(value).__name__}")
    return value


def _strs(value: object, column: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EvalDataError(f"{where}: {column} must be a list of strings")
    return value


def read_v2_image_task(
    info: DatasetInfo, items: ItemTable, image_root: str | os.PathLike, max_rows: int | None = None
) -> RetrievalSet:
    """Read one image task's rows into ``items``: queries and candidates (truth first) as item ids,
    texts built as its official parser builds them, image paths relative to ``image_root``."""
    parser = V2_IMAGE_PARSERS[info.name]
    columns = PARSER_COLUMNS[parser]
    images = _Images(Path(image_root))
    by_name: dict[str, int] = {}  # cand_name -> the item of its first candidate (generate_cand_dataset)
    queries: list[int] = []
    candidates: list[list[int]] = []
    total = 0
    for path in info.files:
        cols = _read(path, columns)
        for r in range(len(cols["qry_inst"])):
            total += 1
            if max_rows is not None and len(queries) >= max_rows:
                continue
            where = f"{info.name} ({path.name} row {r})"
            try:
                q_inst = _str(cols["qry_inst"][r], "qry_inst", where)
                q_text = _str(cols["qry_text"][r], "qry_text", where)
                tgt_text = _strs(cols["tgt_text"][r], "tgt_text", where)
                if parser in ("image_t2i", "image_i2i_vg"):
                    tgt_inst = _str(cols["tgt_inst"][r], "tgt_inst", where)
                    tgt_img = _strs(cols["tgt_img_path"][r], "tgt_img_path", where)
                    if len(tgt_img) != len(tgt_text):
                        raise EvalDataError(f"{where}: tgt_text and tgt_img_path must be of equal length")
                    if not all(tgt_img):
                        raise EvalDataError(
                            f"{where}: tgt_img_path holds an empty path (a candidate's image)"
                        )
                    tgt_img = [images.check(p, where) for p in tgt_img]
                else:
                    tgt_inst, tgt_img = "", [""] * len(tgt_text)
                if not tgt_text:
                    raise EvalDataError(f"{where}: no candidates")
                q_img = ""
                if parser != "image_t2i":  # t2i queries are text only (image_t2i_eval.py line 23)
                    q_img = _str(cols["qry_img_path"][r], "qry_img_path", where)
                    if not q_img:
                        raise EvalDataError(f"{where}: qry_img_path is empty (the query's image)")
                    images.check(q_img, where)
                query = items.add(Item.of(query_text(parser, info.name, q_inst, q_text), q_img, where))
                texts = candidate_texts(parser, tgt_inst, tgt_text, len(tgt_img))
                row = []
                for name, text, img in zip(
                    candidate_names(parser, tgt_text, tgt_img), texts, tgt_img, strict=True
                ):
                    if name not in by_name:
                        by_name[name] = items.add(Item.of(text, img, where))
                    row.append(by_name[name])
            except ItemError as exc:
                raise EvalDataError(str(exc)) from None
            queries.append(query)
            candidates.append(row)
    if not queries:
        raise EvalDataError(f"{info.name}: no rows in {', '.join(str(p) for p in info.files)}")
    return RetrievalSet(info.name, queries, candidates, total, info)


def load_v2_images(
    root: str | os.PathLike, names: Iterable[str] | None = None, max_rows: int | None = None
) -> Benchmark:
    """The requested image tasks (default: all 36) of ``<root>/image-query`` in one
    :class:`~mme5.eval.datasets.Benchmark` (items shared across tasks), those absent in ``missing``;
    score it with ``run_benchmark("mmeb", ..., image_root=v2_image_root(root))``."""
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"max_rows must be >= 1 or None, got {max_rows}")
    found, missing = resolve_v2_images(root, names)
    bench = Benchmark(missing=missing)
    image_root = v2_image_root(root)
    for info in found:
        bench.sets.append(read_v2_image_task(info, bench.items, image_root, max_rows))
    return bench
