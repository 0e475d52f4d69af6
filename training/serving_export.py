"""Inference models for serving: named inputs and outputs, and the archive's serving.json.

An exported model takes src_ids, sent_ids and pos_ids ([batch, seq] int64) and its outputs
carry names: paddle.jit.save under PIR names an output `fetch_name_<i>` (only a persistable
value can be named while tracing), so the saved program's fetch ops are renamed after the
save, which Paddle Inference's get_output_names() then reports.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import paddle
from ernie_sm.contract.serving import TEXT_CLASSIFICATION, ServingManifest
from ernie_sm.text.encoder import LOWERCASE
from ernie_sm.training.model import ClassifierInference, ErnieClassifier
from ernie_sm.training.paddle_noise import without_paddle_noise
from paddle.static import InputSpec

log = logging.getLogger("ernie")

INPUT_NAMES = ("src_ids", "sent_ids", "pos_ids")
CLASSIFIER_PREFIX = "serving/classifier"
CLASSIFIER_OUTPUT = "probs"  # softmax probabilities, [batch, num_labels] float32
VOCAB = "vocab.txt"


def save_inference_model(layer: paddle.nn.Layer, prefix: Path, outputs: tuple[str, ...]) -> None:
    """paddle.jit.save of `layer` (in eval mode) to `prefix`.json/.pdiparams, its inputs
    named INPUT_NAMES and its outputs `outputs`, in the order forward() returns them."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    layer.eval()
    spec = [InputSpec([None, None], "int64", name) for name in INPUT_NAMES]
    with without_paddle_noise():
        paddle.jit.save(layer, str(prefix), input_spec=spec)
    program = paddle.static.Program()
    model_file = f"{prefix}.json"
    paddle.base.core.deserialize_pir_program(model_file, program)
    fetches = [op for op in program.global_block().ops if op.name() == "pd_op.fetch"]
    if len(fetches) != len(outputs):
        raise RuntimeError(f"{model_file}: {len(fetches)} outputs, expected {len(outputs)}")
    for op in fetches:
        op.set_str_attr("name", outputs[op.attrs()["col"]])
    # As paddle.static.save_inference_model writes it: the PIR version, not readable, trainable.
    paddle.base.core.serialize_pir_program(program, model_file, True, False, True)


def export_classifier(
    model: ErnieClassifier,
    vocab_file: bytes,
    labels: tuple[str, ...],
    max_seq_len: int,
    model_dir: Path,
) -> Path:
    """Write a fine-tuned classifier for serving into `model_dir`: the inference model at
    CLASSIFIER_PREFIX, the vocab its ids refer to and serving.json; returns serving.json."""
    started = time.monotonic()
    model_dir.mkdir(parents=True, exist_ok=True)
    save_inference_model(
        ClassifierInference(model), model_dir / CLASSIFIER_PREFIX, (CLASSIFIER_OUTPUT,)
    )
    (model_dir / VOCAB).write_bytes(vocab_file)
    manifest = ServingManifest(
        models={TEXT_CLASSIFICATION: CLASSIFIER_PREFIX},
        vocab=VOCAB,
        max_seq_len=max_seq_len,
        lowercase=LOWERCASE,
        labels=labels,
    )
    path = manifest.write(model_dir)
    log.info(
        "classifier exported for serving to %s (%.1f s)",
        model_dir / CLASSIFIER_PREFIX,
        time.monotonic() - started,
    )
    return path
