"""`ernie-sm serve` on a tiny exported model, on loopback only: the predictor equals the
eager model, answers follow the Hugging Face schemas, bad requests get a 4xx naming the
fault, concurrent requests are batched, and SIGTERM drains an in-flight request."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import paddle
import pytest
from ernie_sm.contract import serving
from ernie_sm.serving.tasks import TASKS, BadRequest
from ernie_sm.training.config import load_config
from ernie_sm.training.export import export_model
from ernie_sm.training.model import ErnieClassifier, ErnieForPretraining
from ernie_sm.training.serving_export import export_classifier

from tests import synthetic
from tests.helpers import TINY_CONFIG

# Paddle Inference (oneDNN) against the eager model, float32 on the CPU.
TOLERANCE = 1e-4
CHARS = [t for t in synthetic.vocab_tokens() if not t.startswith("[")]
TEXT = "".join(CHARS[:5]) + "[MASK]" + "".join(CHARS[5:9])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    vocab = root / "vocab-src.txt"
    vocab.write_text("".join(f"{t}\t{i}\n" for i, t in enumerate(synthetic.vocab_tokens())))
    (root / "cfg.json").write_text(json.dumps({**TINY_CONFIG, "hidden_dropout_prob": 0.0}))
    config = load_config("cfg.json", root, len(synthetic.vocab_tokens()))
    paddle.seed(0)
    model = ErnieForPretraining(config)
    model.eval()
    export_model(model, config, vocab, root / "out")
    return root / "out", model


def eager_ids(task, text):
    ids = [task.vocab.cls_id, *task.tokenizer.encode(text, add_special_tokens=False).ids]
    return [*ids, task.vocab.sep_id]


def tensors(ids):
    src = paddle.to_tensor([ids], dtype="int64")
    return src, paddle.zeros_like(src), paddle.arange(len(ids), dtype="int64").unsqueeze(0)


def test_fill_mask_and_features_equal_the_eager_model(exported):
    root, model = exported
    manifest = serving.read_manifest(root)
    fill = TASKS[serving.FILL_MASK](root, manifest)
    ids = eager_ids(fill, TEXT)
    assert ids.count(fill.vocab.mask_id) == 1
    ((scores, top),) = fill.forward([ids])
    with paddle.no_grad():
        sequence, _ = model.ernie(*tensors(ids))
        probs = paddle.nn.functional.softmax(model.mlm_logits(sequence[0])).numpy()
    row = probs[ids.index(fill.vocab.mask_id)]
    expected = np.argsort(-row)[: manifest.max_top_k]
    np.testing.assert_allclose(scores[0], row[expected], atol=TOLERANCE)
    assert list(top[0][:3]) == list(expected[:3])
    features = TASKS[serving.FEATURE_EXTRACTION](root, manifest)
    (hidden,) = features.forward([ids])
    np.testing.assert_allclose(hidden, sequence[0].numpy(), atol=TOLERANCE)
    # Named inputs and outputs, as Paddle Inference reports them to any client.
    assert fill.predictor.input_names == ["src_ids", "sent_ids", "pos_ids", "mask_index"]
    assert fill.predictor.output_names == ["scores", "token_ids"]
    assert features.predictor.output_names == ["hidden_states"]


def test_text_classification_answers_labels(exported, tmp_path):
    root, model = exported
    classifier = ErnieClassifier(model.ernie, model.config, 2)
    classifier.eval()
    # As `ernie-sm evaluate` exports its fine-tuned classifier.
    vocab = (root / "vocab.txt").read_bytes()
    export_classifier(classifier, vocab, ("a", "b"), 64, tmp_path)
    task = TASKS[serving.TEXT_CLASSIFICATION](tmp_path, serving.read_manifest(tmp_path))
    sequences, answer = task.parse({"inputs": [CHARS[0] * 3], "parameters": {"top_k": 2}})
    (result,) = answer(task.forward(sequences))
    with paddle.no_grad():
        logits = classifier(*tensors(sequences[0]))
        expected = paddle.nn.functional.softmax(logits, -1).numpy()[0]
    assert [r["label"] for r in result] == [("a", "b")[i] for i in np.argsort(-expected)]
    np.testing.assert_allclose([r["score"] for r in result], np.sort(expected)[::-1], atol=1e-5)
    with pytest.raises(BadRequest, match="unknown parameters pooling"):
        task.parse({"inputs": "x", "parameters": {"pooling": "cls"}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path, log: Path, *options: str, task: str = "") -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [str(Path(sys.executable).parent / "ernie-sm"), "serve", "--model-dir", str(root)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--threads", "16", *options]
    env = {**os.environ, "ERNIE_SERVE_TASK": task}
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return process, f"http://127.0.0.1:{port}"


def call(url: str, path: str, body: bytes | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url + path, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_ready(url: str, process: subprocess.Popen) -> list[int]:
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            seen.append(call(url, "/ping")[0])
        except (ConnectionError, urllib.error.URLError):
            time.sleep(0.05)
            continue
        if seen[-1] == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"not ready: {seen}")


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    root, _ = exported
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process, url = start(root, log, "--max-delay-ms", "100")
    pings = wait_ready(url, process)
    yield url, log, pings
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=40) == 0


def post(url: str, body: object) -> tuple[int, object]:
    return call(url, "/invocations", json.dumps(body, ensure_ascii=False).encode())


def test_ping_is_503_until_the_model_has_answered_a_warm_up(server):
    _, log, pings = server
    assert pings[0] == 503 and pings[-1] == 200, pings
    assert "serving fill-mask" in log.read_text()


def test_fill_mask_answers_the_eager_top_k(server, exported):
    url, _, _ = server
    root, _ = exported
    task = TASKS[serving.FILL_MASK](root, serving.read_manifest(root))
    sequences, answer = task.parse({"inputs": TEXT, "parameters": {"top_k": 3}})
    expected = answer(task.forward(sequences))
    status, result = post(url, {"inputs": TEXT, "parameters": {"top_k": 3}})
    assert status == 200
    assert [r["token"] for r in result] == [r["token"] for r in expected]
    assert set(result[0]) == {"score", "token", "token_str", "sequence"}
    status, two = post(url, {"inputs": [TEXT, TEXT.replace(CHARS[0], "[MASK]")]})
    assert status == 200 and len(two) == 2 and len(two[0]) == 5 and len(two[1]) == 2


def test_feature_extraction_answers_the_eager_cls_and_mean(exported, tmp_path):
    root, model = exported
    process, url = start(root, tmp_path / "serve.log", task=serving.FEATURE_EXTRACTION)
    try:
        wait_ready(url, process)
        task = TASKS[serving.FEATURE_EXTRACTION](root, serving.read_manifest(root))
        ids = eager_ids(task, TEXT)
        with paddle.no_grad():
            sequence = model.ernie(*tensors(ids))[0][0].numpy()
        mean = sequence.mean(0)
        for parameters, vector in (
            ({"pooling": "cls"}, sequence[0]),
            ({"pooling": "mean"}, mean),
            ({"pooling": "mean", "normalize": True}, mean / np.linalg.norm(mean)),
        ):
            status, answer = post(url, {"inputs": [TEXT], "parameters": parameters})
            assert status == 200
            np.testing.assert_allclose(answer[0], vector, atol=TOLERANCE)
        status, answer = post(url, {"inputs": TEXT, "parameters": {"top_k": 3}})
        assert (
            status == 400 and "unknown parameters top_k for feature-extraction" in answer["error"]
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0


def test_concurrent_requests_are_batched_and_answered(server):
    url, log, _ = server
    _, alone = post(url, {"inputs": TEXT})
    results: list = [None] * 8
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, post(url, {"inputs": TEXT})))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(status == 200 for status, _ in results)
    for _, answer in results:
        np.testing.assert_allclose(
            [r["score"] for r in answer], [r["score"] for r in alone], atol=1e-5
        )
    batched = [
        int(line.split(" sequences of ")[1].split()[0])
        for line in log.read_text().splitlines()
        if " sequences of " in line
    ]
    assert max(batched) > 1


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (json.dumps({"inputs": 3}).encode(), 400, "inputs must be a string"),
        (json.dumps({"inputs": "no mask here"}).encode(), 400, "holds no [MASK]"),
        (
            json.dumps({"inputs": TEXT, "parameters": {"top_k": 11}}).encode(),
            400,
            "over this model's maximum 10",
        ),
        (json.dumps({"inputs": CHARS[0] * 70 + "[MASK]"}).encode(), 400, "over the model's 62"),
        (json.dumps({"inputs": TEXT, "task": "x"}).encode(), 400, "unknown members task"),
    ],
)
def test_a_bad_request_gets_a_4xx_naming_its_fault(server, body, status, reason):
    url, _, _ = server
    got, answer = call(url, "/invocations", body)
    assert got == status and reason in answer["error"], answer


def test_a_body_over_6_mb_is_413_before_it_is_read(server):
    url, _, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 6291457\r\n\r\n")
        head = conn.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413") and "over 6291456 bytes" in head


def test_truncation_is_a_parameter(server):
    url, _, _ = server
    status, _ = post(url, {"inputs": "[MASK]" + CHARS[0] * 70, "parameters": {"truncation": True}})
    assert status == 200


def test_sigterm_answers_the_request_in_flight_then_exits_0(exported, tmp_path):
    root, _ = exported
    process, url = start(root, tmp_path / "serve.log", "--max-delay-ms", "1500")
    wait_ready(url, process)
    answers = []
    thread = threading.Thread(target=lambda: answers.append(post(url, {"inputs": TEXT})))
    thread.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert answers and answers[0][0] == 200
    assert process.wait(timeout=40) == 0


def test_a_task_the_model_does_not_serve_stops_the_server_naming_those_it_does(exported, tmp_path):
    root, _ = exported
    process, _ = start(root, tmp_path / "serve.log", task=serving.TEXT_CLASSIFICATION)
    assert process.wait(timeout=60) == 1
    assert "the model serves fill-mask, feature-extraction" in (tmp_path / "serve.log").read_text()
