"""Dynamic batching: concurrent requests' sequences run through the model together.

A bounded queue of requests (full: QueueFull, which the server answers 503); one thread
takes the first waiting request, then more until `max_batch` sequences or `max_delay`
seconds, sorts their sequences by length and runs them `max_batch` at a time, each batch
padded to its longest member (serving/tasks.py), and hands each request its outputs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    pass


@dataclass
class _Request:
    sequences: list[list[int]]
    done: threading.Event = field(default_factory=threading.Event)
    outputs: list[Any] = field(default_factory=list)
    error: BaseException | None = None


class Batcher:
    def __init__(
        self,
        forward: Callable[[list[list[int]]], list[Any]],
        max_batch: int = 32,
        max_delay: float = 0.005,
        max_queue: int = 256,
    ) -> None:
        self.forward = forward
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.queue: queue.Queue[_Request] = queue.Queue(max_queue)
        self.batches = 0  # batches run, for the log and tests
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def submit(self, sequences: list[list[int]]) -> list[Any]:
        """The outputs of each sequence, once a batch has run them."""
        request = _Request(sequences)
        try:
            self.queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(
                f"the server's queue is full ({self.queue.maxsize} requests): retry later"
            ) from None
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.outputs

    def _loop(self) -> None:
        while True:
            requests = [self.queue.get()]
            count = len(requests[0].sequences)
            deadline = time.monotonic() + self.max_delay
            while count < self.max_batch and (wait := deadline - time.monotonic()) > 0:
                try:
                    requests.append(self.queue.get(timeout=wait))
                except queue.Empty:
                    break
                count += len(requests[-1].sequences)
            self._run(requests)

    def _run(self, requests: list[_Request]) -> None:
        flat = [(r, i, s) for r in requests for i, s in enumerate(r.sequences)]
        flat.sort(key=lambda item: len(item[2]))
        try:
            outputs: list[Any] = []
            for start in range(0, len(flat), self.max_batch):
                chunk = [s for _, _, s in flat[start : start + self.max_batch]]
                outputs += self.forward(chunk)
                self.batches += 1
                log.info(
                    "batch %d: %d sequences of %d requests, padded to %d tokens",
                    self.batches,
                    len(chunk),
                    len({id(r) for r, _, _ in flat[start : start + self.max_batch]}),
                    len(chunk[-1]),
                )
            for request in requests:
                request.outputs = [None] * len(request.sequences)
            for (request, i, _), output in zip(flat, outputs, strict=True):
                request.outputs[i] = output
        except Exception as exc:  # each request of the batch fails with it (500, logged)
            for request in requests:
                request.error = exc
        for request in requests:
            request.done.set()
