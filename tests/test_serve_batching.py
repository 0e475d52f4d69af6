"""serving/batching.py and the HTTP layer's error paths, in-process: concurrent requests share
batches padded to their longest member, a full queue is refused, and an internal error is a
generic 500 whose traceback goes to the log only."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import falcon.testing
import pytest
from ernie_sm.serving.batching import Batcher, QueueFull
from ernie_sm.serving.server import Invocations, Ping, _internal_error, settings_from

from ernie_sm.cli import build_parser


def test_concurrent_requests_share_batches_sorted_by_length():
    seen: list[list[int]] = []

    def forward(sequences):
        seen.append([len(s) for s in sequences])
        return [sum(s) for s in sequences]

    batcher = Batcher(forward, max_batch=8, max_delay=0.2, max_queue=16)
    results: dict[int, list] = {}
    requests = {i: [[1] * (i + 1), [2] * (8 - i)] for i in range(4)}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.submit(requests[i])))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == {i: [i + 1, 2 * (8 - i)] for i in range(4)}
    assert batcher.batches == 1 and seen == [sorted(seen[0])] and len(seen[0]) == 8
    # A request of more sequences than a batch: batches of neighbours in length.
    small = Batcher(forward, max_batch=4, max_delay=0, max_queue=16)
    assert small.submit([[1] * n for n in (9, 1, 5, 2, 7, 3)]) == [9, 1, 5, 2, 7, 3]
    assert seen[1:] == [[1, 2, 3, 5], [7, 9]]


def test_a_full_queue_is_refused_naming_its_size():
    release = threading.Event()
    batcher = Batcher(
        lambda s: [release.wait(10) for _ in s], max_batch=1, max_delay=0, max_queue=1
    )
    first = threading.Thread(target=batcher.submit, args=([[1]],))
    first.start()
    time.sleep(0.2)  # the batcher holds the first, blocked in forward
    second = threading.Thread(target=batcher.submit, args=([[1]],))
    second.start()
    time.sleep(0.2)  # the second waits in the queue, which is now full
    with pytest.raises(QueueFull, match=r"queue is full \(1 requests\)"):
        batcher.submit([[1]])
    release.set()
    first.join(timeout=10)
    second.join(timeout=10)


def test_an_error_inside_is_a_generic_500_and_the_traceback_is_logged(caplog):
    def parse(body):
        raise RuntimeError("secret detail")

    ready = threading.Event()
    ready.set()
    model = SimpleNamespace(ready=ready, failure=None, task=SimpleNamespace(parse=parse))
    app = falcon.App()
    app.add_route("/invocations", Invocations(model))
    app.add_route("/ping", Ping(model))
    app.add_error_handler(Exception, _internal_error)
    client = falcon.testing.TestClient(app)
    answer = client.simulate_post("/invocations", body=b'{"inputs": "x"}')
    assert answer.status_code == 500
    assert "secret" not in answer.text and "Traceback" not in answer.text
    assert "secret detail" in caplog.text
    assert client.simulate_get("/ping").status_code == 200
    ready.clear()
    assert client.simulate_get("/ping").json == {"status": "loading"}
    assert client.simulate_post("/invocations", body=b"{}").status_code == 503


def test_port_and_model_dir_follow_sagemaker_and_options_override(monkeypatch, tmp_path):
    monkeypatch.delenv("SAGEMAKER_BIND_TO_PORT", raising=False)
    monkeypatch.delenv("SAGEMAKER_BASE_DIR", raising=False)
    default = settings_from(build_parser().parse_args(["serve"]))
    assert (default.port, str(default.model_dir), default.host) == (
        8080,
        "/opt/ml/model",
        "0.0.0.0",
    )
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "9090")
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    moved = settings_from(build_parser().parse_args(["serve"]))
    assert (moved.port, moved.model_dir) == (9090, tmp_path / "model")
    given = settings_from(
        build_parser().parse_args(["serve", "--port", "7000", "--model-dir", "m"])
    )
    assert (given.port, str(given.model_dir)) == (7000, "m")
    assert given.threads >= 8 and given.math_threads >= 1 and given.workers >= 1
