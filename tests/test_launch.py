"""Data-parallel training with one trainer process per device, here two CPU trainers over gloo."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from ernie_sm.training import launch, layout
from ernie_sm.training.host_reports import HostReports

from tests.helpers import add_task_shards, make_job


def test_trainer_environments_rank_hosts_major():
    envs = launch.trainer_environments(("algo-1", "algo-2"), "algo-2", 2, use_gpu=True)
    assert [e["PADDLE_TRAINER_ID"] for e in envs] == ["2", "3"]
    assert [e["FLAGS_selected_gpus"] for e in envs] == ["0", "1"]
    assert envs[0]["PADDLE_TRAINER_ENDPOINTS"] == "algo-1:6170,algo-1:6171,algo-2:6170,algo-2:6171"
    assert envs[1]["PADDLE_CURRENT_ENDPOINT"] == "algo-2:6171"
    assert all(e["PADDLE_TRAINERS_NUM"] == "4" and "PADDLE_DISTRI_BACKEND" not in e for e in envs)
    single = launch.trainer_environments(("algo-1",), "algo-1", 2, use_gpu=False)
    assert single[1]["PADDLE_CURRENT_ENDPOINT"] == "127.0.0.1:6171"
    assert single[0]["PADDLE_DISTRI_BACKEND"] == "gloo"


def _listening(port: int) -> socket.socket | None:
    """A socket listening on `port` of every address, or None where it is taken already."""
    sock = socket.socket()
    try:
        sock.bind(("", port))
    except OSError:
        sock.close()
        return None
    sock.listen()
    sock.setblocking(False)
    return sock


def test_several_hosts_check_their_fixed_ports_and_name_a_taken_one(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(launch, "BASE_PORT", port - 1)
        with pytest.raises(launch.PortError, match=rf"port {port}, which trainer 1 of each host"):
            launch.trainer_ports(("algo-1", "algo-2"), 2)
        monkeypatch.setattr(launch, "BASE_PORT", port)
        with pytest.raises(launch.PortError, match=rf"port {port}, .* and the job's store .*taken"):
            launch.trainer_ports(("algo-1", "algo-2"), 2)
    assert launch.trainer_ports(("algo-1", "algo-2"), 2) == [port, port + 1]


def test_one_host_takes_free_ports_of_its_own():
    ports = launch.trainer_ports(("algo-1",), 3)
    assert len(set(ports)) == 3 and launch.BASE_PORT not in ports
    envs = launch.trainer_environments(("algo-1",), "algo-1", 3, False, ports)
    assert envs[2]["PADDLE_CURRENT_ENDPOINT"] == f"127.0.0.1:{ports[2]}"


def test_trainers_whose_default_ports_are_taken_train_and_join_no_other_store(tmp_path):
    # Another job's store (or anything) on the fixed ports: before, trainer 0 could not
    # listen there (SIGABRT) and trainer 1 joined what listened.
    others = [s for s in map(_listening, (launch.BASE_PORT, launch.BASE_PORT + 1)) if s]
    try:
        base = _job(tmp_path, num_train_steps="2", save_steps="100", validation_steps="100")
        proc = _start(base)
        out = proc.communicate(timeout=240)[0]
        assert proc.returncode == 0, out
        for other in others:
            with pytest.raises(BlockingIOError):
                other.accept()  # no trainer connected to it
    finally:
        for other in others:
            other.close()


def _start(base: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PADDLE_"))}
    env[layout.BASE_DIR_ENV] = str(base)
    return subprocess.Popen(
        [sys.executable, "-m", "ernie_sm.cli", "train"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _job(tmp_path: Path, **overrides: str) -> Path:
    return make_job(tmp_path, is_distributed="true", trainers_per_host="2", **overrides)


def test_two_trainers_train_one_model_and_only_rank_0_reports(tmp_path):
    base = _job(tmp_path, num_train_steps="6", save_steps="3", validation_steps="3")
    proc = _start(base)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out
    assert "training from step 0 of 6 on cpu (float32), 2 trainer(s)" in out
    assert [
        line.split("step=")[1].split()[0] for line in out.splitlines() if "[train]" in line
    ] == [str(s) for s in range(1, 7)]
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == [
        "step_000000003",
        "step_000000006",
    ]
    assert (base / "model" / "model.pdparams").is_file()


def test_two_trainers_train_an_ernie_2_model_whose_heads_sit_out_steps(tmp_path):
    # Each step trains one task's head: the others get no gradient on any trainer, which
    # data-parallel training must take (find_unused_parameters) rather than hang on.
    base = _job(
        tmp_path,
        num_train_steps="6",
        tasks="knowledge_masking,sentence_reordering,token_document_relation",
    )
    names = ["sentence_reordering", "token_document_relation"]
    add_task_shards(base / "input" / "data" / "train", "train_filelist", names, shards=2)
    add_task_shards(base / "input" / "data" / "valid", "valid_filelist", names, seed=50)
    proc = _start(base)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out
    trained = {line.split("task=")[1].split()[0] for line in out.splitlines() if "[task]" in line}
    assert trained == {"knowledge_masking", *names}
    assert (base / "model" / "model.pdparams").is_file()


def test_sigterm_reaches_every_trainer_and_they_stop_together(tmp_path):
    base = _job(tmp_path, num_train_steps="100000", save_steps="100000")
    proc = _start(base)
    try:
        for line in proc.stdout:
            if "[train] step=3 " in line:
                break
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 143, out
    assert len(list((base / "checkpoints").iterdir())) == 1
    assert not (base / "output" / "failure").exists()


def test_one_trainer_failing_fails_the_job_with_its_reason(tmp_path):
    base = _job(tmp_path, num_train_steps="100000")
    shard = base / "input" / "data" / "train" / "part-00001.gz"
    shard.write_bytes(gzip.compress(b"1 2;0 0;0 1;-1 -1;1\n")[:-6])  # truncated gzip
    proc = _start(base)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 1, out
    assert "part-00001.gz is not a readable gzip file" in (base / "output" / "failure").read_text()


def _trainer(proc: subprocess.Popen, rank: str) -> psutil.Process:
    for child in psutil.Process(proc.pid).children():
        if child.environ().get(launch.TRAINER_ID_ENV) == rank:
            return child
    raise AssertionError(f"no trainer {rank} under the entrypoint")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_killed_trainer_is_named_as_the_first_failure(tmp_path, rank):
    """Not the survivor's abort or collective timeout that follows from it."""
    base = _job(tmp_path, num_train_steps="100000", save_steps="100000")
    proc = _start(base)
    try:
        for line in proc.stdout:
            if "[train] step=2 " in line:
                break
        _trainer(proc, rank).kill()
        out = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    reason = (base / "output" / "failure").read_text()
    assert reason.startswith(f"trainer {rank} was killed by SIGKILL (status 137"), reason


def test_a_failed_trainers_own_reason_or_else_how_it_ended_is_reported(tmp_path):
    layout.write_failure(launch.failure_dir(tmp_path, "3"), "shard x.gz line 2: bad")
    assert launch._written(tmp_path, "3") == "trainer 3: shard x.gz line 2: bad"
    assert launch._written(tmp_path, "2") is None
    assert launch._ended("2", 7) == (
        "trainer 2 ended with status 7 without leaving a reason; the other trainers were stopped"
    )
    # One that aborted inside a collective said on stderr which peer it lost.
    env = {launch.TRAINER_ID_ENV: "0", "PADDLE_TRAINER_ENDPOINTS": "algo-1:6170,algo-2:6170"}
    stderr = (
        "I1125 12:00:00 tcp_utils.cc:132] Successfully connected to algo-1:6170\n"
        "terminate called after throwing an instance of 'gloo::IoException'\n"
        "  what():  [/paddle/third_party/gloo/gloo/transport/tcp/pair.cc:584] TIMEOUT "
        "self_rank = 0 pair_rank = 1 peer_str = [10.0.0.2]:5026\n"
    )
    assert launch._aborted(env, stderr).startswith(
        "trainer 0 lost contact with trainer 1 (algo-2:6170): what():  [/paddle/"
    )
    assert launch._aborted(env, "Segmentation fault") is None


LOSS = re.compile(r"\[train\] step=(\d+) .*loss: ([0-9.]+)")


def _shorten_second_shard(base: Path, lines: int = 40) -> None:
    """Unequal shards: the ranks then stand at different places in their data."""
    shard = base / "input" / "data" / "train" / "part-00001.gz"
    kept = gzip.decompress(shard.read_bytes()).decode().splitlines()[:lines]
    shard.write_bytes(gzip.compress(("\n".join(kept) + "\n").encode()))


def _run(base: Path, **hyperparameters: str) -> str:
    config = base / "input" / "config" / "hyperparameters.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **hyperparameters}))
    proc = _start(base)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, out
    return out


def test_two_trainers_resume_exactly_where_each_of_them_stood(tmp_path):
    # A constant rate (no warm-up), so a job asked for 7 steps trains as the first 7 of 12.
    settings = dict(warmup_steps="0", save_steps="100000", validation_steps="4")
    whole, part = _job(tmp_path / "whole", **settings), _job(tmp_path / "part", **settings)
    for base in (whole, part):
        _shorten_second_shard(base)
    expected = dict(LOSS.findall(_run(whole, num_train_steps="12")))
    _run(part, num_train_steps="7")
    (checkpoint,) = (part / "checkpoints").iterdir()
    positions = json.loads((checkpoint / "meta.json").read_text())["positions"]
    assert len(positions) == 2 and positions[0] != positions[1]  # what makes it a test
    resumed = _run(part, num_train_steps="12")
    assert "resumed from" in resumed
    assert dict(LOSS.findall(resumed)) == {s: v for s, v in expected.items() if int(s) > 7}


def test_a_checkpoint_of_two_trainers_is_refused_by_one(tmp_path):
    base = _job(tmp_path, num_train_steps="3")
    _run(base)
    config = base / "input" / "config" / "hyperparameters.json"
    hp = json.loads(config.read_text())
    config.write_text(json.dumps({**hp, "trainers_per_host": "1", "num_train_steps": "6"}))
    proc = _start(base)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 1, out
    reason = (base / "output" / "failure").read_text()
    assert "was saved by 2 trainer(s) and this job has 1" in reason


def test_the_cause_is_an_own_reason_else_a_silent_end_else_a_lost_peer():
    lost = f"trainer 1 {launch.PEER_LOST} trainer 0 (algo-1:6170): RuntimeError: TIMEOUT"
    # A peer's abort on the connection the failing trainer closed is seen first.
    assert launch._cause([0, 1], [None, "DataError: shard x.gz line 2"]) == 1
    # The survivor reports the peer that was killed: the killed one is the cause.
    assert launch._cause([1, 0], [lost, None]) == 0
    # The peer ended on another host: the survivor's report names it.
    assert launch._cause([1], [lost]) == 1


def test_a_collective_failure_names_the_peer_that_stopped_answering(monkeypatch):
    monkeypatch.setenv(launch.TRAINER_ID_ENV, "1")
    monkeypatch.setenv("PADDLE_TRAINER_ENDPOINTS", "algo-1:6170,algo-2:6170")
    crash = (
        "RuntimeError: [/paddle/third_party/gloo/gloo/transport/tcp/pair.cc:584] TIMEOUT "
        "self_rank = 1 pair_rank = 0 peer_str = [10.0.0.1]:5026"
    )
    assert launch.peer_lost(crash) == (
        f"trainer 1 lost contact with trainer 0 (algo-1:6170): {crash}"
    )
    assert launch.peer_lost("ValueError: a bad value") is None
    # Where gloo gives only the peer's address, the job's endpoints name its host.
    monkeypatch.setenv("PADDLE_TRAINER_ENDPOINTS", "localhost:6170,localhost:6171")
    reset = (
        "RuntimeError: [/paddle/third_party/gloo/gloo/transport/tcp/pair.cc:576] Read error "
        "[127.0.0.1]:47292: Connection reset by peer"
    )
    assert launch.peer_lost(reset) == (
        f"trainer 1 lost contact with a trainer on localhost (127.0.0.1): {reset}"
    )


def test_hosts_tell_each_other_their_causes():
    with socket.socket() as probe:  # a free port on this machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reports = HostReports(["algo-9", "localhost"], "algo-9", port=port)
    try:
        assert reports.cause(wait=0.1) is None
        reports.tell("trainer 1 was killed by SIGKILL")  # to "localhost": itself, here
        assert reports.cause(wait=5) == "algo-9: trainer 1 was killed by SIGKILL"
    finally:
        reports.close()
