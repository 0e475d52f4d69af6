"""One trainer process per GPU on every host, started and stopped by the entrypoint itself.

`paddle.distributed.launch` could start them, but on SIGTERM it kills its trainers
within a second, before they can checkpoint, while SageMaker allows 120 s. So the
entrypoint starts the trainers with the variables `paddle.distributed` reads,
forwards SIGTERM to them, waits, and reports the first failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

TRAINER_ID_ENV = "PADDLE_TRAINER_ID"  # set in a trainer, so it does not launch again
BASE_PORT = 6170
STOPPED = 128 + signal.SIGTERM
FAILED = 1  # what a trainer returns after writing its reason to the failure file
PEER_LOST = "lost contact with"  # in a reason: a reaction to a peer's end, not a cause


def is_trainer() -> bool:
    return TRAINER_ID_ENV in os.environ


class PortError(Exception):
    """A port this job's trainers need is another process's; the message names it."""


def trainer_ports(hosts: tuple[str, ...], per_host: int) -> list[int]:
    """The port of each trainer on a host (the first, trainer 0's on the first host, is
    the job's store, which every trainer joins), each free on this host.

    Several hosts agree on them without talking: BASE_PORT onwards, checked free here
    (PortError naming one that is not). One host takes ports the system finds free, so
    two jobs on one machine never meet: with fixed ones the second's trainer 0 could not
    listen on the store's port, and its others joined the first job's store.
    """
    if len(hosts) > 1:
        ports = [BASE_PORT + i for i in range(per_host)]
        for i, port in enumerate(ports):
            _check_free(port, i)
        return ports
    with contextlib.ExitStack() as held:  # held at once, so no two are the same
        probes = [held.enter_context(socket.socket()) for _ in range(per_host)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def _check_free(port: int, local: int) -> None:
    """PortError unless this host's trainer `local` can listen on `port`."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the store does
        try:
            probe.bind(("", port))
            probe.listen()
        except OSError as exc:
            role = "and the job's store " if local == 0 else ""
            raise PortError(
                f"port {port}, which trainer {local} of each host {role}listens on, is taken "
                f"on this host ({exc.strerror}): stop the process that holds it"
            ) from None


def trainer_environments(
    hosts: tuple[str, ...],
    current_host: str,
    per_host: int,
    use_gpu: bool,
    ports: list[int] | None = None,
) -> list[dict[str, str]]:
    """The variables of each trainer on this host: ranks are host-major, one port per
    trainer, `ports` those of a host's trainers (BASE_PORT onwards by default)."""
    # One host talks to itself over loopback: its SageMaker name may not resolve locally.
    addresses = ["127.0.0.1"] if len(hosts) == 1 else hosts
    ports = ports or [BASE_PORT + i for i in range(per_host)]
    endpoints = [f"{host}:{port}" for host in addresses for port in ports]
    first_rank = hosts.index(current_host) * per_host
    envs = []
    for local in range(per_host):
        rank = first_rank + local
        env = {
            TRAINER_ID_ENV: str(rank),
            "PADDLE_TRAINERS_NUM": str(len(endpoints)),
            "PADDLE_TRAINER_ENDPOINTS": ",".join(endpoints),
            "PADDLE_CURRENT_ENDPOINT": endpoints[rank],
            "PADDLE_RANK_IN_NODE": str(local),
            "FLAGS_selected_gpus": str(local),
        }
        if not use_gpu:
            env["PADDLE_DISTRI_BACKEND"] = "gloo"
        envs.append(env)
    return envs


def failure_dir(output_dir: Path, rank: str) -> Path:
    """Where trainer `rank` leaves its reason; the entrypoint makes the job's of the first."""
    return output_dir / "trainers" / f"rank-{rank}"


def run_trainers(envs: list[dict[str, str]], output_dir: Path) -> tuple[int, str | None]:
    """Run `ernie-sm train` once per environment; returns (0, None), (143, None) when
    stopped, or (1, the reason of the trainer that failed first)."""
    trainers = [
        subprocess.Popen(
            [sys.executable, "-m", "ernie_sm.cli", "train"],
            env={**os.environ, **env},
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        for env in envs
    ]
    tails = [_Tail(trainer.stderr) for trainer in trainers]

    def forward(signum: int, frame: object) -> None:
        for trainer in trainers:
            if trainer.poll() is None:
                trainer.send_signal(signum)

    ended: list[int] = []  # trainers, in the order their ends were seen

    def see_ends(*_: object) -> None:
        for i, trainer in enumerate(trainers):
            if i not in ended and trainer.poll() is not None:
                ended.append(i)

    signal.signal(signal.SIGTERM, forward)
    # Seen at once, a trainer's end comes before its peers' reactions to it (an abort on a
    # closed connection, a collective timing out), so the first failure is the cause.
    signal.signal(signal.SIGCHLD, see_ends)
    log.info("started %d trainer(s) on this host", len(trainers))
    stopping = False
    while len(ended) < len(trainers):
        see_ends()
        failed = [i for i in ended if _status(trainers[i].returncode) not in (0, STOPPED)]
        if failed and not stopping:
            # The others would wait on its gradients until a collective times out.
            log.error("trainer %s failed: stopping the others", envs[failed[0]][TRAINER_ID_ENV])
            forward(signal.SIGKILL, None)
            stopping = True
        time.sleep(0.2)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for tail in tails:
        tail.thread.join(timeout=5)
    failed = [i for i in ended if _status(trainers[i].returncode) not in (0, STOPPED)]
    if not failed:
        return max(_status(t.returncode) for t in trainers), None  # 0, or 143 when stopped
    reasons = [
        _written(output_dir, envs[i][TRAINER_ID_ENV]) or _aborted(envs[i], tails[i].text())
        for i in failed
    ]
    first = _cause(failed, reasons)
    reason = reasons[failed.index(first)]
    return FAILED, reason or _ended(envs[first][TRAINER_ID_ENV], trainers[first].returncode)


class _Tail:
    """Passes a trainer's stderr on and keeps its last lines: a trainer that aborts inside
    a collective (gloo's C++ exception) says there, and only there, which peer it lost."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: deque[str] = deque(maxlen=40)
        self.thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        self.thread.start()

    def _copy(self, stream: IO[str]) -> None:
        for line in stream:
            sys.stderr.write(line)
            sys.stderr.flush()
            self.lines.append(line.rstrip())

    def text(self) -> str:
        return "\n".join(self.lines)


def _cause(failed: list[int], reasons: list[str | None]) -> int:
    """Of the failed trainers (in the order their ends were seen) and their reasons, the
    one that failed first: one with a reason of its own (a peer's abort on the connection
    it closed may be seen before it); else one that ended without a reason (killed); else
    the first, which lost contact with a peer on another host."""
    own = [i for i, r in zip(failed, reasons, strict=True) if r and PEER_LOST not in r]
    silent = [i for i, r in zip(failed, reasons, strict=True) if r is None]
    return (own or silent or failed)[0]


def peer_lost(crash: str, env: Mapping[str, str] = os.environ) -> str | None:
    """A collective's failure as a reason naming the peer that stopped answering: gloo names
    its rank (`pair_rank = N`) or its address, which the job's endpoints turn into a host.
    None for any other crash. `env` is the trainer's environment."""
    if TRAINER_ID_ENV not in env or not re.search(r"gloo|nccl|pair_rank", crash, re.IGNORECASE):
        return None
    endpoints = env.get("PADDLE_TRAINER_ENDPOINTS", "").split(",")
    rank = re.search(r"pair_rank = (\d+)", crash)
    address = re.search(r"\[(\d+\.\d+\.\d+\.\d+)\]", crash)
    if rank and int(rank.group(1)) < len(endpoints):
        peer = f"trainer {rank.group(1)} ({endpoints[int(rank.group(1))]})"
    elif address and (host := _host_of(address.group(1), endpoints)):
        peer = f"a trainer on {host} ({address.group(1)})"
    else:
        peer = "a peer trainer"
    return f"trainer {env[TRAINER_ID_ENV]} {PEER_LOST} {peer}: {crash}"


def _aborted(env: Mapping[str, str], stderr: str) -> str | None:
    """The reason of a trainer that died without writing one, from the collective's error
    it printed (the last line naming gloo or NCCL), if any."""
    lines = [line for line in stderr.splitlines() if re.search(r"gloo|nccl", line, re.I)]
    return peer_lost(lines[-1].strip(), env) if lines else None


def _host_of(address: str, endpoints: list[str]) -> str | None:
    for host in dict.fromkeys(endpoint.rsplit(":", 1)[0] for endpoint in endpoints):
        with contextlib.suppress(OSError):
            if socket.gethostbyname(host) == address:
                return host
    return None


def _written(output_dir: Path, rank: str) -> str | None:
    """What trainer `rank` wrote as its reason, prefixed with who it is."""
    file = failure_dir(output_dir, rank) / "failure"
    if not file.is_file():
        return None
    text = file.read_text(encoding="utf-8", errors="replace").strip()
    return text if text.startswith(f"trainer {rank} ") else f"trainer {rank}: {text}"


def _ended(rank: str, returncode: int) -> str:
    """The reason of a trainer that ended without giving one."""
    status = _status(returncode)
    how = f"ended with status {status}"
    if status > 128:
        name = signal.Signals(status - 128).name
        how = f"was killed by {name} (status {status}"
        how += (
            "; the kernel's out-of-memory killer ends processes so)" if name == "SIGKILL" else ")"
        )
    return f"trainer {rank} {how} without leaving a reason; the other trainers were stopped"


def _status(returncode: int) -> int:
    """A trainer killed by a signal reads -N here; report it the way a shell would."""
    return 128 - returncode if returncode < 0 else returncode
