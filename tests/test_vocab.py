import pytest
from ernie_sm.contract import presets
from ernie_sm.contract.errors import ConfigError
from ernie_sm.text.vocab import load_vocab


def test_released_vocab_special_ids_and_replacements(ernie_vocab):
    v = load_vocab(ernie_vocab)
    assert (len(v), v.pad_id, v.cls_id, v.sep_id, v.mask_id, v.unk_id) == (17964, 0, 1, 2, 3, 17963)
    replacements = set(v.replacement_ids().tolist())
    assert not replacements & {0, 1, 2, 3, 17963}
    assert len(replacements) == 17964 - 5


def test_vocab_errors_name_file_and_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\t0\n[CLS]\t1\n[SEP]\t5\n")
    with pytest.raises(
        ConfigError, match=r"vocab.txt line 3: id '5' for token '\[SEP\]' should be 2"
    ):
        load_vocab(path)
    path.write_text("[PAD]\t0\n[CLS]\t1\n")
    with pytest.raises(ConfigError, match=r"lacks the special tokens \[SEP\], \[MASK\]"):
        load_vocab(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_vocab(tmp_path / "missing.txt")


def test_a_vocab_that_is_not_utf8_is_named_with_its_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\t0\n[CLS]\t1\n" + "你\t2\n".encode("gb18030"))
    with pytest.raises(ConfigError, match=f"vocab {path} line 3: bytes .* are not UTF-8"):
        load_vocab(path)


def test_a_duplicate_token_is_refused_naming_both_lines(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\t0\n[CLS]\t1\n[SEP]\t2\n\n[CLS]\t3\n[MASK]\t4\n")
    with pytest.raises(
        ConfigError, match=r"vocab.txt line 5: token '\[CLS\]' is already on line 2"
    ):
        load_vocab(path)


def test_a_vocab_is_a_preset_or_a_file_under_the_channel(tmp_path, ernie_vocab):
    assert presets.locate("ernie-1.0", tmp_path, presets.VOCABS, "vocab_path") == ernie_vocab
    (tmp_path / "mine.txt").write_text("[PAD]\t0\n")
    assert presets.locate("mine.txt", tmp_path, presets.VOCABS, "vocab_path") == (
        tmp_path / "mine.txt"
    )
    with pytest.raises(
        ConfigError,
        match=r"vocab_path 'ernie-2\.0': .*ernie-2\.0 does not exist \(give a file or a bundled "
        r"preset: ernie-1\.0\)",
    ):
        presets.locate("ernie-2.0", tmp_path, presets.VOCABS, "vocab_path")
