"""`ernie-sm evaluate` and `ernie-sm prepare-topics`: the labelled set's format, a fine-tuning
run of a tiny model through the real command, its failures, and the demo topic set."""

from __future__ import annotations

import json
import logging
import re
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import paddle
import pytest
from ernie_sm.contract import hyperparams, metrics
from ernie_sm.contract.errors import ConfigError, DataError
from ernie_sm.contract.serving import MANIFEST, TEXT_CLASSIFICATION, read_manifest
from ernie_sm.dataprep.topics import chunks, topic_splits, write_topic_set
from ernie_sm.text.documents import CorpusError
from ernie_sm.text.vocab import load_vocab
from ernie_sm.training import layout
from ernie_sm.training.config import config_from_dict
from ernie_sm.training.export import export_model
from ernie_sm.training.labelled import read_labelled_set, scores, truncate
from ernie_sm.training.model import ErnieForPretraining
from ernie_sm.training.serving_export import CLASSIFIER_OUTPUT, INPUT_NAMES

from ernie_sm import cli
from tests.helpers import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[1]
# Two groups of characters decide the label; the others are noise in both.
GROUP_A, GROUP_B = "甲乙丙丁戊己", "子丑寅卯辰巳"
NEUTRAL = "一二三四五六七八九十天地人山水火"
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", *GROUP_A, *GROUP_B, *NEUTRAL]
EVAL_HYPERPARAMETERS = {
    "learning_rate": "0.003",
    "num_train_steps": "300",
    "batch_size": "16",
    "max_seq_len": "24",
    "eval_steps": "10",
    "patience": "5",
    "use_cuda": "false",
}


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def _write_tsv(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _toy_lines(n: int, seed: int) -> list[str]:
    """`label<TAB>text`: "a" when the text holds characters of GROUP_A, "b" of GROUP_B."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        label, group = ("a", GROUP_A) if i % 2 == 0 else ("b", GROUP_B)
        chars = [*rng.choice(list(NEUTRAL), 5), *rng.choice(list(group), 2)]
        lines.append(f"{label}\t{''.join(rng.permutation(chars))}")
    return lines


def _eval_channel(folder: Path) -> Path:
    _write_tsv(folder / "train.tsv", ["label\ttext_a", *_toy_lines(160, 0)])
    _write_tsv(folder / "dev.tsv", _toy_lines(40, 1))
    _write_tsv(folder / "test.tsv", _toy_lines(60, 2))
    return folder


def _export_tiny(folder: Path, seed: int = 1) -> Path:
    """A tiny pretraining model as `ernie-sm train` exports it, packed as model.tar.gz."""
    vocab_path = folder.parent / f"{folder.name}-vocab.txt"
    vocab_path.parent.mkdir(parents=True, exist_ok=True)
    vocab_path.write_text("".join(f"{t}\t{i}\n" for i, t in enumerate(VOCAB)), encoding="utf-8")
    config = config_from_dict(dict(TINY_CONFIG), "tiny", len(VOCAB))
    paddle.seed(seed)
    model = ErnieForPretraining(config, load_vocab(vocab_path).pad_id)
    export_model(model, config, vocab_path, folder / "export")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "model.tar.gz", "w:gz") as tar:
        for path in (folder / "export").iterdir():
            tar.add(path, arcname=path.name)
    for path in sorted((folder / "export").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (folder / "export").rmdir()
    return folder


def _job(base: Path, channels: tuple[str, ...] = ("model", "eval"), **overrides: str) -> Path:
    data = base / "input" / "data"
    if "model" in channels:
        _export_tiny(data / "model")
    if "eval" in channels:
        _eval_channel(data / "eval")
    layout.write_local_job(base, {**EVAL_HYPERPARAMETERS, **overrides}, list(channels))
    return base


# The labelled set's format


def test_header_is_skipped_and_labels_come_sorted_from_train(tmp_path):
    _write_tsv(tmp_path / "train.tsv", ["label\ttext_a", "pos\t好", "neg\t坏", "pos\t妙"])
    _write_tsv(tmp_path / "dev.tsv", ["neg\t差", "", "pos\t行"])
    _write_tsv(tmp_path / "test.tsv", ["label\ttext_a", "pos\t棒"])
    data = read_labelled_set(tmp_path)
    assert data.labels == ("neg", "pos") and data.fields == 2
    assert [e.texts for e in data.splits["train"]] == [("好",), ("坏",), ("妙",)]
    assert [e.line for e in data.splits["dev"]] == [1, 3]


@pytest.mark.parametrize(
    ("file", "lines", "message"),
    [
        (
            "train.tsv",
            ["a\tx", "b\tx\ty"],
            r"train.tsv line 2: 3 fields where the lines before have 2",
        ),
        ("train.tsv", ["a\tx", "b"], r"train.tsv line 2: 1 tab-separated field\(s\)"),
        ("train.tsv", ["a\tx", "\ty"], r"train.tsv line 2: the label is empty"),
        ("train.tsv", ["label\ttext_a", "a\t  "], r"train.tsv line 2: text is empty"),
        ("dev.tsv", ["a\tx", "c\tx"], r"dev.tsv line 2: label 'c' never appears in train.tsv"),
        ("test.tsv", ["label\ttext_a", "zz\tx"], r"test.tsv line 2: label 'zz' never appears"),
        ("test.tsv", ["label\ttext_a", ""], r"test.tsv holds no examples"),
        ("dev.tsv", ["a\tx\ty"], r"different numbers of fields a line \(train.tsv 2, dev.tsv 3"),
    ],
)
def test_format_errors_name_file_and_line(tmp_path, file, lines, message):
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        _write_tsv(tmp_path / name, ["a\tx", "b\ty"])
    _write_tsv(tmp_path / file, lines)
    with pytest.raises(DataError, match=message):
        read_labelled_set(tmp_path)


def test_a_set_of_one_label_is_refused(tmp_path):
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        _write_tsv(tmp_path / name, ["label\ttext_a", "pos\t好", "pos\t妙"])
    with pytest.raises(DataError, match=r"train\.tsv has one label \('pos'\)"):
        read_labelled_set(tmp_path)


def test_lines_end_at_newline_alone(tmp_path):
    """U+2028, U+0085 and a form feed are part of a text (str.splitlines() would cut there),
    CRLF line ends are read as LF, and errors name the line the file has."""
    texts = ["好\u2028坏", "妙\x0c行", "差\x85棒", "天\x1c地"]
    _write_tsv(
        tmp_path / "train.tsv", [f"{label}\t{t}" for label, t in zip("abab", texts, strict=True)]
    )
    (tmp_path / "dev.tsv").write_bytes("label\ttext_a\r\na\t天\r\n\r\nb\t地\r\n".encode())
    _write_tsv(tmp_path / "test.tsv", ["a\tx"])
    data = read_labelled_set(tmp_path)
    assert [e.texts for e in data.splits["train"]] == [(t,) for t in texts]
    assert [(e.label, e.texts, e.line) for e in data.splits["dev"]] == [
        ("a", ("天",), 2),
        ("b", ("地",), 4),
    ]
    _write_tsv(tmp_path / "test.tsv", ["a\tx\x0cy", "b\u2028y", "a\tz"])
    with pytest.raises(DataError, match=r"test\.tsv line 2: 1 tab-separated field"):
        read_labelled_set(tmp_path)


def test_missing_file_is_named(tmp_path):
    _write_tsv(tmp_path / "train.tsv", ["a\tx"])
    with pytest.raises(ConfigError, match=r"has no dev\.tsv"):
        read_labelled_set(tmp_path)


def test_pairs_are_cut_longest_first_and_scores_define_absent_labels():
    assert [len(s) for s in truncate([list(range(10)), list(range(4))], 12)] == [5, 4]
    assert [len(s) for s in truncate([list(range(6)), list(range(6))], 8)] == [3, 2]
    accuracy, f1 = scores(np.array([0, 0, 1]), np.array([0, 0, 1]))
    assert accuracy == 1.0 and f1 == 1.0  # label 2: no gold, no prediction -> left out
    accuracy, f1 = scores(np.array([0, 1]), np.array([0, 0]))
    assert accuracy == 0.5 and f1 == pytest.approx((2 / 3 + 0) / 2)


def test_macro_f1_is_scikit_learns():
    """The convention results are compared against, on random cases (labels missing from
    test truth, from the predictions, or from both) and on a constant predictor whose test
    set lacks a train label: 8 labels, 7 in test, everything predicted as one."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(200):
        gold, predicted = rng.integers(0, 6, size=(2, int(rng.integers(1, 30))))
        _, f1 = scores(gold, predicted)
        assert f1 == pytest.approx(f1_score(gold, predicted, average="macro"))
    gold = np.repeat(np.arange(7), 3)
    _, f1 = scores(gold, np.zeros_like(gold))
    assert f1 == pytest.approx(f1_score(gold, np.zeros_like(gold), average="macro"))
    assert f1 == pytest.approx((2 * 3 / (2 * 3 + 18)) / 7)  # 0.036, not (0.25 + 1) / 8


def test_eval_hyperparameters_are_checked_by_name():
    assert hyperparams.parse_eval({}).num_train_steps == 1000
    assert hyperparams.defaults(hyperparams.EVAL_SPECS)["learning_rate"] == "5e-5"
    problems = hyperparams.validate({"patience": "-1", "epochs": "3"}, hyperparams.EVAL_SPECS)
    assert set(problems) == {"patience", "epochs"}
    assert "unknown hyperparameter" in problems["epochs"]


# The command end to end


def test_finetunes_scores_and_stops_early(tmp_path, sm_env, logs):
    base = sm_env(_job(tmp_path))
    assert cli.main(["evaluate"]) == 0
    assert not (base / "output" / "failure").exists()
    result = json.loads((base / "model" / "evaluation.json").read_text())
    assert result["labels"] == ["a", "b"] and result["test_examples"] == 60
    pretrained, baseline = result["pretrained"], result["baseline"]
    assert pretrained["test_accuracy"] >= 0.9 and pretrained["test_f1"] >= 0.9
    keys = {"test_accuracy", "test_f1", "best_dev_accuracy", "best_step", "steps_run"}
    assert set(pretrained) == set(baseline) == keys
    # Early stop: 5 scorings, 10 steps apart, without a better dev accuracy.
    assert pretrained["steps_run"] == pretrained["best_step"] + 50 < 300
    assert 0 < baseline["steps_run"] <= 300 and 0 <= baseline["test_accuracy"] <= 1
    lines = [r.getMessage() for r in logs.records]
    found = {}
    for definition in metrics.EVAL_METRIC_DEFINITIONS:
        pattern = re.compile(definition["Regex"])
        values = [float(m.group(1)) for m in map(pattern.search, lines) if m]
        found[definition["Name"]] = values
    assert found["eval_accuracy"] == [pytest.approx(pretrained["test_accuracy"], abs=1e-6)]
    assert found["eval_f1"] == [pytest.approx(pretrained["test_f1"], abs=1e-6)]
    assert found["baseline_accuracy"] == [pytest.approx(baseline["test_accuracy"], abs=1e-6)]
    assert found["baseline_f1"] == [pytest.approx(baseline["test_f1"], abs=1e-6)]
    assert len(found["eval_dev_accuracy"]) == pretrained["steps_run"] // 10
    assert max(found["eval_dev_accuracy"]) == pytest.approx(pretrained["best_dev_accuracy"])
    first = {
        name: next(line for line in lines if line.startswith(f"[finetune] model={name} step=10 "))
        for name in ("pretrained", "baseline")
    }
    # Two models: the channel's weights, and the random init of its config.
    assert first["pretrained"].split()[-1] != first["baseline"].split()[-1]
    assert not any(re.search(r"loss: ", line) for line in lines)  # pretraining's Training-loss


def test_baseline_channel_is_fine_tuned_as_the_baseline(tmp_path, sm_env, logs):
    base = sm_env(_job(tmp_path, ("model", "eval", "baseline"), num_train_steps="3"))
    _export_tiny(base / "input" / "data" / "baseline", seed=2)
    assert cli.main(["evaluate"]) == 0
    archive = base / "input" / "data" / "baseline" / "model.tar.gz"
    assert any(f"baseline model ({archive})" in r.getMessage() for r in logs.records)
    assert json.loads((base / "model" / "evaluation.json").read_text())["baseline"]


def test_pairs_are_encoded_with_the_models_vocab_and_token_types(tmp_path):
    from ernie_sm.text.encoder import SentenceEncoder
    from ernie_sm.training.labelled import encode_split

    _write_tsv(
        tmp_path / "train.tsv", ["label\ttext_a\ttext_b", "a\t甲乙丙丁戊\t子丑", "b\t一\t二"]
    )
    for name in ("dev.tsv", "test.tsv"):
        _write_tsv(tmp_path / name, ["a\t天\t地"])
    data = read_labelled_set(tmp_path)
    assert data.fields == 3
    vocab_path = tmp_path / "vocab.txt"
    vocab_path.write_text("".join(f"{t}\t{i}\n" for i, t in enumerate(VOCAB)), encoding="utf-8")
    vocab = load_vocab(vocab_path)
    encoded = encode_split(data.splits["train"], data.labels, SentenceEncoder(vocab_path), vocab, 8)
    ids = {t: i for i, t in enumerate(VOCAB)}
    cls, sep = ids["[CLS]"], ids["[SEP]"]
    # 8 tokens: [CLS], 3 of text_a (cut longest-first), [SEP], both of text_b, [SEP].
    assert encoded.ids[0] == [cls, ids["甲"], ids["乙"], ids["丙"], sep, ids["子"], ids["丑"], sep]
    assert encoded.types[0] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert encoded.ids[1] == [cls, ids["一"], sep, ids["二"], sep]
    assert list(encoded.labels) == [0, 1]


def test_baseline_can_be_skipped(tmp_path, sm_env):
    base = sm_env(_job(tmp_path, run_baseline="false", num_train_steps="3", eval_steps="2"))
    assert cli.main(["evaluate"]) == 0
    result = json.loads((base / "model" / "evaluation.json").read_text())
    assert result["baseline"] is None
    assert result["pretrained"]["steps_run"] == 3
    assert read_manifest(base / "model").labels == ("a", "b")  # kept without a baseline too


def test_sigterm_stops_with_143_and_no_result(tmp_path, sm_env, monkeypatch):
    from ernie_sm.training import evaluate

    class Stopping:  # SIGTERM arrived before the first step
        requested = True

        def __init__(self, action: str) -> None:
            pass

    monkeypatch.setattr(evaluate, "StopSignal", Stopping)
    base = sm_env(_job(tmp_path, num_train_steps="3"))
    assert cli.main(["evaluate"]) == 143
    assert not (base / "model" / "evaluation.json").exists()
    assert not (base / "output" / "failure").exists()


@pytest.mark.parametrize(
    ("channels", "overrides", "reason"),
    [
        (("model",), {}, "the 'eval' channel is missing"),
        (("eval",), {}, "the 'model' channel is missing"),
        (("model", "eval"), {"patience": "-1"}, "patience: bad value '-1'"),
        (("model", "eval"), {"num_epochs": "3"}, "num_epochs: unknown hyperparameter"),
        (("model", "eval"), {"max_seq_len": "65"}, "max_seq_len 65 exceeds"),
        (("model", "eval"), {"learning_rate": "1e30"}, "diverged: the loss is"),
    ],
)
def test_failure_is_written_and_exits_1(tmp_path, sm_env, channels, overrides, reason):
    base = sm_env(_job(tmp_path, channels, **{"num_train_steps": "3", **overrides}))
    assert cli.main(["evaluate"]) == 1
    assert reason in (base / "output" / "failure").read_text()
    assert not (base / "model" / "evaluation.json").exists()


def test_a_set_of_one_label_fails_the_job_before_any_training(tmp_path, sm_env, logs):
    base = sm_env(_job(tmp_path, num_train_steps="3"))
    eval_dir = base / "input" / "data" / "eval"
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        _write_tsv(eval_dir / name, [line for line in _toy_lines(20, 0) if line[0] == "a"])
    assert cli.main(["evaluate"]) == 1
    failure = (base / "output" / "failure").read_text()
    assert f"{eval_dir / 'train.tsv'} has one label ('a')" in failure
    assert not (base / "model" / "evaluation.json").exists()
    assert not any("[finetune]" in r.getMessage() for r in logs.records)


def test_a_model_of_another_architecture_is_refused(tmp_path, sm_env):
    base = sm_env(_job(tmp_path, ("eval",), num_train_steps="3"))
    model = base / "input" / "data" / "model"
    _export_tiny(model)
    with tarfile.open(model / "model.tar.gz") as tar:
        tar.extractall(model / "unpacked", filter="data")
    (model / "model.tar.gz").unlink()
    state = paddle.load(str(model / "unpacked" / "model.pdparams"))
    del state["ernie.pooler.weight"]
    paddle.save(state, str(model / "unpacked" / "model.pdparams"))
    layout.write_local_job(base, {**EVAL_HYPERPARAMETERS}, ["model", "eval"])
    assert cli.main(["evaluate"]) == 1
    assert "parameter ernie.pooler.weight is missing" in (base / "output" / "failure").read_text()


# What the output archive keeps for serving


def _predictor(root: Path, prefix: str):
    """Paddle Inference on the CPU, as the model server loads an exported model."""
    config = paddle.inference.Config(f"{root / prefix}.json", f"{root / prefix}.pdiparams")
    config.disable_gpu()
    config.disable_glog_info()
    return paddle.inference.create_predictor(config)


def _probabilities(predictor, batch: tuple[np.ndarray, ...]) -> np.ndarray:
    for name, array in zip(INPUT_NAMES, batch, strict=True):
        predictor.get_input_handle(name).copy_from_cpu(array)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def _eager_probabilities(model, batch: tuple[np.ndarray, ...]) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        logits = model(*(paddle.to_tensor(a) for a in batch))
    return paddle.nn.functional.softmax(logits, axis=-1).numpy()


def test_the_archive_keeps_the_pretrained_models_best_classifier_for_serving(
    tmp_path, sm_env, monkeypatch
):
    from ernie_sm.text.encoder import SentenceEncoder
    from ernie_sm.training import evaluate
    from ernie_sm.training.labelled import encode_split, padded

    finetuned = {}
    real = evaluate.finetune

    def keep(candidate, *args):
        result, model = real(candidate, *args)
        finetuned[candidate.name] = model
        return result, model

    monkeypatch.setattr(evaluate, "finetune", keep)
    base = sm_env(_job(tmp_path))
    assert cli.main(["evaluate"]) == 0
    # What SageMaker packs of SM_MODEL_DIR into model.tar.gz, unpacked as a server would.
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        for path in (base / "model").iterdir():
            tar.add(path, arcname=path.name)
    root = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        tar.extractall(root, filter="data")
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert files == {
        "evaluation.json",
        MANIFEST,
        "vocab.txt",
        "serving/classifier.json",
        "serving/classifier.pdiparams",
    }
    manifest = read_manifest(root)
    eval_channel = base / "input" / "data" / "eval"
    data = read_labelled_set(eval_channel)
    assert manifest.models == {TEXT_CLASSIFICATION: "serving/classifier"}
    assert manifest.labels == data.labels == ("a", "b")  # class-index order
    assert manifest.max_seq_len == 24 and manifest.lowercase is True
    assert (root / "vocab.txt").read_text(encoding="utf-8") == "".join(
        f"{t}\t{i}\n" for i, t in enumerate(VOCAB)
    )
    predictor = _predictor(root, manifest.models[TEXT_CLASSIFICATION])
    assert predictor.get_input_names() == list(INPUT_NAMES)
    assert predictor.get_output_names() == [CLASSIFIER_OUTPUT]
    # The test split in the job's batches: the reported accuracy is the exported model's.
    vocab = load_vocab(root / "vocab.txt")
    encoder = SentenceEncoder(root / "vocab.txt")
    test = encode_split(data.splits["test"], data.labels, encoder, vocab, manifest.max_seq_len)
    rows = [np.arange(i, min(i + 16, len(test))) for i in range(0, len(test), 16)]
    batches = [padded(test, r, vocab.pad_id)[:3] for r in rows]
    served = [_probabilities(predictor, batch) for batch in batches]
    for probabilities, batch in zip(served, batches, strict=True):
        assert probabilities.dtype == np.float32 and probabilities.shape == (len(batch[0]), 2)
        eager = _eager_probabilities(finetuned[metrics.PRETRAINED], batch)
        np.testing.assert_allclose(probabilities, eager, rtol=0, atol=1e-5)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
        baseline = _eager_probabilities(finetuned[metrics.BASELINE], batch)
        assert np.abs(probabilities - baseline).max() > 1e-2  # not the baseline's classifier
    result = json.loads((root / "evaluation.json").read_text())
    predicted = np.concatenate(served).argmax(-1)
    assert scores(test.labels, predicted)[0] == result["pretrained"]["test_accuracy"]


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    """model.tar.gz of a tiny model, made once for the tests that break it."""
    return _export_tiny(tmp_path_factory.mktemp("tiny") / "model") / "model.tar.gz"


def _with_member(archive: Path, out: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    """A copy of `archive` with one member more, as a crafted upload would have."""
    import io

    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as tar:
        for info in src.getmembers():
            tar.addfile(info, src.extractfile(info))
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


class _Payload:
    """Unpickled by anything that runs a pickle's code, it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _broken_channel(kind: str, archive: Path, model: Path) -> str:
    """Break the model channel `model` in the way `kind` names; returns what the failure says."""
    import pickle

    model.mkdir(parents=True)
    target = model / "model.tar.gz"
    if kind == "truncated":
        data = archive.read_bytes()
        target.write_bytes(data[: len(data) // 2])
        return f"the model channel ({target}) cannot be unpacked, it is truncated or not a .tar.gz"
    if kind == "not gzip":
        target.write_bytes(b"PK\x03\x04 a zip file, say")
        return f"the model channel ({target}) cannot be unpacked, it is truncated or not a .tar.gz"
    if kind == "escaping member":
        _with_member(archive, target, tarfile.TarInfo("../../escaped.txt"), b"x")
        return f"the model channel ({target}) holds a member that is not unpacked: '../../escaped"
    if kind == "absolute symlink":
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        _with_member(archive, target, link)
        return "holds a member that is not unpacked: 'passwd' is a link to an absolute path"
    with tarfile.open(archive) as tar:
        tar.extractall(model, filter="data")
    weights = model / "model.pdparams"
    if kind == "garbage weights":
        weights.write_bytes(b"\x00garbage" * 100)
        return f"{weights} cannot be read as Paddle weights (UnsafePickle"
    if kind == "empty weights":
        weights.write_bytes(b"")
        return f"{weights} cannot be read as Paddle weights (UnsafePickle"
    if kind == "pickled code":  # a model someone else trained: it must not run anything
        weights.write_bytes(pickle.dumps(_Payload(model.parent / "ran")))
        return f"{weights} cannot be read as Paddle weights (UnsafePickle"
    if kind == "weights of another kind":
        weights.write_bytes(pickle.dumps([1, 2, 3]))
        return f"{weights} holds a list, not the parameters by name"
    assert kind == "weights of strings"
    weights.write_bytes(pickle.dumps({"ernie.pooler.weight": "x"}))
    return f"{weights}: entry 'ernie.pooler.weight' is a str, not a float tensor"


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "not gzip",
        "escaping member",
        "absolute symlink",
        "garbage weights",
        "empty weights",
        "pickled code",
        "weights of another kind",
        "weights of strings",
    ],
)
def test_a_broken_model_channel_is_named_without_a_traceback(
    tmp_path, sm_env, logs, tiny_export, kind
):
    base = sm_env(_job(tmp_path, ("eval",), num_train_steps="3"))
    expected = _broken_channel(kind, tiny_export, base / "input" / "data" / "model")
    layout.write_local_job(base, {**EVAL_HYPERPARAMETERS}, ["model", "eval"])
    assert cli.main(["evaluate"]) == 1
    assert expected in (base / "output" / "failure").read_text()
    assert not any("Traceback" in r.getMessage() for r in logs.records)
    assert not (base / "model" / "evaluation.json").exists()
    assert not (base / "input" / "data" / "ran").exists()  # no pickled code ran
    # The archive is unpacked into a temporary folder: ../../ of it is the temp dir's parent.
    assert not (Path(tempfile.gettempdir()).parent / "escaped.txt").exists()


# The demo labelled set


def test_prepare_topics_splits_by_document_with_every_topic(tmp_path):
    corpus = ROOT / "demo" / "corpus"
    assert cli.main(["prepare-topics", str(corpus), "--output", str(tmp_path / "a")]) == 0
    written = {s: (tmp_path / "a" / f"{s}.tsv").read_text() for s in ("train", "dev", "test")}
    data = read_labelled_set(tmp_path / "a")  # what `ernie-sm evaluate` accepts
    topics = sorted(p.stem for p in corpus.glob("*.txt"))
    assert list(data.labels) == topics
    for split in ("dev", "test"):
        assert {e.label for e in data.splits[split]} == set(topics)
    texts = {s: {e.texts[0] for e in data.splits[s]} for s in data.splits}
    assert all(len(t) <= 200 for ts in texts.values() for t in ts)
    # No document in two splits: each document's first chunk tells where it went.
    from ernie_sm.text.documents import read_documents

    homes = []
    for path in sorted(corpus.glob("*.txt")):
        for document in read_documents([path]):
            parts = chunks(document.text)
            where = {s for s in texts for part in parts if part in texts[s]}
            assert len(where) == 1, document.source
            homes.append(where.pop())
    assert homes.count("train") > homes.count("dev") >= 8
    # The same for a seed, another split for another seed.
    write_topic_set(corpus, tmp_path / "b")
    assert {s: (tmp_path / "b" / f"{s}.tsv").read_text() for s in written} == written
    assert topic_splits(corpus, seed=1)["dev"] != topic_splits(corpus, seed=0)["dev"]


def _topic(folder: Path, name: str, documents: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(f"第{i}句。又一句。\n\n" for i in range(documents)), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("documents", "held"), [(0, "no document"), (1, "1 document"), (2, "2 documents")]
)
def test_prepare_topics_refuses_a_topic_of_too_few_documents(tmp_path, documents, held):
    _topic(tmp_path / "corpus", "one.txt", 3)
    two = _topic(tmp_path / "corpus", "two.txt", documents)
    argv = ["prepare-topics", str(tmp_path / "corpus"), "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert not (tmp_path / "out").exists()
    with pytest.raises(CorpusError, match=rf"{two} holds {held}: topic 'two' needs at least 3"):
        topic_splits(tmp_path / "corpus")
    _topic(tmp_path / "corpus", "two.txt", 3)  # three are enough for every split
    assert cli.main(argv) == 0
    data = read_labelled_set(tmp_path / "out")
    assert all({e.label for e in data.splits[s]} == {"one", "two"} for s in data.splits)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a\tb.txt", "c.txt"], r"'.*/a\\tb.txt': its label holds a control character \('\\t'\)"),
        (["a\nb.txt", "c.txt"], r"'.*/a\\nb.txt': its label holds a control character"),
        (["a\u2028b.txt", "c.txt"], r"its label holds a line break \('\\u2028'\)"),
        ([" .txt", "c.txt"], r"'.*/ .txt': its name gives an empty label"),
        ([" a .txt", "a.txt", "b.txt"], r"'.*/ a .txt' and '.*/a.txt' give the same label 'a'"),
    ],
)
def test_prepare_topics_refuses_file_names_that_break_labels(tmp_path, names, message):
    for name in names:
        _topic(tmp_path / "corpus", name, 3)
    with pytest.raises(CorpusError, match=message):
        topic_splits(tmp_path / "corpus")
    argv = ["prepare-topics", str(tmp_path / "corpus"), "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_prepare_topics_names_an_output_that_is_not_a_folder(tmp_path, capsys, where):
    _topic(tmp_path / "corpus", "a.txt", 3)
    _topic(tmp_path / "corpus", "b.txt", 3)
    (tmp_path / "taken").write_text("x")
    output = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "eval"
    assert cli.main(["prepare-topics", str(tmp_path / "corpus"), "--output", str(output)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"prepare-topics failed: --output {output}" in err and "Traceback" not in err
    assert (tmp_path / "taken").read_text() == "x"
