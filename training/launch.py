"""One trainer process per GPU on every host, started and stopped by the entrypoint itself.

`paddle.distributed.launch` could start them, but on SIGTERM it kills its trainers
within a second, before they can checkpoint, while SageMaker allows 120 s. So the
entrypoint starts the trainers with the variables `paddle.distributed` reads,
forwards SIGTERM to them, waits, and reports the first failure.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

TRAINER_ID_ENV = "PADDLE_TRAINER_ID"  # set in a trainer, so it does not launch again
BASE_PORT = 6170
STOPPED = 128 + signal.SIGTERM
FAILED = 1  # what a trainer returns after writing its reason to the failure file
PEER_LOST = "lost contact with"  # in a reason: a reaction to a peer's end, not a cause


def is_trainer() -> bool:
    return TRAINER_ID_ENV in os.environ


def trainer_environments(
    hosts: tuple[str, ...], current_host: str, per_host: int, use_gpu: bool
) -> list[dict[str, str]]:
    """The variables of each trainer on this host: ranks are host-major, one port per trainer."""
    # One host talks to itself over loopback: its SageMaker name may not resolve locally.
    addresses = ["127.0.0.1"] if len(hosts) == 1 else hosts
    endpoints = [f"{host}:{BASE_PORT + i}" for host in addresses for i in range(per_host)]
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
        subprocess.Popen([sys.executable, "-m", "ernie_sm.cli", "train"], env={**os.environ, **env})
        for env in envs
    ]

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
    failed = [i for i in ended if _status(trainers[i].returncode) not in (0, STOPPED)]
    if not failed:
        return max(_status(t.returncode) for t in trainers), None  # 0, or 143 when stopped
    first = _cause(failed, [_written(output_dir, envs[i][TRAINER_ID_ENV]) for i in failed])
    return FAILED, _reason(envs[first][TRAINER_ID_ENV], trainers[first].returncode, output_dir)


def _cause(failed: list[int], reasons: list[str | None]) -> int:
    """Of the failed trainers (in the order their ends were seen) and their written reasons,
    the one that failed first: one with a reason of its own (a peer's abort on the
    connection it closed may be seen before it); else one that ended without a reason
    (killed); else the first, which lost contact with a peer on another host."""
    own = [i for i, r in zip(failed, reasons, strict=True) if r and PEER_LOST not in r]
    silent = [i for i, r in zip(failed, reasons, strict=True) if r is None]
    return (own or silent or failed)[0]


def peer_lost(crash: str) -> str | None:
    """A collective's failure (gloo names the peer, `pair_rank = N`) as a reason naming the
    peer that stopped answering, with its endpoint; None for any other crash."""
    if not is_trainer() or not re.search(r"gloo|nccl|pair_rank", crash, re.IGNORECASE):
        return None
    match = re.search(r"pair_rank = (\d+)", crash)
    endpoints = os.environ.get("PADDLE_TRAINER_ENDPOINTS", "").split(",")
    if match and int(match.group(1)) < len(endpoints):
        peer = f"trainer {match.group(1)} ({endpoints[int(match.group(1))]})"
    else:
        peer = "a peer trainer"
    return f"trainer {os.environ[TRAINER_ID_ENV]} {PEER_LOST} {peer}: {crash}"


def _written(output_dir: Path, rank: str) -> str | None:
    file = failure_dir(output_dir, rank) / "failure"
    return file.read_text(encoding="utf-8", errors="replace").strip() if file.is_file() else None


def _reason(rank: str, returncode: int, output_dir: Path) -> str:
    written = _written(output_dir, rank)
    if written is not None:
        return written if written.startswith(f"trainer {rank} ") else f"trainer {rank}: {written}"
    status = _status(returncode)
    how = f"ended with status {status}"
    if status > 128:
        name = signal.Signals(status - 128).name
        how = f"was killed by {name} (status {status})"
        if name == "SIGKILL":
            how += ", as the kernel's out-of-memory killer ends a process"
    return f"trainer {rank} {how} without leaving a reason; the other trainers were stopped"


def _status(returncode: int) -> int:
    """A trainer killed by a signal reads -N here; report it the way a shell would."""
    return 128 - returncode if returncode < 0 else returncode
