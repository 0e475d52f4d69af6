"""Hosts of one job tell each other why they failed, so that every host reports the cause.

A trainer that loses a peer on another host knows only that the peer stopped answering;
the peer's own host knows why (its reason, or the signal that killed it). Each host's
entrypoint listens for the others' reasons on REPORT_PORT and sends its own when it is
a cause; a host whose failure is only a reaction waits a little for the cause and
reports both, so SageMaker's FailureReason names the cause whichever host it reads.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Sequence

log = logging.getLogger(__name__)

REPORT_PORT = 6169  # beside the trainers' ports (6170 and up)
WAIT_SECONDS = 15.0  # how long a reaction waits for the cause from another host
MAX_REPORT = 4096


class HostReports:
    def __init__(self, hosts: Sequence[str], current_host: str, port: int = REPORT_PORT) -> None:
        self.current, self.port = current_host, port
        self.others = [host for host in hosts if host != current_host]
        self.received: queue.Queue[str] = queue.Queue()
        self.server = socket.create_server(("", port))
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            with connection:
                connection.settimeout(5)
                with contextlib.suppress(OSError):
                    data = connection.recv(MAX_REPORT)
                    self.received.put(data.decode("utf-8", errors="replace"))

    def tell(self, reason: str) -> None:
        """Send this host's reason to the others (best effort: a host may be gone)."""
        report = f"{self.current}: {reason}"[:MAX_REPORT].encode()
        for host in self.others:
            try:
                with socket.create_connection((host, self.port), timeout=5) as connection:
                    connection.sendall(report)
            except OSError as exc:
                log.warning("could not tell %s why this host failed: %s", host, exc)

    def cause(self, wait: float = WAIT_SECONDS) -> str | None:
        """A reason another host sent, waiting up to `wait` seconds for one."""
        try:
            return self.received.get(timeout=wait)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.server.close()
