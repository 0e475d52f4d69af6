import pytest

from training.errors import ConfigError
from training.vocab import load_vocab


def test_reference_vocab_special_ids_and_replacements(reference):
    v = load_vocab(reference / "vocab.txt")
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
