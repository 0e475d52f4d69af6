"""`ernie-sm evaluate`: what the pretraining bought, measured on a labelled downstream set.

Runs under the same SageMaker container contract as `ernie-sm train` (training/layout.py)
and is started as `ernie-sm evaluate` (ContainerArguments ["evaluate"]). Channels:

    model     (required) a model as `ernie-sm train` exports it: model.tar.gz, or its
              contents (model.pdparams, ernie_config.json, vocab.txt)
    eval      (required) train.tsv, dev.tsv, test.tsv (training/labelled.py)
    baseline  (optional) another model.tar.gz; without it the baseline is the model's own
              architecture (its ernie_config.json), randomly initialised with random_seed

Each model is fine-tuned on train.tsv as ERNIE's classification tasks are: the encoder's
pooled [CLS] output, dropout and a linear layer; AdamW (no decay on LayerNorm or biases),
global-norm clipping at 1.0, linear warm-up over the first 10% of num_train_steps, then
linear decay to 0. Dev accuracy is scored every eval_steps and at the end; the best dev
state is kept in memory, training stops early after `patience` scorings without a better
one, and the best state is scored on test.tsv: accuracy and macro-F1. The results go to
SM_MODEL_DIR/evaluation.json and to the `[eval]` metric lines (contract/metrics.py). The
pretrained model's classifier in that best state, the one its scores are of, is exported
for serving beside them (training/serving_export.py); the baseline's is not kept.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from ernie_sm.contract import channels, hyperparams, metrics
from ernie_sm.contract.errors import ConfigError, TrainingError
from ernie_sm.contract.hyperparams import EvalHyperparameters
from ernie_sm.text.documents import CorpusError
from ernie_sm.text.encoder import SentenceEncoder
from ernie_sm.text.vocab import Vocab
from ernie_sm.training import layout as job_layout
from ernie_sm.training.config import ErnieConfig
from ernie_sm.training.export import exported_model, read_exported, set_weights
from ernie_sm.training.labelled import (
    SPLITS,
    Encoded,
    LabelledSet,
    encode_split,
    padded,
    read_labelled_set,
    scores,
)
from ernie_sm.training.layout import JobLayout
from ernie_sm.training.model import ErnieClassifier, ErnieModel, no_decay
from ernie_sm.training.serving_export import export_classifier
from ernie_sm.training.train import EXIT_STOPPED, Stopped, StopSignal, log_to_stdout

log = logging.getLogger("ernie")

RESULT_FILE = "evaluation.json"
LOG_EVERY = 10  # steps between [finetune] lines
WARMUP_FRACTION = 0.1
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class Candidate:
    """One model to fine-tune: its architecture, weights (None: random init) and the
    labelled set tokenised with its own vocab (and that vocab's file, for serving)."""

    name: str  # metrics.PRETRAINED or metrics.BASELINE
    source: str
    config: ErnieConfig
    vocab: Vocab
    vocab_file: bytes
    state: dict | None
    encoded: dict[str, Encoded]


def main() -> int:
    if (reason := job_layout.outside_a_job()) is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    log_to_stdout()
    stop = StopSignal("stopping the evaluation")
    output_dir = job_layout.output_dir()
    try:
        layout = job_layout.from_environment()
        hp = hyperparams.parse_eval(layout.hyperparameters)
        if layout.current_host != layout.hosts[0]:
            log.info("%s has nothing to do: %s evaluates", layout.current_host, layout.hosts[0])
            return 0
        result = evaluate(layout, hp, stop)
    except Stopped:
        return EXIT_STOPPED
    except TrainingError as exc:
        return _fail(output_dir, str(exc))
    except Exception as exc:
        log.error("%s", traceback.format_exc())
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return _fail(
            output_dir, f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
        )
    log.info("evaluation written to %s", result)
    return 0


def _fail(output_dir: Path, reason: str) -> int:
    log.error("evaluation failed: %s", reason)
    job_layout.write_failure(output_dir, reason)
    return 1


def evaluate(layout: JobLayout, hp: EvalHyperparameters, stop: StopSignal) -> Path:
    """Fine-tune and score the pretrained model, then the baseline; returns evaluation.json."""
    model_channel = layout.channel(channels.MODEL)
    data = read_labelled_set(layout.channel(channels.EVAL))
    log.info(
        "labelled set: %s examples, %d labels (%s)",
        "/".join(str(len(data.splits[s])) for s in SPLITS),
        len(data.labels),
        ", ".join(data.labels),
    )
    # Everything is read and tokenised before the first step: a bad channel costs no training.
    with exported_model(model_channel) as (folder, source):
        pretrained = _candidate(metrics.PRETRAINED, folder, source, data, hp)
    baseline = None
    if hp.run_baseline and channels.BASELINE in layout.channels:
        channel = layout.channel(channels.BASELINE)
        with exported_model(channel, "the baseline channel") as (folder, source):
            baseline = _candidate(metrics.BASELINE, folder, source, data, hp)
    elif hp.run_baseline:
        baseline = Candidate(
            metrics.BASELINE,
            f"random init of the model's config (random_seed {hp.random_seed})",
            pretrained.config,
            pretrained.vocab,
            pretrained.vocab_file,
            None,
            pretrained.encoded,
        )
    _start_device(hp)
    result: dict = {"labels": list(data.labels)}
    result[metrics.PRETRAINED], classifier = finetune(pretrained, data, hp, stop)
    result[metrics.BASELINE] = None if baseline is None else finetune(baseline, data, hp, stop)[0]
    result["test_examples"] = len(data.splits["test"])
    export_classifier(
        classifier, pretrained.vocab_file, data.labels, hp.max_seq_len, layout.model_dir
    )
    path = layout.model_dir / RESULT_FILE
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _candidate(
    name: str, folder: Path, source: str, data: LabelledSet, hp: EvalHyperparameters
) -> Candidate:
    config, vocab, state = read_exported(folder, source)
    segments = data.fields - 1
    if hp.max_seq_len > config.max_position_embeddings:
        raise ConfigError(
            f"max_seq_len {hp.max_seq_len} exceeds the {name} model's max_position_embeddings "
            f"{config.max_position_embeddings} ({source})"
        )
    if hp.max_seq_len < 1 + 2 * segments:
        raise ConfigError(
            f"max_seq_len {hp.max_seq_len} leaves no token of text: [CLS], {segments} [SEP] and "
            f"at least one token of each text need {1 + 2 * segments}"
        )
    if segments > config.type_vocab_size:
        raise ConfigError(
            f"the eval channel holds sentence pairs, which need 2 token types; the {name} "
            f"model has type_vocab_size {config.type_vocab_size} ({source})"
        )
    try:
        encoder = SentenceEncoder(folder / "vocab.txt")
    except CorpusError as exc:
        raise ConfigError(f"the {name} model ({source}): {exc}") from None
    encoded = {
        split: encode_split(data.splits[split], data.labels, encoder, vocab, hp.max_seq_len)
        for split in SPLITS
    }
    vocab_file = (folder / "vocab.txt").read_bytes()
    return Candidate(name, source, config, vocab, vocab_file, state, encoded)


def _start_device(hp: EvalHyperparameters) -> None:
    """The GPU when there is one and use_cuda allows it, else the CPU (as `ernie-sm train`)."""
    use_gpu = hp.use_cuda and paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count()
    paddle.set_device("gpu:0" if use_gpu else "cpu")


def finetune(
    candidate: Candidate, data: LabelledSet, hp: EvalHyperparameters, stop: StopSignal
) -> tuple[dict, ErnieClassifier]:
    """Fine-tune one model, keep its best dev state, score that on test; returns the scores
    and the classifier in that state."""
    name = candidate.name
    paddle.seed(hp.random_seed)  # the same classifier init and dropout for both models
    ernie = ErnieModel(candidate.config, candidate.vocab.pad_id)
    if candidate.state is not None:
        set_weights(ernie, candidate.state, f"the {name} model ({candidate.source})", "ernie.")
    model = ErnieClassifier(ernie, candidate.config, len(data.labels))
    schedule = paddle.optimizer.lr.LambdaDecay(hp.learning_rate, _schedule(hp.num_train_steps))
    decayed = {p.name for n, p in model.named_parameters() if not no_decay(n)}
    optimizer = paddle.optimizer.AdamW(
        learning_rate=schedule,
        parameters=model.parameters(),
        weight_decay=hp.weight_decay,
        apply_decay_param_fun=lambda param: param in decayed,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(MAX_GRAD_NORM),
    )
    log.info(
        "fine-tuning the %s model (%s) on %s, %d steps at most",
        name,
        candidate.source,
        paddle.get_device(),
        hp.num_train_steps,
    )
    train, pad_id = candidate.encoded["train"], candidate.vocab.pad_id
    batches = _batches(len(train), hp.batch_size, np.random.default_rng(hp.random_seed))
    best_accuracy, best_step, best_state = -1.0, 0, None
    without_better = 0
    window: list[float] = []
    step = 0
    model.train()
    while step < hp.num_train_steps:
        if stop.requested:
            raise Stopped
        src, sent, pos, labels = padded(train, next(batches), pad_id)
        logits = model(*(paddle.to_tensor(a) for a in (src, sent, pos)))
        loss = F.cross_entropy(logits.astype("float32"), paddle.to_tensor(labels).unsqueeze(-1))
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
        step += 1
        value = float(loss)
        if not math.isfinite(value):
            raise TrainingError(
                f"fine-tuning the {name} model diverged: the loss is {value} at step {step}; "
                "lower learning_rate"
            )
        window.append(value)
        last = step == hp.num_train_steps
        if step % LOG_EVERY == 0 or last:
            log.info(metrics.finetune_line(name, step, sum(window) / len(window)))
            window = []
        if step % hp.eval_steps == 0 or last:
            accuracy = scores(
                candidate.encoded["dev"].labels, _predict(model, candidate, "dev", hp, stop)
            )[0]
            log.info(metrics.dev_line(name, step, accuracy))
            if accuracy > best_accuracy:
                best_accuracy, best_step, without_better = accuracy, step, 0
                with paddle.no_grad():  # a copy in memory, not part of any graph
                    best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                without_better += 1
                if hp.patience and without_better >= hp.patience:
                    if window:
                        log.info(metrics.finetune_line(name, step, sum(window) / len(window)))
                    log.info(
                        "early stop of the %s model at step %d: no better dev accuracy in %d "
                        "scorings since step %d",
                        name,
                        step,
                        without_better,
                        best_step,
                    )
                    break
    if step == 0 or best_state is None:
        raise TrainingError(f"fine-tuning the {name} model took no step")
    model.set_state_dict(best_state)
    test = candidate.encoded["test"]
    if not len(test):
        raise TrainingError("the test set is empty: there is nothing to score")
    accuracy, f1 = scores(test.labels, _predict(model, candidate, "test", hp, stop))
    log.info(metrics.eval_line(name, accuracy, f1))
    return {
        "test_accuracy": accuracy,
        "test_f1": f1,
        "best_dev_accuracy": best_accuracy,
        "best_step": best_step,
        "steps_run": step,
    }, model


def _predict(
    model: ErnieClassifier,
    candidate: Candidate,
    split: str,
    hp: EvalHyperparameters,
    stop: StopSignal,
) -> np.ndarray:
    """The predicted label index of every example of `split`."""
    encoded = candidate.encoded[split]
    predicted = []
    model.eval()
    with paddle.no_grad():
        for start in range(0, len(encoded), hp.batch_size):
            if stop.requested:
                raise Stopped
            rows = np.arange(start, min(start + hp.batch_size, len(encoded)))
            src, sent, pos, _ = padded(encoded, rows, candidate.vocab.pad_id)
            logits = model(*(paddle.to_tensor(a) for a in (src, sent, pos)))
            predicted.append(logits.argmax(-1).numpy())
    model.train()
    return np.concatenate(predicted)


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Rows of each batch, epoch after epoch, each epoch in a new shuffled order; the last
    batch of an epoch may be smaller."""
    while True:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def _schedule(total: int):
    """Linear warm-up over the first 10% of the steps (at least one), then linear decay to 0
    at `total`; every step, the first included, has a rate above 0."""
    warmup = max(1, round(total * WARMUP_FRACTION))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(total - warmup, 1))

    return factor
