"""The models `ernie-sm serve` runs, with named inputs and outputs, and serving.json.

A pretraining job exports fill-mask (the top-k probabilities and ids at the mask
positions only, never the whole vocabulary) and feature extraction (the last hidden
states); an evaluation exports its fine-tuned classifier. Every model takes src_ids,
sent_ids and pos_ids ([batch, seq] int64). paddle.jit.save under PIR names an output
`fetch_name_<i>` (only a persistable value can be named while tracing), so the saved
program's fetch ops are renamed after the save, which Paddle Inference's
get_output_names() then reports.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import paddle
from ernie_sm.contract import serving
from ernie_sm.text.encoder import LOWERCASE
from ernie_sm.training.config import ErnieConfig
from ernie_sm.training.model import (
    ClassifierInference,
    ErnieClassifier,
    ErnieFeatures,
    ErnieFillMask,
    ErnieForPretraining,
)
from ernie_sm.training.paddle_noise import without_paddle_noise
from paddle.static import InputSpec

log = logging.getLogger("ernie")

INPUT_NAMES = ("src_ids", "sent_ids", "pos_ids")
MASK_INDEX = "mask_index"  # fill-mask's fourth input: flat positions into batch x seq
FILL_MASK_PREFIX = "serving/fill_mask"
FILL_MASK_OUTPUTS = ("scores", "token_ids")  # [n, max_top_k] float32, int64
FEATURES_PREFIX = "serving/features"
FEATURES_OUTPUTS = ("hidden_states",)  # [batch, seq, hidden] float32
CLASSIFIER_PREFIX = "serving/classifier"
CLASSIFIER_OUTPUT = "probs"  # softmax probabilities, [batch, num_labels] float32
# The most answers per mask a fill-mask request may ask for (the export's fixed top-k).
MAX_TOP_K = 10
VOCAB = "vocab.txt"


def id_specs() -> list[InputSpec]:
    """The named inputs of every served model: token, sentence and position ids [B, L]."""
    return [InputSpec([None, None], "int64", name) for name in INPUT_NAMES]


def save_inference_model(
    layer: paddle.nn.Layer, prefix: Path, outputs: tuple[str, ...], inputs: list[InputSpec]
) -> None:
    """paddle.jit.save of `layer` (in eval mode) to `prefix`.json/.pdiparams, its inputs
    named by their specs and its outputs `outputs`, in the order forward() returns them."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    layer.eval()
    with without_paddle_noise():
        paddle.jit.save(layer, str(prefix), input_spec=inputs)
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


def export_pretrained(model: ErnieForPretraining, config: ErnieConfig, model_dir: Path) -> None:
    """Fill-mask and feature extraction of a pretraining model, and serving.json."""
    top_k = min(MAX_TOP_K, config.vocab_size)
    mask_index = InputSpec([None], "int64", MASK_INDEX)
    save_inference_model(
        ErnieFillMask(model, top_k),
        model_dir / FILL_MASK_PREFIX,
        FILL_MASK_OUTPUTS,
        [*id_specs(), mask_index],
    )
    save_inference_model(
        ErnieFeatures(model.ernie), model_dir / FEATURES_PREFIX, FEATURES_OUTPUTS, id_specs()
    )
    serving.ServingManifest(
        models={serving.FILL_MASK: FILL_MASK_PREFIX, serving.FEATURE_EXTRACTION: FEATURES_PREFIX},
        max_seq_len=config.max_position_embeddings,
        lowercase=LOWERCASE,
        max_top_k=top_k,
    ).write(model_dir)


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
        ClassifierInference(model), model_dir / CLASSIFIER_PREFIX, (CLASSIFIER_OUTPUT,), id_specs()
    )
    (model_dir / VOCAB).write_bytes(vocab_file)
    manifest = serving.ServingManifest(
        models={serving.TEXT_CLASSIFICATION: CLASSIFIER_PREFIX},
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
