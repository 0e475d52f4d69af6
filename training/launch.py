"""One trainer process per GPU on every host, started and stopped by the entrypoint itself.

`paddle.distributed.launch` could start them, but on SIGTERM it kills its trainers
within a second, before they can checkpoint, while SageMaker allows 120 s. So the
entrypoint starts the trainers with the variables `paddle.distributed` reads,
forwards SIGTERM to them, waits, and reports the first failure.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger(__name__)

TRAINER_ID_ENV = "PADDLE_TRAINER_ID"  # set in a trainer, so it does not launch again
BASE_PORT = 6170
STOPPED = 128 + signal.SIGTERM
FAILED = 1  # what a trainer returns after writing its reason to the failure file


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


def run_trainers(envs: list[dict[str, str]]) -> int:
    """Run `ernie-sm train` once per environment; return 0, 143 if stopped, else the failure's code."""
    trainers = [
        subprocess.Popen([sys.executable, "-m", "training.cli", "train"], env={**os.environ, **env})
        for env in envs
    ]

    def forward(signum: int, frame: object) -> None:
        for trainer in trainers:
            if trainer.poll() is None:
                trainer.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    log.info("started %d trainer(s) on this host", len(trainers))
    killed = False
    while any(t.poll() is None for t in trainers):
        if _failures(trainers) and not killed:
            # The others would wait on its gradients until a collective times out.
            log.error("a trainer failed: stopping the others")
            forward(signal.SIGKILL, None)
            killed = True
        time.sleep(0.2)
    failures = _failures(trainers)
    if not failures:
        return max(_status(t.returncode) for t in trainers)  # 0, or 143 when stopped
    # A trainer that failed with a reason (status 1) is the cause; crashes follow from it.
    return FAILED if FAILED in failures else failures[0]


def _failures(trainers: list[subprocess.Popen]) -> list[int]:
    ended = (_status(t.returncode) for t in trainers if t.returncode is not None)
    return [code for code in ended if code not in (0, STOPPED)]


def _status(returncode: int) -> int:
    """A trainer killed by a signal reads -N here; report it the way a shell would."""
    return 128 - returncode if returncode < 0 else returncode
