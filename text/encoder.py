"""Sentences to token ids with knowledge-masking units.

Words come from jieba's segmenter (its Rust port, rjieba, ~20x faster) with the user's
entity and phrase dictionaries added, so that an entity is one unit. Each word is then
split into WordPiece tokens (Hugging Face `tokenizers`, BERT normalisation: Chinese
characters one token each, Latin lower-cased); characters the tokenizer always turns
into one token of their own are looked up once and remembered. seg_labels mark the first token of a
unit 0 and the rest 1: the reader's word-level masking hides whole units.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import rjieba
from ernie_sm.contract.textfile import read_text
from ernie_sm.text.documents import CorpusError
from ernie_sm.text.vocab import SPECIAL_TOKENS, load_vocab
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

UNK = "[UNK]"
# A dictionary entry must beat any split of itself, whatever the built-in frequencies.
DICTIONARY_FREQ = 10_000_000
# BERT normalisation lower-cases text (accents stripped with it); serving.json says so.
LOWERCASE = True


def _bert_tokenizer(model: models.Model, lowercase: bool = LOWERCASE) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


class SentenceEncoder:
    def __init__(self, vocab_path: Path, dictionaries: Iterable[Path] = ()) -> None:
        vocab = load_vocab(vocab_path)  # checks format and special tokens
        if vocab.unk_id is None:
            raise CorpusError(f"vocab {vocab_path} lacks {UNK}, needed for unknown characters")
        self.unk_id = vocab.unk_id
        ids = {token: i for i, token in enumerate(vocab.tokens)}
        self.tokenizer = _bert_tokenizer(models.WordPiece(vocab=ids, unk_token=UNK))
        self.segmenter = rjieba.Jieba()
        # Characters the tokenizer always makes a token of their own (CJK characters and
        # punctuation), with that token's id; None for the others. Filled as met: most
        # text is CJK, and a lookup here is far cheaper than a trip through the tokenizer.
        self._alone_id: dict[str, int | None] = {}
        for entry in dictionary_entries(dictionaries):
            self.segmenter.add_word(entry, DICTIONARY_FREQ, None)

    def encode(self, sentences: list[str]) -> list[tuple[list[int], list[int]]]:
        """(token ids, seg labels) per sentence; a sentence of only spaces gives empty lists."""
        words = [self.segmenter.cut(s) for s in sentences]
        pieces = self._wordpieces({w for ws in words for w in ws if not self._alone(w)})
        out = []
        for sentence in words:
            ids: list[int] = []
            seg: list[int] = []
            for word in sentence:
                word_ids = pieces[word] if word in pieces else [self._alone_id[c] for c in word]
                ids += word_ids
                seg += [0] + [1] * (len(word_ids) - 1) if word_ids else []
            out.append((ids, seg))
        return out

    def _alone(self, word: str) -> bool:
        """Whether every character of `word` is a token of its own, as CJK characters are."""
        for char in word:
            if char not in self._alone_id:
                self._alone_id[char] = self._alone_token(char)
            if self._alone_id[char] is None:
                return False
        return True

    def _alone_token(self, char: str) -> int | None:
        """The tokenizer's id for `char` if it always splits it off on its own, else None."""
        ids = self.tokenizer.encode(f"a{char}a", add_special_tokens=False).ids
        return ids[1] if len(ids) == 3 and ids[0] == ids[2] else None

    def _wordpieces(self, words: set[str]) -> dict[str, list[int]]:
        """Tokenizer ids of the other words (Latin, digits, mixed), a batch at a time."""
        ordered = sorted(words)
        batch = self.tokenizer.encode_batch(
            [[w] for w in ordered], is_pretokenized=True, add_special_tokens=False
        )
        return {w: e.ids for w, e in zip(ordered, batch, strict=True)}


def serving_tokenizer(vocab_path: Path, lowercase: bool = True) -> Tokenizer:
    """The same BERT tokenizer for the model server (serving/tasks.py): a literal [MASK]
    (and every other special token of the vocab) stays one token; decodes WordPieces back."""
    vocab = load_vocab(vocab_path)
    if vocab.unk_id is None:
        raise CorpusError(f"vocab {vocab_path} lacks {UNK}, needed for unknown characters")
    ids = {token: i for i, token in enumerate(vocab.tokens)}
    tokenizer = _bert_tokenizer(models.WordPiece(vocab=ids, unk_token=UNK), lowercase)
    tokenizer.add_special_tokens([t for t in (*SPECIAL_TOKENS, UNK) if t in ids])
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def dictionary_entries(paths: Iterable[Path]) -> Iterator[str]:
    """Entries of entity/phrase dictionaries: one a line; a jieba-style `word freq tag` keeps the word."""
    for path in paths:
        if not path.is_file():
            raise CorpusError(f"dictionary {path} does not exist")
        for line in read_text(path, "dictionary", CorpusError).splitlines():
            entry = line.split()[0] if line.split() else ""
            if entry:
                yield entry


def build_vocab(texts: Iterable[str], size: int, path: Path) -> None:
    """Train a WordPiece vocab of at most `size` tokens and write it as ERNIE's `token<TAB>id`."""
    tokenizer = _bert_tokenizer(models.WordPiece(unk_token=UNK))
    specials = [*SPECIAL_TOKENS, UNK]
    trainer = trainers.WordPieceTrainer(vocab_size=size, special_tokens=specials, min_frequency=1)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokens = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])  # ids are 0..n-1
    path.write_text("".join(f"{token}\t{i}\n" for token, i in tokens), encoding="utf-8")
