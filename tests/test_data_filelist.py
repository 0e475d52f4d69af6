"""Filelist reading: paths relative to the filelist, eager validation with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from ernie_sm.contract.errors import DataError
from ernie_sm.training.data import Shard, read_filelist


def write_filelist(folder: Path, text: str) -> Path:
    for name in ("a.gz", "sub/b.gz"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    path = folder / "filelist"
    path.write_text(text)
    return path


def test_reads_relative_and_absolute_paths_and_ignores_blank_lines(tmp_path):
    absolute = tmp_path / "sub" / "b.gz"
    path = write_filelist(tmp_path, f"a.gz\t0.5\n\n  \n{absolute}\t1.1\nsub/b.gz\t0\n")
    assert read_filelist(path) == [
        Shard(tmp_path / "a.gz", 0.5, 0),
        Shard(absolute, 1.1, 1),
        Shard(tmp_path / "sub" / "b.gz", 0.0, 2),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a.gz 0.5\n", "line 1: expected PATH<TAB>MASK_WORD_PROB (2 tab-separated columns)"),
        ("a.gz\t0.5\n\na.gz\t0.5\t1\n", "line 3: expected PATH<TAB>MASK_WORD_PROB"),
        ("a.gz\thalf\n", "line 1: MASK_WORD_PROB 'half' is not a number"),
        ("a.gz\t-0.1\n", "line 1: MASK_WORD_PROB '-0.1' must be >= 0"),
        ("a.gz\tnan\n", "line 1: MASK_WORD_PROB 'nan' must be >= 0"),
        ("a.gz\t1\nmissing.gz\t0.5\n", "line 2: shard {folder}/missing.gz does not exist"),
        ("\n\n", "lists no shards"),
    ],
)
def test_bad_filelists_name_the_line_and_the_problem(tmp_path, text, problem):
    path = write_filelist(tmp_path, text)
    with pytest.raises(DataError) as error:
        read_filelist(path)
    assert str(error.value).startswith(f"filelist {path}")
    assert problem.format(folder=tmp_path) in str(error.value)


def test_missing_filelist(tmp_path):
    with pytest.raises(DataError, match=f"filelist {tmp_path / 'nope'} does not exist"):
        read_filelist(tmp_path / "nope")


def test_a_filelist_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = write_filelist(tmp_path, "")
    path.write_bytes(b"a.gz\t0.5\n" + "数据.gz\t0.5\n".encode("gb18030"))
    with pytest.raises(DataError, match=f"filelist {path} line 2: bytes .* are not UTF-8"):
        read_filelist(path)
