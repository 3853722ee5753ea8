"""The one atomic-write helper: no torn files, no shared temp names, no leaked temp files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mme5.atomic import TEMP_SUFFIX, atomic_open, write_bytes, write_text


def test_replaces_whole_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_text(target, "old")
    write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_planted_symlink_at_old_fixed_temp_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    target = tmp_path / "sizes.json"
    (tmp_path / "sizes.json.tmp").symlink_to(victim)
    write_text(target, "{}")
    assert victim.read_text() == "keep"
    assert target.read_text() == "{}"


def test_concurrent_writers_never_fail_and_readers_never_see_torn_files(tmp_path: Path) -> None:
    target = tmp_path / "shared.txt"
    payloads = [str(i) * 5000 for i in range(10)]
    write_text(target, payloads[0])
    errors: list[BaseException] = []
    torn: list[str] = []

    def writer(i: int) -> None:
        try:
            for _ in range(40):
                write_text(target, payloads[i])
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        for _ in range(400):
            text = target.read_text()
            if text not in payloads:
                torn.append(text[:20])

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert torn == []
    assert os.listdir(tmp_path) == ["shared.txt"]
