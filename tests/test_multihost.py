"""Two SageMaker hosts on one machine: network namespaces algo-1 and algo-2 joined by a
veth pair, each with its own hosts file (/etc/netns/<name>/hosts) and UTS hostname, since
gloo resolves the container's own name. Traffic stays between the two namespaces; both
are removed afterwards. Needs root and iproute2 (CI runs as root); elsewhere these tests
say so, and the one-host multi-trainer tests (test_launch.py) still cover exactness."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from ernie_sm.training import launch, layout

from tests.helpers import TINY_HYPERPARAMETERS, make_job

HOSTS = ("algo-1", "algo-2")
LOSS = re.compile(r"\[train\] step=(\d+) .*loss: ([0-9.]+)")
TIMEOUT = 240


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("two hosts need network namespaces: root and iproute2 (`ip netns`)")
    tag = os.getpid() % 100000
    names = (f"ernie{tag}a", f"ernie{tag}b")
    subnet = f"10.213.{tag % 250}"
    try:
        for name in names:
            _ip("netns", "add", name)
        _ip("link", "add", f"ev{tag}a", "type", "veth", "peer", "name", f"ev{tag}b")
        for i, (name, end) in enumerate(zip(names, "ab", strict=True), 1):
            _ip("link", "set", f"ev{tag}{end}", "netns", name)
            _ip("-n", name, "addr", "add", f"{subnet}.{i}/24", "dev", f"ev{tag}{end}")
            _ip("-n", name, "link", "set", f"ev{tag}{end}", "up")
            _ip("-n", name, "link", "set", "lo", "up")
            folder = Path("/etc/netns") / name
            folder.mkdir(parents=True, exist_ok=True)
            hosts = "".join(f"{subnet}.{k} {host}\n" for k, host in enumerate(HOSTS, 1))
            (folder / "hosts").write_text(f"127.0.0.1 localhost\n{hosts}")
    except (subprocess.CalledProcessError, OSError) as exc:
        _remove(names)
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        pytest.skip(f"network namespaces cannot be made on this machine: {detail}")
    yield names
    _remove(names)


def _remove(names: tuple[str, str]) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The synthetic channels, with unequal shards so that the ranks' positions differ."""
    base = make_job(tmp_path_factory.mktemp("data"))
    shard = base / "input" / "data" / "train" / "part-00001.gz"
    kept = gzip.decompress(shard.read_bytes()).decode().splitlines()[:40]
    shard.write_bytes(gzip.compress(("\n".join(kept) + "\n").encode()))
    return base / "input" / "data"


def _job(folder: Path, dataset: Path, host: str, **hyperparameters: str) -> Path:
    shutil.copytree(dataset, folder / "input" / "data", dirs_exist_ok=True)
    settings = {
        **TINY_HYPERPARAMETERS,
        "is_distributed": "true",
        "trainers_per_host": "1",
        "warmup_steps": "0",  # a constant rate: a 7-step job trains as the first 7 of 12
        "save_steps": "100000",
        **hyperparameters,
    }
    hp_file = folder / "input" / "config" / "hyperparameters.json"
    base_hp = json.loads(hp_file.read_text()) if hp_file.exists() else {}
    layout.write_local_job(folder, {**base_hp, **settings}, ["train", "valid"])
    resource = {"current_host": host, "hosts": list(HOSTS), "network_interface_name": "eth0"}
    (folder / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resource))
    return folder


def _start(namespace: str, host: str, base: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PADDLE_"))}
    env[layout.BASE_DIR_ENV] = str(base)
    shell = f'hostname {host} && exec "$0" -m ernie_sm.cli train'
    return subprocess.Popen(
        ["ip", "netns", "exec", namespace, "unshare", "--uts", "sh", "-c", shell, sys.executable],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _train(namespaces, bases: list[Path]) -> list[tuple[int, str]]:
    procs = [_start(ns, h, b) for ns, h, b in zip(namespaces, HOSTS, bases, strict=True)]
    try:
        outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out) for p, out in zip(procs, outs, strict=True)]


def test_two_hosts_train_as_one_host_with_as_many_trainers(namespaces, dataset, tmp_path):
    bases = [_job(tmp_path / h, dataset, h, num_train_steps="6") for h in HOSTS]
    (first, out1), (second, out2) = _train(namespaces, bases)
    assert first == second == 0, out1 + out2
    assert "2 trainer(s)" in out1 and not LOSS.search(out2)  # rank 0 alone reports metrics
    assert "[trainer 1] finished at step 6" in out2
    one_host = _job(tmp_path / "one", dataset, "algo-1", num_train_steps="6", trainers_per_host="2")
    config = one_host / "input" / "config" / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PADDLE_"))}
    env[layout.BASE_DIR_ENV] = str(one_host)
    single = subprocess.run(
        [sys.executable, "-m", "ernie_sm.cli", "train"],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert single.returncode == 0, single.stdout
    assert LOSS.findall(out1) == LOSS.findall(single.stdout)


def test_two_hosts_resume_exactly_where_each_trainer_stood(namespaces, dataset, tmp_path):
    whole = [_job(tmp_path / "whole" / h, dataset, h, num_train_steps="12") for h in HOSTS]
    results = _train(namespaces, whole)
    assert [code for code, _ in results] == [0, 0], results
    expected = dict(LOSS.findall(results[0][1]))
    part = [_job(tmp_path / "part" / h, dataset, h, num_train_steps="7") for h in HOSTS]
    assert [code for code, _ in _train(namespaces, part)] == [0, 0]
    # SageMaker syncs every host's checkpoint folder with one S3 prefix: rank 0 wrote it.
    shutil.copytree(part[0] / "checkpoints", part[1] / "checkpoints", dirs_exist_ok=True)
    (checkpoint,) = (part[0] / "checkpoints").iterdir()
    positions = json.loads((checkpoint / "meta.json").read_text())["positions"]
    assert positions[0] != positions[1]  # each trainer stands elsewhere in its shards
    for base in part:
        _job(base, dataset, base.name, num_train_steps="12")
    resumed = _train(namespaces, part)
    assert [code for code, _ in resumed] == [0, 0], resumed
    assert dict(LOSS.findall(resumed[0][1])) == {s: v for s, v in expected.items() if int(s) > 7}
    assert "[trainer 1] resumed from" in resumed[1][1]


def test_a_killed_peers_cause_is_reported_by_the_host_that_survives_it(
    namespaces, dataset, tmp_path
):
    bases = [_job(tmp_path / h, dataset, h, num_train_steps="100000") for h in HOSTS]
    procs = [_start(ns, h, b) for ns, h, b in zip(namespaces, HOSTS, bases, strict=True)]
    try:
        for line in procs[0].stdout:
            if "[train] step=3 " in line:
                break
        trainers = psutil.Process(procs[1].pid).children(recursive=True)
        (peer,) = [t for t in trainers if t.environ().get(launch.TRAINER_ID_ENV) == "1"]
        peer.kill()
        for proc in procs:
            proc.communicate(timeout=TIMEOUT)
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [1, 1]
    killed = (bases[1] / "output" / "failure").read_text()
    assert killed.startswith("trainer 1 was killed by SIGKILL"), killed
    # The surviving host reports the cause that algo-2 told it, then what it saw.
    survivor = (bases[0] / "output" / "failure").read_text()
    assert survivor.startswith("algo-2: trainer 1 was killed by SIGKILL"), survivor
    assert "(on algo-1: trainer 0 lost contact with " in survivor
