"""`ernie-sm prepare`: raw text to shards the training reader reads, with knowledge units kept whole."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import rjieba
from ernie_sm.contract.errors import ConfigError
from ernie_sm.dataprep import prepare as prepare_module
from ernie_sm.dataprep.prepare import PrepareOptions, prepare
from ernie_sm.text.documents import CorpusError
from ernie_sm.text.encoder import SentenceEncoder
from ernie_sm.text.sentences import split_sentences
from ernie_sm.text.vocab import load_vocab
from ernie_sm.training.data import ShardLimits, parse_shard, read_filelist
from rich.console import Console

SENTENCES = [
    "文心一言是百度推出的大语言模型。",
    "它使用了Transformer架构，在GPU上训练。",
    "三峡大坝建在长江上游，发电量非常可观！",
    "很多开发者用Python调用它的接口。",
    "黄河流域是中华文明的发祥地之一；黄河的泥沙含量很高。",
    "马拉松全程约42公里，是一项考验耐力的运动？",
    "北京烤鸭是一道著名的菜肴。",
    "科学家在2019年拍到了黑洞的照片。",
]
ENTITIES = ["文心一言", "三峡大坝", "北京烤鸭"]


def write_corpus(folder: Path, documents: int = 30) -> Path:
    """Documents of 3-8 sentences, blank-line separated, Chinese with some Latin."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = []
    for d in range(documents):
        count = 3 + d % 6
        blocks.append("".join(SENTENCES[(d + k) % len(SENTENCES)] for k in range(count)))
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    (folder / "entities.txt").write_text("\n".join(ENTITIES) + "\n", encoding="utf-8")
    return path


def options(tmp_path: Path, **overrides) -> PrepareOptions:
    corpus = write_corpus(tmp_path / "raw")
    settings = dict(
        inputs=[corpus],
        output=tmp_path / "dataset",
        vocab="ernie-1.0",
        dictionaries=[tmp_path / "raw" / "entities.txt"],
        max_seq_len=64,
        valid_fraction=0.2,
        lines_per_shard=20,
        workers=1,
    )
    return PrepareOptions(**{**settings, **overrides})


def read_lines(folder: Path, filelist: str) -> list[list[list[int]]]:
    lines = []
    for shard in read_filelist(folder / filelist):
        with gzip.open(shard.path, "rt") as f:
            lines += [[[int(v) for v in field.split()] for field in line.split(";")] for line in f]
    return lines


def test_prepared_dataset_reads_back_without_a_single_error(tmp_path):
    summary = prepare(options(tmp_path))
    out = tmp_path / "dataset"
    limits = ShardLimits(vocab_size=18000, max_seq_len=64, max_position=513, type_vocab_size=2)
    for channel, filelist in (("train", "train_filelist"), ("valid", "valid_filelist")):
        shards = read_filelist(out / channel / filelist)
        parsed = [parse_shard(s.path, limits) for s in shards]
        assert sum(len(p) for p in parsed) == summary["samples"][channel] > 0
        assert all(p.skipped == 0 for p in parsed)
    assert summary["documents"] == {"train": 24, "valid": 6}
    assert summary["unk_rate"] == 0
    assert 0.3 < summary["nsp_positive_share"] < 0.7
    assert json.loads((out / "summary.json").read_text())["samples"] == summary["samples"]
    assert load_vocab(out / "train" / "vocab.txt").unk_id == 17963
    assert summary["vocab_size"] == 17964
    assert not list(tmp_path.glob(".dataset.tmp-*"))


def test_entities_from_the_dictionary_are_one_masking_unit(tmp_path, ernie_vocab):
    prepare(options(tmp_path))
    vocab = load_vocab(ernie_vocab)
    index = {t: i for i, t in enumerate(vocab.tokens)}
    found = 0
    for tokens, _, _, seg, _ in read_lines(tmp_path / "dataset" / "train", "train_filelist"):
        for entity in ENTITIES:
            ids = [index[c] for c in entity]
            for at in range(1, len(tokens) - len(ids)):
                # At a segment's start the pair may have been cut inside the entity.
                if tokens[at : at + len(ids)] == ids and seg[at - 1] != -1:
                    assert seg[at : at + len(ids)] == [0] + [1] * (len(ids) - 1), entity
                    found += 1
    assert found > 20
    # Without the dictionary, the segmenter splits at least one of them.
    plain = rjieba.Jieba()
    assert any(len(plain.cut(e)) > 1 for e in ENTITIES)


def test_seg_labels_follow_the_segmenter_words_and_wordpieces(ernie_vocab):
    encoder = SentenceEncoder(ernie_vocab)
    ((ids, seg),) = encoder.encode(["它使用了Transformer架构。"])
    tokens = [load_vocab(ernie_vocab).tokens[i] for i in ids]
    assert tokens == ["它", "使", "用", "了", "trans", "##form", "##er", "架", "构", "。"]
    assert seg == [0, 0, 1, 0, 0, 1, 1, 0, 1, 0]


def test_sentence_splitting_handles_chinese_and_latin_punctuation():
    text = "我们去北京。你呢？“好的！”他说。This is GPT-4. It costs 3.5 dollars! 没有句号"
    assert split_sentences(text) == [
        "我们去北京。",
        "你呢？",
        "“好的！”",
        "他说。",
        "This is GPT-4.",
        "It costs 3.5 dollars!",
        "没有句号",
    ]


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    prepare(options(tmp_path / "a", workers=1))
    prepare(options(tmp_path / "b", workers=2))
    files = sorted(
        p.relative_to(tmp_path / "a" / "dataset")
        for p in (tmp_path / "a" / "dataset").rglob("*.gz")
    )
    assert files
    for f in files:
        assert (tmp_path / "a" / "dataset" / f).read_bytes() == (
            tmp_path / "b" / "dataset" / f
        ).read_bytes()
    prepare(options(tmp_path / "c", seed=1))
    other = (tmp_path / "c" / "dataset" / files[0]).read_bytes()
    assert other != (tmp_path / "a" / "dataset" / files[0]).read_bytes()


def test_vocab_built_from_the_corpus_has_the_size_asked_for(tmp_path):
    # The test corpus has 134 characters (139 tokens with the specials) and pairs enough
    # to merge for 160 tokens.
    summary = prepare(options(tmp_path, vocab=None, vocab_size=150))
    vocab = load_vocab(tmp_path / "dataset" / "train" / "vocab.txt")
    assert vocab.tokens[:5] == ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
    assert len(vocab) == summary["vocab_size"] == 150 and summary["unk_rate"] == 0


def test_vocab_size_beyond_the_corpus_is_reported_and_below_its_characters_refused(tmp_path):
    out = io.StringIO()
    summary = prepare(options(tmp_path, vocab=None, vocab_size=300), Console(file=out, width=200))
    assert len(load_vocab(tmp_path / "dataset" / "train" / "vocab.txt")) == summary["vocab_size"]
    assert summary["vocab_size"] < 300
    assert f"the vocab has {summary['vocab_size']}, not --vocab-size 300" in out.getvalue()
    with pytest.raises(CorpusError, match=r"--vocab-size 100 is too small .* make 139 tokens"):
        prepare(options(tmp_path, vocab=None, vocab_size=100, output=tmp_path / "small"))
    assert not (tmp_path / "small").exists() and not list(tmp_path.glob(".small.*"))


def test_negative_ratio_zero_gives_only_true_next_sentences(tmp_path):
    summary = prepare(options(tmp_path, negative_ratio=0.0))
    labels = [line[4][0] for line in read_lines(tmp_path / "dataset" / "train", "train_filelist")]
    assert set(labels) == {1} and summary["nsp_positive_share"] == 1.0


def test_jsonl_input_empty_and_single_sentence_documents_are_counted(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    records = [
        {"text": SENTENCES[0] + SENTENCES[1] + SENTENCES[2]},
        {"text": ""},
        {"text": SENTENCES[3]},
    ]
    records += [{"text": "".join(SENTENCES[k : k + 4])} for k in range(4)]
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    summary = prepare(options(tmp_path, inputs=[jsonl], valid_fraction=0.0))
    assert summary["empty_documents"] == 1 and summary["single_sentence_documents"] == 1
    assert summary["samples"]["train"] > 0


def test_sentences_longer_than_max_seq_len_are_split_and_counted(tmp_path):
    long_doc = "这是一个非常长的句子" * 20 + "。" + SENTENCES[0] + SENTENCES[1]
    corpus = tmp_path / "long.txt"
    corpus.write_text(long_doc + "\n\n" + "".join(SENTENCES) + "\n", encoding="utf-8")
    summary = prepare(options(tmp_path, inputs=[corpus], valid_fraction=0.0))
    assert summary["long_sentences_split"] == 1
    assert all(
        len(line[0]) <= 64 for line in read_lines(tmp_path / "dataset" / "train", "train_filelist")
    )


@pytest.mark.parametrize(
    ("breakage", "error", "message"),
    [
        (
            lambda t: t.write_bytes(b"\xe4\xbd\xa0\xe5\xa5\xbd\n\n\xff\xfe bad\n"),
            CorpusError,
            r"corpus\.txt line 3: bytes .* are not UTF-8",
        ),
        (lambda t: t.unlink(), CorpusError, "does not exist"),
        (lambda t: t.write_text("\n\n  \n"), CorpusError, "holds no documents"),
        (lambda t: (t.unlink(), os.mkfifo(t)), CorpusError, r"corpus\.txt is a FIFO"),
    ],
)
def test_bad_corpus_input_is_named_and_nothing_is_written(tmp_path, breakage, error, message):
    opts = options(tmp_path)
    breakage(opts.inputs[0])
    with pytest.raises(error, match=message):
        prepare(opts)
    assert not opts.output.exists() and not list(tmp_path.glob(".dataset.tmp-*"))


def test_a_dictionary_that_is_not_utf8_is_named_with_its_line(tmp_path):
    opts = options(tmp_path)
    opts.dictionaries[0].write_bytes("文心一言\n".encode() + "三峡大坝\n".encode("gb18030"))
    with pytest.raises(CorpusError, match=r"dictionary .*entities\.txt line 2: bytes .* not UTF-8"):
        prepare(opts)
    assert not opts.output.exists() and not list(tmp_path.glob(".dataset.tmp-*"))


def test_deeply_nested_jsonl_is_named_with_file_and_line(tmp_path):
    jsonl = tmp_path / "deep.jsonl"
    jsonl.write_text('{"text": "好。"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(CorpusError, match=r"deep\.jsonl line 2: JSON nested too deeply"):
        prepare(options(tmp_path, inputs=[jsonl]))


def test_folders_named_like_text_files_are_searched_and_fifos_refused(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "part.txt").mkdir(parents=True)
    shutil.copy(write_corpus(tmp_path / "raw"), folder / "part.txt" / "a.txt")
    summary = prepare(options(tmp_path, inputs=[folder]))
    assert sum(summary["documents"].values()) == 30
    os.mkfifo(folder / "pipe.txt")
    with pytest.raises(CorpusError, match=r"corpus file \S*pipe\.txt is a FIFO"):
        prepare(options(tmp_path, inputs=[folder], overwrite=True))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lines_per_shard": 0}, "--lines-per-shard must be at least 1, not 0"),
        ({"lines_per_shard": -3}, "--lines-per-shard must be at least 1"),
        ({"workers": 0}, "--workers must be at least 1, not 0"),
        ({"mask_word_prob": 1.5}, r"--mask-word-prob must be in \[0, 1\], not 1.5"),
        ({"mask_word_prob": -0.1}, "--mask-word-prob must be in"),
        ({"mask_word_prob": float("nan")}, "--mask-word-prob must be in .*, not nan"),
        ({"negative_ratio": float("nan")}, "--negative-ratio must be in"),
        ({"valid_fraction": 1.0}, r"--valid-fraction must be in \[0, 1\)"),
        ({"max_seq_len": -1}, "--max-seq-len must be at least 8, not -1"),
        ({"seed": -1}, "--seed must be 0 or more, not -1"),
        ({"vocab": None, "vocab_size": 0}, "--vocab-size must be from 6 .*, not 0"),
        (
            {"vocab": None, "vocab_size": 2**64},
            "--vocab-size must be from 6 .* to 2147483647, not 1844",
        ),
        ({"dictionaries": [Path("/")]}, "--dict / is a folder"),
    ],
)
def test_unusable_options_are_refused_by_name_before_any_work(tmp_path, overrides, message):
    opts = options(tmp_path, **overrides)
    with pytest.raises(CorpusError, match=message):
        prepare(opts)
    assert not opts.output.exists() and not list(tmp_path.glob(".dataset.*"))


@pytest.mark.parametrize(
    ("vocab_text", "error", "message"),
    [
        ("a\t0\nb\t1\n", ConfigError, r"lacks the special tokens \[PAD\], \[CLS\], \[SEP\]"),
        ("[PAD]\t0\n[CLS]\t1\n[SEP]\t2\n[MASK]\t3\n", CorpusError, r"lacks \[UNK\]"),
    ],
)
def test_vocab_errors_name_the_vocab_given_and_come_before_any_shard(
    tmp_path, vocab_text, error, message
):
    bad = tmp_path / "vocab.txt"
    bad.write_text(vocab_text)
    opts = options(tmp_path, vocab=bad)
    with pytest.raises(error, match=message) as raised:
        prepare(opts)
    assert f"vocab {bad} lacks" in str(raised.value)
    assert not opts.output.exists() and not list(tmp_path.glob(".dataset.tmp-*"))


def test_existing_output_needs_overwrite_and_is_replaced_whole(tmp_path):
    prepare(options(tmp_path))
    with pytest.raises(CorpusError, match="exists"):
        prepare(options(tmp_path))
    summary = prepare(options(tmp_path, overwrite=True, max_seq_len=32))
    assert all(
        len(line[0]) <= 32 for line in read_lines(tmp_path / "dataset" / "train", "train_filelist")
    )
    assert summary["samples"]["train"] > 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda out: out.write_text("my notes"), "is not a folder"),
        (lambda out: (out.mkdir(), (out / "notes.txt").write_text("x")), "holds no summary.json"),
    ],
)
def test_overwrite_replaces_only_a_dataset(tmp_path, make, message):
    opts = options(tmp_path, overwrite=True)
    make(opts.output)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(CorpusError, match=rf"--output {opts.output} {message}"):
        prepare(opts)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def old_dataset(output: Path) -> str:
    """A stand-in for an earlier dataset at `output` (all --overwrite looks at); its summary."""
    output.mkdir()
    (output / "summary.json").write_text('{"old": true}')
    return (output / "summary.json").read_text()


def watch_steps(monkeypatch, output: Path) -> list[bool]:
    """Whether `output` held a whole dataset after each rename or removal prepare made."""
    seen: list[bool] = []

    def watched(step):
        def run(*args, **kwargs):
            step(*args, **kwargs)
            seen.append((output / "summary.json").is_file())

        return run

    monkeypatch.setattr(prepare_module.os, "replace", watched(os.replace))
    monkeypatch.setattr(prepare_module.shutil, "rmtree", watched(shutil.rmtree))
    return seen


def test_overwrite_swaps_so_the_output_always_holds_a_whole_dataset(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    if not prepare_module._exchange(a, b):
        pytest.skip("this file system cannot exchange two folders in one step")
    opts = options(tmp_path, overwrite=True)
    old_dataset(opts.output)
    seen = watch_steps(monkeypatch, opts.output)
    summary = prepare(opts)
    assert seen and all(seen)
    assert json.loads((opts.output / "summary.json").read_text()) == summary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "dataset", "raw"]


def test_a_run_killed_between_the_fallback_renames_is_undone_by_the_next(tmp_path, monkeypatch):
    opts = options(tmp_path, overwrite=True)
    before = old_dataset(opts.output)
    monkeypatch.setattr(prepare_module, "_exchange", lambda a, b: False)
    replace = os.replace
    calls = []

    def killed_at_second(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the old dataset is aside, the new one not yet in place
        replace(src, dst)

    monkeypatch.setattr(prepare_module.os, "replace", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        prepare(opts)
    monkeypatch.setattr(prepare_module.os, "replace", replace)
    assert not opts.output.exists() and list(tmp_path.glob(".dataset.old-*"))
    with pytest.raises(CorpusError, match="exists"):  # the old dataset is back first
        prepare(options(tmp_path))
    assert (opts.output / "summary.json").read_text() == before
    assert not list(tmp_path.glob(".dataset.*"))


def test_leftovers_of_dead_runs_on_this_output_are_cleared_and_nothing_else(tmp_path):
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead, alive = finished.pid, os.getppid()
    leftovers = {
        f".dataset.tmp-{dead}": False,
        f".dataset.old-{dead}": False,  # the dataset stayed in place: this copy is stale
        f".dataset.tmp-{alive}": True,  # another prepare may be writing it
        f".datasets.tmp-{dead}": True,  # another output's
        f".dataset.tmp-{dead}x": True,
    }
    opts = options(tmp_path, overwrite=True)
    old_dataset(opts.output)
    for name in leftovers:
        (tmp_path / name / "train").mkdir(parents=True)
    prepare(opts)
    assert {name: (tmp_path / name).exists() for name in leftovers} == leftovers


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    from ernie_sm import cli

    corpus = write_corpus(tmp_path / "raw")
    args = [
        "prepare",
        str(corpus),
        "-o",
        str(tmp_path / "out"),
        "--vocab",
        str(tmp_path / "none.txt"),
    ]
    assert cli.main(args) == 2
    assert "vocab" in capsys.readouterr().err
    args[-1] = "ernie-1.0"  # the bundled preset
    assert cli.main([*args, "--lines-per-shard", "0"]) == 2
    err = capsys.readouterr().err
    assert "--lines-per-shard must be at least 1" in err and "Traceback" not in err
    assert cli.main([*args, "--workers", "1", "--max-seq-len", "64"]) == 0
    assert (tmp_path / "out" / "train" / "train_filelist").is_file()


def test_character_lookup_gives_exactly_what_the_tokenizer_gives(ernie_vocab):
    """The remembered per-character ids are a shortcut, never a different answer."""
    encoder = SentenceEncoder(ernie_vocab)
    sentences = [
        *SENTENCES,
        "ＡＢＣ全角字符和emoji😀混在一起，Café 与 naïve 也在。",
        "  空格  开头，\t制表符，GPT-4o 的 API 价格是 $0.01/1K tokens。",
        "㐀𠀀罕见字",
    ]
    words = [encoder.segmenter.cut(s) for s in sentences]
    tokenizer_encodings = encoder.tokenizer.encode_batch(
        words, is_pretokenized=True, add_special_tokens=False
    )
    for (ids, seg), expected in zip(encoder.encode(sentences), tokenizer_encodings, strict=True):
        word_ids = expected.word_ids
        assert ids == expected.ids
        assert seg == [int(i > 0 and w == word_ids[i - 1]) for i, w in enumerate(word_ids)]


def test_without_validation_samples_there_is_no_valid_channel(tmp_path):
    summary = prepare(options(tmp_path, valid_fraction=0.0))
    assert summary["samples"]["valid"] == 0
    assert not (tmp_path / "dataset" / "valid").exists()
    assert (tmp_path / "dataset" / "train" / "train_filelist").is_file()


def test_a_corpus_of_single_sentences_gives_a_clear_error(tmp_path):
    corpus = tmp_path / "lonely.txt"
    corpus.write_text("只有一句。\n\n又是一句。\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="no training samples"):
        prepare(options(tmp_path, inputs=[corpus], negative_ratio=0.0))
    assert not (tmp_path / "dataset").exists()
