"""`ernie-sm serve`: GET /ping and POST /invocations under SageMaker's hosting contract.

gunicorn (gthread workers) runs in-process, so `ernie-sm` stays PID 1 and its SIGTERM
drains in-flight requests within graceful_timeout; each worker loads the model in the
background (connections are accepted at once) and /ping is 503 until the model has
answered a warm-up request. Falcon routes. docs/serving.md has the contract and settings.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon
from ernie_sm.contract import serving
from ernie_sm.contract.errors import ConfigError
from ernie_sm.contract.serving import read_manifest, served_task
from ernie_sm.training.layout import BASE_DIR_ENV
from gunicorn.app.base import BaseApplication

log = logging.getLogger(__name__)

MODEL_DIR = "/opt/ml/model"
PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
MAX_BODY = 6 * 1024 * 1024  # InvokeEndpoint's request limit
# SageMaker sends SIGKILL 30 s after SIGTERM when it stops an endpoint's container.
GRACEFUL_TIMEOUT = 25


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    threads: int = 8
    math_threads: int = 1
    max_batch: int = 32
    max_delay_ms: float = 5.0
    max_queue: int = 256


def default_model_dir() -> Path:
    base = os.environ.get(BASE_DIR_ENV)
    return Path(base, "model") if base else Path(MODEL_DIR)


def default_port() -> int:
    return int(os.environ.get(PORT_ENV) or 8080)


def gpu_count() -> int:
    """GPUs the container sees, without initialising CUDA before gunicorn forks."""
    return len([p for p in Path("/dev").glob("nvidia[0-9]*")])


class Model:
    """The worker's task and batcher, loaded and warmed up on a thread of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = threading.Event()
        self.failure: str | None = None
        self.task: Any = None
        self.batcher: Any = None
        threading.Thread(target=self._load, name="load-model", daemon=True).start()

    def _load(self) -> None:
        try:
            from ernie_sm.serving.batching import Batcher
            from ernie_sm.serving.tasks import TASKS

            root = self.settings.model_dir
            manifest = read_manifest(root)
            name = served_task(manifest, os.environ.get(serving.TASK_ENV))
            self.task = TASKS[name](root, manifest, self.settings.math_threads)
            s = self.settings
            self.batcher = Batcher(
                self.task.forward, s.max_batch, s.max_delay_ms / 1000, s.max_queue
            )
            self.batcher.submit([self._warm_up_sequence()])
            log.info("serving %s from %s", name, root)
            self.ready.set()
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            log.exception("the model did not load")

    def _warm_up_sequence(self) -> list[int]:
        vocab = self.task.vocab
        return [vocab.cls_id, vocab.mask_id, vocab.sep_id]


def _json(resp: falcon.Response, status: int, body: Any) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps(body, ensure_ascii=False)


class Ping:
    def __init__(self, model: Model) -> None:
        self.model = model

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self.model.ready.is_set():
            _json(resp, 200, {"status": "ready"})
        else:
            _json(resp, 503, {"status": "failed" if self.model.failure else "loading"})


class Invocations:
    def __init__(self, model: Model) -> None:
        self.model = model

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        from ernie_sm.serving.batching import QueueFull
        from ernie_sm.serving.tasks import BadRequest

        if not self.model.ready.is_set():
            return _json(resp, 503, {"error": "the model is not loaded yet"})
        if (req.content_length or 0) > MAX_BODY:
            return _json(resp, 413, {"error": f"the body is over {MAX_BODY} bytes"})
        raw = req.bounded_stream.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _json(resp, 413, {"error": f"the body is over {MAX_BODY} bytes"})
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return _json(resp, 400, {"error": f"the body is not JSON: {exc}"})
        try:
            sequences, answer = self.model.task.parse(body)
            outputs = self.model.batcher.submit(sequences)
        except BadRequest as exc:
            return _json(resp, 400, {"error": str(exc)})
        except QueueFull as exc:
            return _json(resp, 503, {"error": str(exc)})
        _json(resp, 200, answer(outputs))


def _internal_error(
    req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any
) -> None:
    if isinstance(exc, falcon.HTTPError):
        _json(resp, exc.status_code, {"error": exc.title})
        return
    log.exception("error answering %s %s", req.method, req.path)
    _json(resp, 500, {"error": "internal server error (the server's log has the details)"})


def _import_paddle_keeping_signals() -> None:
    """Paddle installs its own SIGTERM handler (which aborts the process) when imported:
    should a worker import it first (serve() imports it before the fork), give gunicorn's
    handlers back, so that SIGTERM drains the requests in flight."""
    kept = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)}
    import paddle

    paddle.disable_signal_handler()
    for number, handler in kept.items():
        signal.signal(number, handler)


def make_app(settings: Settings) -> falcon.App:
    _import_paddle_keeping_signals()
    model = Model(settings)
    app = falcon.App()
    app.add_route("/ping", Ping(model))
    app.add_route("/invocations", Invocations(model))
    app.add_error_handler(Exception, _internal_error)
    return app


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        gpus = gpu_count()
        options = {
            "bind": f"{s.host}:{s.port}",
            "workers": s.workers,
            "worker_class": "gthread",
            "threads": s.threads,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "timeout": 120,
            "keepalive": 75,
            "loglevel": "info",
            "errorlog": "-",
            "accesslog": None,
            "proc_name": "ernie-sm-serve",
        }
        for key, value in options.items():
            self.cfg.set(key, value)
        if gpus:
            self.cfg.set("post_fork", lambda server, worker: _pin_gpu(worker, gpus))

    def load(self) -> falcon.App:
        return make_app(self.settings)


def _pin_gpu(worker: Any, gpus: int) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = str((worker.age - 1) % gpus)


def serve(settings: Settings) -> int:
    """Run the server until SIGTERM (exit 0); a model folder without a serving manifest, or
    a task it does not serve, stops it before it binds (exit 1, the reason on stderr)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        served_task(read_manifest(settings.model_dir), os.environ.get(serving.TASK_ENV))
    except ConfigError as exc:
        log.error("ernie-sm serve: %s", exc)
        return 1
    # Paddle's import takes seconds: done once here, before gunicorn forks its workers (no
    # CUDA context yet), so a worker answers /ping at once; gunicorn sets its own signal
    # handlers after this, in the master and in each worker.
    import paddle

    paddle.disable_signal_handler()
    log.info("ernie-sm serve on %s:%d, model %s", settings.host, settings.port, settings.model_dir)
    _Gunicorn(settings).run()
    return 0


def settings_from(args: Any) -> Settings:
    """Settings of `ernie-sm serve`'s options, sized to the instance where they are 0."""
    cores = os.cpu_count() or 1
    gpus = gpu_count()
    workers = args.workers or max(gpus, 1)
    return Settings(
        model_dir=Path(args.model_dir) if args.model_dir else default_model_dir(),
        host=args.host,
        port=args.port or default_port(),
        workers=workers,
        threads=args.threads or max(8, 4 * cores),
        math_threads=max(1, cores // workers),
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
    )
