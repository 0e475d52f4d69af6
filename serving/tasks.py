"""Requests and answers in the Hugging Face inference schemas (docs/serving.md).

Each task parses a request body into token id sequences ([CLS] text [SEP]), which the
batcher runs through the task's `forward` with others, and turns each sequence's outputs
into the answer. What a client gets wrong raises BadRequest, whose message names it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ernie_sm.contract import serving
from ernie_sm.contract.serving import ServingManifest
from ernie_sm.serving.predictor import Predictor
from ernie_sm.text.encoder import serving_tokenizer
from ernie_sm.text.vocab import load_vocab

Sequence = list[int]


class BadRequest(Exception):
    """A client error: the server answers 400 with this message as the reason."""


def _pad(sequences: list[Sequence], pad_id: int) -> dict[str, np.ndarray]:
    """src_ids, sent_ids, pos_ids of a batch padded to its longest member."""
    length = max(len(s) for s in sequences)
    src = np.full((len(sequences), length), pad_id, dtype="int64")
    for row, seq in enumerate(sequences):
        src[row, : len(seq)] = seq
    pos = np.broadcast_to(np.arange(length, dtype="int64"), src.shape).copy()
    return {"src_ids": src, "sent_ids": np.zeros_like(src), "pos_ids": pos}


class Task:
    name = ""
    parameters: tuple[str, ...] = ("truncation",)

    def __init__(self, root: Path, manifest: ServingManifest, threads: int = 1) -> None:
        self.manifest = manifest
        self.vocab = load_vocab(root / manifest.vocab)
        self.tokenizer = serving_tokenizer(root / manifest.vocab, manifest.lowercase)
        self.predictor = Predictor(root / manifest.models[self.name], threads)

    # -- requests ------------------------------------------------------------------------
    def parse(self, body: Any) -> tuple[list[Sequence], Callable[[list[Any]], Any]]:
        """The sequences to run and how to make the answer of their outputs."""
        if not isinstance(body, dict):
            raise BadRequest(f"the body must be a JSON object, not {_kind(body)}")
        if unknown := sorted(set(body) - {"inputs", "parameters"}):
            raise BadRequest(f"unknown members {', '.join(unknown)} (inputs, parameters)")
        inputs = body.get("inputs")
        single = isinstance(inputs, str)
        texts = [inputs] if single else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise BadRequest("inputs must be a string or a non-empty list of strings")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest(f"parameters must be a JSON object, not {_kind(parameters)}")
        if unknown := sorted(set(parameters) - set(self.parameters)):
            raise BadRequest(
                f"unknown parameters {', '.join(unknown)} for {self.name} "
                f"(it takes {', '.join(self.parameters)})"
            )
        truncation = parameters.get("truncation", False)
        if not isinstance(truncation, bool):
            raise BadRequest("parameters.truncation must be true or false")
        sequences = [self._encode(text, i, truncation) for i, text in enumerate(texts)]
        options = self.options(parameters)
        for i, seq in enumerate(sequences):
            self.check(seq, i)

        def answer(outputs: list[Any]) -> Any:
            answers = [
                self.answer(seq, out, options) for seq, out in zip(sequences, outputs, strict=True)
            ]
            return answers[0] if single else answers

        return sequences, answer

    def _encode(self, text: str, index: int, truncation: bool) -> Sequence:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        room = self.manifest.max_seq_len - 2
        if len(ids) > room and not truncation:
            raise BadRequest(
                f"inputs[{index}] is {len(ids)} tokens, over the model's {room} "
                f"(max_seq_len {self.manifest.max_seq_len} with [CLS] and [SEP]); "
                'send "parameters": {"truncation": true} to cut it'
            )
        return [self.vocab.cls_id, *ids[:room], self.vocab.sep_id]

    def options(self, parameters: dict) -> dict:
        return {}

    def check(self, sequence: Sequence, index: int) -> None:
        pass

    # -- the model -----------------------------------------------------------------------
    def forward(self, sequences: list[Sequence]) -> list[Any]:
        """The outputs of each sequence, of one batch padded to its longest member."""
        raise NotImplementedError

    def answer(self, sequence: Sequence, output: Any, options: dict) -> Any:
        raise NotImplementedError


class FillMask(Task):
    name = serving.FILL_MASK
    parameters = ("top_k", "truncation")

    def options(self, parameters: dict) -> dict:
        top_k = _top_k(parameters, 5)
        if top_k > self.manifest.max_top_k:
            raise BadRequest(
                f"parameters.top_k {top_k} is over this model's maximum {self.manifest.max_top_k}"
            )
        return {"top_k": top_k}

    def check(self, sequence: Sequence, index: int) -> None:
        if self.vocab.mask_id not in sequence:
            raise BadRequest(f"inputs[{index}] holds no [MASK] token to fill")

    def forward(self, sequences: list[Sequence]) -> list[Any]:
        feed = _pad(sequences, self.vocab.pad_id)
        src = feed["src_ids"]
        mask_index = np.flatnonzero(src == self.vocab.mask_id).astype("int64")
        scores, ids = self.predictor.run({**feed, "mask_index": mask_index})
        counts = (src == self.vocab.mask_id).sum(axis=1)
        bounds = np.cumsum(counts)[:-1]
        return list(zip(np.split(scores, bounds), np.split(ids, bounds), strict=True))

    def answer(self, sequence: Sequence, output: Any, options: dict) -> Any:
        scores, ids = output
        masks = [i for i, t in enumerate(sequence) if t == self.vocab.mask_id]
        per_mask = []
        for row, position in enumerate(masks):
            candidates = []
            for score, token in zip(scores[row, : options["top_k"]], ids[row], strict=False):
                filled = [*sequence[1:-1]]
                filled[position - 1] = int(token)
                candidates.append(
                    {
                        "score": float(score),
                        "token": int(token),
                        "token_str": self.vocab.tokens[int(token)],
                        "sequence": self.tokenizer.decode(filled, skip_special_tokens=False),
                    }
                )
            per_mask.append(candidates)
        return per_mask[0] if len(per_mask) == 1 else per_mask


class FeatureExtraction(Task):
    name = serving.FEATURE_EXTRACTION
    parameters = ("pooling", "normalize", "truncation")

    def options(self, parameters: dict) -> dict:
        pooling = parameters.get("pooling", "cls")
        if pooling not in ("cls", "mean"):
            raise BadRequest('parameters.pooling must be "cls" or "mean"')
        normalize = parameters.get("normalize", False)
        if not isinstance(normalize, bool):
            raise BadRequest("parameters.normalize must be true or false")
        return {"pooling": pooling, "normalize": normalize}

    def forward(self, sequences: list[Sequence]) -> list[Any]:
        (hidden,) = self.predictor.run(_pad(sequences, self.vocab.pad_id))
        return [hidden[row, : len(seq)] for row, seq in enumerate(sequences)]

    def answer(self, sequence: Sequence, output: Any, options: dict) -> Any:
        vector = output[0] if options["pooling"] == "cls" else output.mean(axis=0)
        if options["normalize"]:
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return [float(x) for x in vector]


class TextClassification(Task):
    name = serving.TEXT_CLASSIFICATION
    parameters = ("top_k", "truncation")

    def options(self, parameters: dict) -> dict:
        return {"top_k": min(_top_k(parameters, 1), len(self.manifest.labels))}

    def forward(self, sequences: list[Sequence]) -> list[Any]:
        (probabilities,) = self.predictor.run(_pad(sequences, self.vocab.pad_id))
        return list(probabilities)

    def answer(self, sequence: Sequence, output: Any, options: dict) -> Any:
        order = np.argsort(-output)[: options["top_k"]]
        return [{"label": self.manifest.labels[i], "score": float(output[i])} for i in order]


TASKS: dict[str, type[Task]] = {
    t.name: t for t in (FillMask, FeatureExtraction, TextClassification)
}


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string"}.get(
        type(value), type(value).__name__
    )


def _top_k(parameters: dict, default: int) -> int:
    top_k = parameters.get("top_k", default)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise BadRequest("parameters.top_k must be a positive integer")
    return top_k
