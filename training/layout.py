"""SageMaker's training-container contract: where inputs, outputs and checkpoints live.

SageMaker writes `input/config/*.json` and `input/data/<channel>/` under /opt/ml;
`SAGEMAKER_BASE_DIR` relocates the whole tree for local runs. The `SM_*` variables
are set by the sagemaker-training toolkit when *it* launches a script; our entrypoint
runs directly (so that SIGTERM reaches it), so we derive them with the toolkit's own
environment module and let any variable already set win.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ernie_sm.contract.errors import ConfigError
from ernie_sm.contract.textfile import read_json_object

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
FAILURE_LIMIT = 1024  # characters of FailureReason that DescribeTrainingJob returns
FAILURE_CUT = " [... cut to 1,024 characters; the job's log has the whole reason]"


@dataclass(frozen=True)
class JobLayout:
    base_dir: Path
    hyperparameters: dict[str, str]
    channels: dict[str, Path]
    model_dir: Path
    output_dir: Path
    hosts: tuple[str, ...]
    current_host: str
    num_gpus: int

    def channel(self, name: str) -> Path:
        """The folder of a channel the job cannot run without."""
        path = self.channels.get(name)
        if path is None or not path.is_dir():
            raise ConfigError(
                f"the {name!r} channel is missing: give the training job an input channel named "
                f"{name!r} (expected at {self.base_dir / 'input' / 'data' / name})"
            )
        return path

    def checkpoint_dir(self, configured: str) -> Path:
        """The `checkpoints` hyperparameter, else CheckpointConfig's default LocalPath."""
        if configured:
            path = Path(configured)
            if path.is_relative_to(DEFAULT_BASE_DIR):  # SageMaker's path, relocated like the rest
                return self.base_dir / path.relative_to(DEFAULT_BASE_DIR)
            return path if path.is_absolute() else self.base_dir / path
        return self.base_dir / "checkpoints"


def from_environment() -> JobLayout:
    """Read the layout SageMaker (or a local rehearsal) prepared."""
    base = Path(os.environ.get(BASE_DIR_ENV, DEFAULT_BASE_DIR))
    config_dir = base / "input" / "config"
    hyperparameters = _read_json(config_dir / "hyperparameters.json", default={})
    _export_toolkit_variables(base, config_dir)
    channels = {
        key[len("SM_CHANNEL_") :].lower(): Path(value)
        for key, value in os.environ.items()
        if key.startswith("SM_CHANNEL_")
    }
    data_dir = base / "input" / "data"
    if data_dir.is_dir():  # without inputdataconfig.json, every folder there is a channel
        for path in data_dir.iterdir():
            channels.setdefault(path.name, path)
    hosts = tuple(json.loads(os.environ.get("SM_HOSTS", '["algo-1"]')))
    return JobLayout(
        base_dir=base,
        hyperparameters=hyperparameters,
        channels=channels,
        model_dir=Path(os.environ.get("SM_MODEL_DIR", base / "model")),
        output_dir=output_dir(),
        hosts=hosts,
        current_host=os.environ.get("SM_CURRENT_HOST", hosts[0]),
        num_gpus=int(os.environ.get("SM_NUM_GPUS", "0")),
    )


def _export_toolkit_variables(base: Path, config_dir: Path) -> None:
    """Set the SM_* variables the toolkit would, where SageMaker's config files allow it."""
    names = ("resourceconfig.json", "inputdataconfig.json", "hyperparameters.json")
    if not all((config_dir / name).is_file() for name in names):
        return  # a bare local run: the defaults in from_environment() apply
    # Read and checked here: the toolkit's own reading fails with a bare KeyError or
    # UnicodeDecodeError that names no file.
    resources = _resource_config(config_dir / "resourceconfig.json")
    channels = _input_data_config(config_dir / "inputdataconfig.json")
    os.environ[BASE_DIR_ENV] = str(base)
    from sagemaker_training import environment

    logging.getLogger("sagemaker-training-toolkit").setLevel(logging.WARNING)  # GPU probes etc.
    if environment.base_dir != str(base):  # the toolkit fixes its paths at import
        importlib.reload(environment)
    env = environment.Environment(resource_config=resources, input_data_config=channels)
    for key, value in env.to_env_vars().items():
        os.environ.setdefault(key, str(value))


def _resource_config(path: Path) -> dict:
    config = _read_json(path, default={})
    hosts = config.get("hosts")
    if not (isinstance(hosts, list) and hosts and all(isinstance(h, str) and h for h in hosts)):
        raise ConfigError(
            f'{path}: "hosts" must be a non-empty list of host names, got {json.dumps(hosts)}'
        )
    if config.get("current_host") not in hosts:
        raise ConfigError(
            f'{path}: "current_host" must be one of "hosts" ({", ".join(hosts)}), got '
            f"{json.dumps(config.get('current_host'))}"
        )
    return config


def _input_data_config(path: Path) -> dict:
    config = _read_json(path, default={})
    for name, channel in config.items():
        if not isinstance(channel, dict):
            raise ConfigError(
                f"{path}: channel {name!r} must be a JSON object of its settings "
                f'(e.g. {{"TrainingInputMode": "File"}}), got {json.dumps(channel)}'
            )
    return config


def _read_json(path: Path, default: dict) -> dict:
    return (
        read_json_object(path, "SageMaker config file", ConfigError) if path.is_file() else default
    )


def outside_a_job() -> str | None:
    """Why this process is not in a SageMaker job (nor a folder laid out as one), or None.

    Without SAGEMAKER_BASE_DIR, the layout is /opt/ml, which SageMaker mounts into every
    job; where it does not exist, a laptop run would write its failure file into the
    host's root instead of saying what is wrong."""
    if BASE_DIR_ENV in os.environ or Path(DEFAULT_BASE_DIR).is_dir():
        return None
    return (
        f"{DEFAULT_BASE_DIR} does not exist: this runs inside a SageMaker job. On this machine, "
        f"set {BASE_DIR_ENV} to a folder laid out as {DEFAULT_BASE_DIR} "
        "(docs/container-contract.md), or rehearse a whole execution with `ernie-sm rehearse`"
    )


def output_dir() -> Path:
    """Where SageMaker looks for the failure file; known even when the rest of the layout is not."""
    default = Path(os.environ.get(BASE_DIR_ENV, DEFAULT_BASE_DIR)) / "output"
    return Path(os.environ.get("SM_OUTPUT_DIR", default))


def write_failure(output: Path, reason: str) -> None:
    """Leave the reason where SageMaker reports it as the job's FailureReason: one paragraph, capped."""
    text = " ".join(reason.split())
    if len(text) > FAILURE_LIMIT:  # SageMaker would cut it anyway; the start names the problem
        text = text[: FAILURE_LIMIT - len(FAILURE_CUT)] + FAILURE_CUT
    output.mkdir(parents=True, exist_ok=True)
    (output / "failure").write_text(text + "\n", encoding="utf-8")


def write_local_job(base: Path, hyperparameters: dict[str, str], channels: list[str]) -> None:
    """Write the config files SageMaker would, for a local run of the same entrypoint."""
    config_dir = base / "input" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "hyperparameters.json": {k: str(v) for k, v in hyperparameters.items()},
        "resourceconfig.json": {
            "current_host": "algo-1",
            "hosts": ["algo-1"],
            "network_interface_name": "eth0",
        },
        "inputdataconfig.json": {
            name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
            for name in channels
        },
    }
    for name, content in files.items():
        (config_dir / name).write_text(json.dumps(content, indent=2))
