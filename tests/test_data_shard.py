"""Shard parsing and validation: original ERNIE lines, and every kind of malformed line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from ernie_sm.contract.errors import DataError
from ernie_sm.training.data import ShardLimits, parse_shard

GOOD = "1 5 2 6 2;0 0 0 1 1;0 1 2 3 4;-1 0 -1 0 -1;1"
LIMITS = ShardLimits(vocab_size=50, max_seq_len=8, max_position=40, type_vocab_size=2)


def write(tmp_path: Path, text: str, name: str = "shard.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    return path


def naive_parse(path: Path) -> list[list[list[int]]]:
    """The original reader's way: split every line into its five fields of ints."""
    with gzip.open(path, "rt") as f:
        return [[[int(v) for v in field.split()] for field in line.split(";")] for line in f]


def test_original_ernie_lines_parse_as_the_original_reader_reads_them(ernie_shard):
    lines = naive_parse(ernie_shard)
    shard = parse_shard(ernie_shard, ShardLimits(18000, 512, 513, 2))
    assert len(shard) == len(lines) == 200 and shard.skipped == 0
    for field, column in enumerate((shard.tokens, shard.sent, shard.pos, shard.seg)):
        assert column.tolist() == [v for line in lines for v in line[field]]
    assert shard.lengths.tolist() == [len(line[0]) for line in lines]
    assert shard.label.tolist() == [line[4][0] for line in lines]
    assert shard.offsets[-1] == len(shard.tokens)
    # What the format promises, checked on lines ERNIE's own tooling wrote:
    starts, ends = shard.offsets[:-1], shard.offsets[1:] - 1
    assert (shard.tokens[starts] == 1).all() and (shard.tokens[ends] == 2).all()
    in_sample = np.arange(len(shard.tokens)) - np.repeat(starts, shard.lengths)
    assert (shard.pos == in_sample).all()
    special = (shard.tokens == 1) | (shard.tokens == 2)
    assert ((shard.seg == -1) == special).all()
    assert set(np.unique(shard.seg[~special])) == {0, 1}
    # sentence type: 0 from [CLS] through the first [SEP], then 1.
    is_sep = shard.tokens == 2
    seps = np.cumsum(is_sep) - is_sep  # [SEP]s strictly before each token...
    seps -= np.repeat(seps[starts], shard.lengths)  # ...within its own sample
    assert (shard.sent == (seps >= 1)).all()
    assert set(np.unique(shard.label)) == {0, 1}
    assert shard.tokens.dtype == np.int64


def test_over_length_lines_are_skipped_and_counted(tmp_path, ernie_shard):
    long = "1 5 5 5 5 5 5 5 2;0 0 0 0 0 0 0 0 0;0 1 2 3 4 5 6 7 8;-1 0 1 1 1 1 1 1 -1;0"
    shard = parse_shard(write(tmp_path, "\n".join([GOOD, long, GOOD, long, long]) + "\n"), LIMITS)
    assert (len(shard), shard.skipped) == (2, 3)
    assert shard.tokens.tolist() == [1, 5, 2, 6, 2] * 2

    lengths = [len(line[0]) for line in naive_parse(ernie_shard)]
    shard = parse_shard(ernie_shard, ShardLimits(18000, 100, 513, 2))
    assert shard.skipped == sum(n > 100 for n in lengths) > 0
    assert shard.lengths.tolist() == [n for n in lengths if n <= 100]


@pytest.mark.parametrize(
    "text",
    [
        GOOD,  # no trailing newline
        GOOD.replace(" ", "  ") + "\n",  # runs of spaces
        GOOD.replace(";", " ; ") + " \r\n",  # spaces around separators, CRLF
    ],
)
def test_tolerated_layouts(tmp_path, text):
    shard = parse_shard(write(tmp_path, text), LIMITS)
    assert shard.tokens.tolist() == [1, 5, 2, 6, 2]
    assert shard.seg.tolist() == [-1, 0, -1, 0, -1]
    assert shard.label.tolist() == [1]


def replace_field(field: int, value: str) -> str:
    fields = GOOD.split(";")
    fields[field] = value
    return ";".join(fields)


@pytest.mark.parametrize(
    ("bad_line", "where", "problem"),
    [
        ("1 5 2;0 0 0;0 1 2;-1 0 -1", "line 3:", "expected 5 ';'-separated fields, found 4"),
        (GOOD + ";1", "line 3:", "found 6"),
        ("", "line 3:", "blank line"),
        ("  \r", "line 3:", "blank line"),
        (replace_field(1, "0 0 0 1"), "field sentence_type_ids", "4 values, but token_ids has 5"),
        (replace_field(3, "-1 0 -1 0"), "field seg_labels", "4 values, but token_ids has 5"),
        (replace_field(0, "1 5 x 6 2"), "field token_ids", "'x' is not part of an integer"),
        (replace_field(2, "0 1 2.0 3 4"), "field position_ids", "'.' is not part"),
        (replace_field(3, "-1 0 - 0 -1"), "field seg_labels", "'-' must be a sign"),
        (replace_field(0, "1 5-2 6 2"), "field token_ids", "'-' must be a sign"),
        (replace_field(0, "1 5 2 6 " + "9" * 19), "field token_ids", "longer than 18 digits"),
        (replace_field(0, ""), "field token_ids", "no values"),
        (replace_field(0, "1 5 50 6 2"), "field token_ids", "value 50 not in [0, 50)"),
        (replace_field(0, "1 -5 2 6 2"), "field token_ids", "value -5 not in [0, 50)"),
        (replace_field(1, "0 0 0 2 1"), "field sentence_type_ids", "value 2 not in [0, 2)"),
        (replace_field(2, "0 1 2 3 40"), "field position_ids", "value 40 not in [0, 40)"),
        (replace_field(3, "-1 0 -1 2 -1"), "field seg_labels", "value 2 not in {-1, 0, 1}"),
        (replace_field(4, "2"), "field nsp_label", "value 2 not in {0, 1}"),
        (replace_field(4, "1 0"), "field nsp_label", "exactly one value, found 2"),
        (replace_field(4, ""), "field nsp_label", "exactly one value, found 0"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, bad_line, where, problem):
    path = write(tmp_path, "\n".join([GOOD, GOOD, bad_line, GOOD]) + "\n")
    with pytest.raises(DataError) as error:
        parse_shard(path, LIMITS)
    message = str(error.value)
    assert message.startswith(f"{path} line 3")
    assert where in message and problem in message


@pytest.mark.parametrize(
    ("line2", "line3", "expected"),
    [
        (replace_field(3, "-1 0 -1 7 -1"), "1;2", "line 2, field seg_labels: value 7"),
        ("1;2", replace_field(3, "-1 0 -1 7 -1"), "line 2: expected 5"),
        (replace_field(4, "1 1"), "a", "line 2, field nsp_label"),
        (replace_field(0, "1 5 2 6 99"), replace_field(1, "0"), "line 2, field token_ids"),
    ],
)
def test_the_earliest_bad_line_is_reported(tmp_path, line2, line3, expected):
    path = write(tmp_path, "\n".join([GOOD, line2, line3]))
    with pytest.raises(DataError, match=expected):
        parse_shard(path, LIMITS)


def test_values_of_skipped_lines_are_not_range_checked(tmp_path):
    long = "1 5 5 5 5 5 5 5 2;0 0 0 0 0 0 0 0 0;0 1 2 3 4 5 6 7 99;-1 0 1 1 1 1 1 1 -1;0"
    assert parse_shard(write(tmp_path, f"{GOOD}\n{long}\n"), LIMITS).skipped == 1


def test_missing_truncated_and_non_gzip_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        parse_shard(tmp_path / "absent.gz", LIMITS)
    whole = gzip.compress(("\n".join([GOOD] * 100) + "\n").encode())
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=f"{truncated} is not a readable gzip file"):
        parse_shard(truncated, LIMITS)
    plain = tmp_path / "plain.gz"
    plain.write_text(GOOD)
    with pytest.raises(DataError, match=f"{plain} is not a readable gzip file"):
        parse_shard(plain, LIMITS)
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(whole[:20] + bytes(len(whole) - 20))
    with pytest.raises(DataError, match=f"{corrupt} is not a readable gzip file"):
        parse_shard(corrupt, LIMITS)


def test_empty_shard_is_an_error(tmp_path):
    with pytest.raises(DataError, match="holds no samples"):
        parse_shard(write(tmp_path, ""), LIMITS)
