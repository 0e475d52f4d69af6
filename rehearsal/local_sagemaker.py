"""SageMaker's training service, played locally: CreateTrainingJob in, DescribeTrainingJob out.

`run_training_job` takes the request the state machine sends to `createTrainingJob.sync`
and does what SageMaker does with it, on this machine, against folders:

- The request is checked against CreateTrainingJob's API model (pipeline/sagemaker_api.py)
  first: what SageMaker would refuse raises ValidationException with SageMaker's message
  ("1 validation error detected: Value 'ml.g5.2xlarg' at 'resourceConfig.instanceType'
  failed to satisfy constraint: Member must satisfy enum value set: [...]"). So does what
  this player cannot play (channels other than S3Prefix ones, a LocalPath outside
  /opt/ml, a request without AlgorithmSpecification, ResourceConfig or StoppingCondition);
  a job name in use raises ResourceInUse.

- S3 is a folder: `s3://BUCKET/KEY` is `<buckets>/BUCKET/KEY`.
- The container's /opt/ml is `<jobs>/<TrainingJobName>/opt/ml`: the config JSONs and the
  channels are laid out there exactly as SageMaker would, and the image's entrypoint
  (`python -m ernie_sm.cli train`, the local training package rather than the image)
  runs with SAGEMAKER_BASE_DIR pointing at it. As SageMaker runs `docker run IMAGE
  train`, the argument is `train`, or AlgorithmSpecification.ContainerArguments when the
  request has them (`["evaluate"]`, say); a ContainerEntrypoint other than the image's
  own (`ernie-sm`) is not played.
- Its output is streamed line by line to a callback, metrics are read from it with the
  request's MetricDefinitions, `model/` is packed into `model.tar.gz` where SageMaker
  puts it, and the answer has DescribeTrainingJob's field names.

What is not played: more than one host (the job runs as algo-1 alone), Pipe/FastFile
input modes (channels are copied, as in File mode), spot interruptions and
MaxWaitTimeInSeconds, the output data archive (output.tar.gz) and the training image
itself. The container's log is also kept at `<jobs>/<TrainingJobName>/algo-1.log`.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ernie_sm.pipeline import sagemaker_api
from ernie_sm.rehearsal.job_access import JobAccess

ARN_PREFIX = "arn:aws:sagemaker:local:000000000000:training-job/"
CONTAINER_BASE = "/opt/ml"  # where SageMaker mounts the job; LocalPath lives under it
DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"  # CheckpointConfig.LocalPath's default
DEFAULT_MAX_RUNTIME = 86400  # StoppingCondition.MaxRuntimeInSeconds' default
STOP_GRACE_SECONDS = 120  # SageMaker sends SIGKILL this long after SIGTERM
FAILURE_REASON_MAX = 1024  # DescribeTrainingJob's FailureReason is at most this long
HOST = "algo-1"
ENTRYPOINT = ("ernie-sm",)  # the image's (container/Dockerfile), played by ernie_sm.cli
GROUP = "homogeneousCluster"
# Optional in SageMaker's model (serverless jobs go without), needed to play a job here.
PLAYED = ("AlgorithmSpecification", "ResourceConfig", "StoppingCondition")
# The URIs this player maps to folders (SageMaker's S3Uri also takes https://); fullmatch.
S3_URI = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(.*))?")  # bucket, key
# Request fields DescribeTrainingJob gives back as they were sent.
ECHOED = (
    "HyperParameters",
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "CheckpointConfig",
    "VpcConfig",
    "EnableManagedSpotTraining",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
)
NOTE = "[local-sagemaker]"  # prefixes the lines this module adds to the job's output


class ValidationException(Exception):
    """A request SageMaker itself would refuse (SageMaker.ValidationException)."""


class ResourceInUse(ValidationException):
    """The job name is taken (SageMaker.ResourceInUseException)."""


class ChannelError(Exception):
    """A channel's data cannot be downloaded: the job fails before its container starts."""


def run_training_job(
    request: dict,
    buckets: Path,
    jobs: Path,
    on_line: Callable[[str], None] = print,
    env: Mapping[str, str] | None = None,
    policies: Mapping[str, Any] | None = None,
) -> dict:
    """Run one training job to its end; returns its DescribeTrainingJob answer.

    With `policies` (a template's, rehearsal/policies.py) every call SageMaker makes as the
    job's role is authorized as on AWS (rehearsal/job_access.py): a refused one fails the
    request or the job with SageMaker's reason."""
    _validate(request)
    access = JobAccess(request, policies) if policies is not None else None
    refused = access and access.refused_request()
    if refused:
        raise ValidationException(refused)
    name = request["TrainingJobName"]
    job_dir = _claim(jobs, name)
    base = job_dir / "opt" / "ml"
    started = _now()
    try:
        _lay_out(request, buckets, base, on_line, access)
    except ChannelError as exc:
        return _describe(request, base, started, "Failed", "Failed", str(exc))
    for warning in access.warnings(HOST) if access else []:
        on_line(f"{NOTE} {warning}")
    began = time.time()
    container = _Container(request, base, job_dir / f"{HOST}.log", on_line, env or {})
    status, secondary, reason = container.run()
    refused = access and _refused_checkpoints(request, buckets, access, began)
    if refused and status != "Failed":
        status, secondary, reason = "Failed", "Failed", refused
    answer = _describe(request, base, started, status, secondary, reason)
    if status == "Completed" or (status == "Stopped" and any((base / "model").iterdir())):
        # SageMaker uploads whatever model/ holds, a stopped job's too.
        uri = _model_uri(request)
        refused = access and access.refused_upload(uri, [_split_key(uri)], "Artifact")
        if refused:
            status, secondary, reason = "Failed", "Failed", refused
            answer = _describe(request, base, started, status, secondary, reason)
        else:
            answer["ModelArtifacts"] = {"S3ModelArtifacts": _upload_model(request, buckets, base)}
    answer["FinalMetricDataList"] = container.metrics.final()
    on_line(f"{NOTE} {name}: {status}" + (f" ({reason})" if reason else ""))
    return answer


def _refused_checkpoints(
    request: dict, buckets: Path, access: JobAccess, since: float
) -> str | None:
    """SageMaker uploads what the job wrote under LocalPath to the checkpoint S3Uri."""
    config = request.get("CheckpointConfig")
    if not config:
        return None
    folder = s3_path(buckets, config["S3Uri"])
    written = [
        path for path in folder.rglob("*") if path.is_file() and path.stat().st_mtime >= since
    ]
    root = s3_path(buckets, f"s3://{_split_bucket(config['S3Uri'])}")
    keys = [path.relative_to(root).as_posix() for path in written]
    return access.refused_upload(config["S3Uri"], keys, "Checkpoint") if keys else None


def _split_bucket(uri: str) -> str:
    return S3_URI.fullmatch(uri).group(1)


def _split_key(uri: str) -> str:
    return S3_URI.fullmatch(uri).group(2) or ""


# ---------------------------------------------------------------------------------------
# The request


def _validate(request: dict) -> None:
    """What SageMaker refuses, in its own words; then what this player cannot play."""
    problems = [v.message() for v in sagemaker_api.check_request(request)]
    if not problems:  # the local checks read a request of the model's shape
        problems = _local_problems(request)
    if problems:
        raise ValidationException(sagemaker_api.validation_message(problems))


def _local_problems(request: dict) -> list[str]:
    problems = []
    missing = [field for field in PLAYED if field not in request]
    if missing:
        problems.append(f"the local SageMaker plays only requests with {', '.join(missing)}")
    entrypoint = request.get("AlgorithmSpecification", {}).get("ContainerEntrypoint")
    if entrypoint not in (None, list(ENTRYPOINT)):
        problems.append(
            f"ContainerEntrypoint {entrypoint}: the local SageMaker plays only the image's "
            f"own entrypoint, {list(ENTRYPOINT)}"
        )
    channels = request.get("InputDataConfig", [])
    names = [c["ChannelName"] for c in channels]
    if len(set(names)) != len(names):  # SageMaker's rule, beyond its API model
        problems.append(f"Channel names must be unique: {names}")
    for channel in channels:
        source = channel["DataSource"].get("S3DataSource")
        if source is None or source["S3DataType"] != "S3Prefix":
            # SageMaker takes file systems, ManifestFile and others; this player does not.
            problems.append(
                f"channel {channel['ChannelName']!r}: the local SageMaker plays only "
                "S3DataSource channels of S3DataType S3Prefix"
            )
        elif not _valid_uri(source["S3Uri"]):
            problems.append(f"channel {channel['ChannelName']!r}: {_bad_uri(source['S3Uri'])}")
    return problems + _location_problems(request)


def _location_problems(request: dict) -> list[str]:
    problems = []
    output = request["OutputDataConfig"]["S3OutputPath"]
    if not _valid_uri(output):
        problems.append(f"OutputDataConfig: {_bad_uri(output)}")
    checkpoints = request.get("CheckpointConfig")
    if checkpoints:
        local = checkpoints.get("LocalPath") or DEFAULT_CHECKPOINT_PATH
        if local.rstrip("/") == CONTAINER_BASE or not local.startswith(CONTAINER_BASE + "/"):
            problems.append(
                f"CheckpointConfig.LocalPath {local!r}: the local SageMaker relocates only "
                f"folders under {CONTAINER_BASE}/"
            )
        if not _valid_uri(checkpoints["S3Uri"]):
            problems.append(f"CheckpointConfig: {_bad_uri(checkpoints['S3Uri'])}")
    return problems


def _valid_uri(uri: str) -> bool:
    match = S3_URI.fullmatch(uri)
    return bool(match) and ".." not in (match.group(2) or "").split("/")


def _bad_uri(uri: str) -> str:
    return f"the local SageMaker maps only s3://bucket/key URIs inside their bucket, not {uri!r}"


def _claim(jobs: Path, name: str) -> Path:
    """The job's own folder; an existing one means the name is taken, as in an account."""
    jobs.mkdir(parents=True, exist_ok=True)
    job_dir = jobs / name
    try:
        job_dir.mkdir()
    except FileExistsError:
        raise ResourceInUse(
            "Training job names must be unique within an AWS account and region, and a "
            f"training job with this name already exists ({_arn(name)})"
        ) from None
    return job_dir


def _arn(name: str) -> str:
    return ARN_PREFIX + name.lower()


# ---------------------------------------------------------------------------------------
# /opt/ml, as SageMaker prepares it


def _lay_out(
    request: dict,
    buckets: Path,
    base: Path,
    on_line: Callable[[str], None],
    access: JobAccess | None,
) -> None:
    """Config files, channels and checkpoints: everything there before the container starts."""
    refused = access and access.refused_volume_key()
    if refused:
        raise ChannelError(refused)
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (base / "model").mkdir()
    (base / "output" / "data").mkdir(parents=True)
    hosts = _hosts(request, on_line)
    files = {
        "hyperparameters.json": request.get("HyperParameters") or {},
        "resourceconfig.json": _resource_config(request, hosts),
        "inputdataconfig.json": _input_data_config(request),
    }
    for file_name, content in files.items():
        (config / file_name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    for channel in request.get("InputDataConfig") or []:
        target = base / "input" / "data" / channel["ChannelName"]
        _download_channel(channel, buckets, target, access)
    if request.get("CheckpointConfig"):
        _link_checkpoints(request["CheckpointConfig"], buckets, base, access)


def _hosts(request: dict, on_line: Callable[[str], None]) -> list[str]:
    count = request["ResourceConfig"].get("InstanceCount", 1)
    if count > 1:
        # Listing hosts that never start would leave the trainers waiting for them, so the
        # container is told the truth: one host. Multi-host runs cannot be rehearsed here.
        on_line(f"{NOTE} InstanceCount is {count}: running only {HOST}, as a one-host job")
    return [HOST]


def _resource_config(request: dict, hosts: list[str]) -> dict[str, Any]:
    instance_type = request["ResourceConfig"].get("InstanceType", "local")
    return {
        "current_host": HOST,
        "current_instance_type": instance_type,
        "current_group_name": GROUP,
        "hosts": hosts,
        "instance_groups": [
            {"instance_group_name": GROUP, "instance_type": instance_type, "hosts": hosts}
        ],
        "network_interface_name": "eth0",
    }


def _input_data_config(request: dict) -> dict[str, dict[str, str]]:
    """Per channel what SageMaker writes: input mode, distribution, content type if given."""
    default_mode = request["AlgorithmSpecification"].get("TrainingInputMode", "File")
    config = {}
    for channel in request.get("InputDataConfig") or []:
        source = channel.get("DataSource", {}).get("S3DataSource", {})
        entry = {
            "TrainingInputMode": channel.get("InputMode", default_mode),
            "S3DistributionType": source.get("S3DataDistributionType", "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
        }
        if channel.get("ContentType"):
            entry["ContentType"] = channel["ContentType"]
        config[channel["ChannelName"]] = entry
    return config


def _download_channel(channel: dict, buckets: Path, target: Path, access: JobAccess | None) -> None:
    """Copy every object the channel's S3Uri selects, as File mode downloads them."""
    name = channel["ChannelName"]
    uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
    objects = list(_objects(buckets, uri))
    refused = access and access.refused_download(name, uri, _keys(buckets, uri, objects))
    if refused:
        raise ChannelError(refused)
    if not objects:
        raise ChannelError(
            f'ClientError: Data download failed: No S3 objects found under S3 URL "{uri}" '
            f"given in input data source of channel '{name}'. Please ensure that objects "
            "exist under that S3 prefix."
        )
    target.mkdir(parents=True, exist_ok=True)
    for relative, path in objects:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / relative)


def _objects(buckets: Path, uri: str) -> Iterator[tuple[str, Path]]:
    """(path in the channel, file) of every object whose key starts with the URI's key.

    Like SageMaker, keys are placed relative to the prefix's last "/": the prefix
    `datasets/demo/train/` gives `part-00000.gz`, and a whole key such as
    `models/<job>/output/model.tar.gz` (the warm-start channel) gives `model.tar.gz`.
    """
    root, prefix = _bucket_path(buckets, uri)
    folder = posixpath.dirname(prefix)
    start = root / folder
    if not start.is_dir():
        return
    for dirpath, _, files in os.walk(start):
        for file_name in sorted(files):
            path = Path(dirpath) / file_name
            key = path.relative_to(root).as_posix()
            if key.startswith(prefix):
                yield key[len(folder) :].lstrip("/"), path


def _keys(buckets: Path, uri: str, objects: list[tuple[str, Path]]) -> list[str]:
    root, _ = _bucket_path(buckets, uri)
    return [path.relative_to(root).as_posix() for _, path in objects]


def _bucket_path(buckets: Path, uri: str) -> tuple[Path, str]:
    """The bucket's folder and the key of an s3:// URI; a key may not climb out of it."""
    if not _valid_uri(uri):
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI inside its bucket")
    bucket, key = S3_URI.fullmatch(uri).groups()
    return buckets / bucket, key or ""


def s3_path(buckets: Path, uri: str) -> Path:
    """The local file or folder standing for an s3:// URI."""
    root, key = _bucket_path(buckets, uri)
    return root / key


def _link_checkpoints(config: dict, buckets: Path, base: Path, access: JobAccess | None) -> None:
    """Make LocalPath the S3Uri folder itself.

    SageMaker copies S3Uri into LocalPath before the container starts and then uploads
    every file written there while it runs, so an attempt sees the checkpoints of the
    attempts before it. A symlink gives the same view both ways, only instantly; the
    difference (deletions reach "S3" too, uploads are never torn) shows no checkpoint
    that SageMaker would not.
    """
    objects = list(_objects(buckets, config["S3Uri"].rstrip("/") + "/"))
    keys = _keys(buckets, config["S3Uri"], objects)
    refused = access and access.refused_download("checkpoints", config["S3Uri"], keys)
    if refused:
        raise ChannelError(refused)
    local = config.get("LocalPath") or DEFAULT_CHECKPOINT_PATH
    remote = s3_path(buckets, config["S3Uri"])
    remote.mkdir(parents=True, exist_ok=True)
    link = base / posixpath.relpath(local, CONTAINER_BASE)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(remote.resolve(), target_is_directory=True)


# ---------------------------------------------------------------------------------------
# The container


class _Metrics:
    """The last value each MetricDefinitions regex captured, as SageMaker reports it."""

    def __init__(self, definitions: list[dict[str, str]]) -> None:
        self.patterns = [(d["Name"], re.compile(d["Regex"])) for d in definitions]
        self.last: dict[str, tuple[float, str]] = {}

    def feed(self, line: str) -> None:
        for name, pattern in self.patterns:
            match = pattern.search(line)
            if not match:
                continue
            try:
                value = float(match.group(1) if pattern.groups else match.group(0))
            except ValueError:  # e.g. "1.2.3": SageMaker drops what is not a number too
                continue
            self.last[name] = (value, _now())

    def final(self) -> list[dict[str, Any]]:
        """In MetricDefinitions order; a metric never seen has no entry."""
        found = []
        for name, _ in self.patterns:
            if name in self.last:
                value, stamp = self.last[name]
                found.append({"MetricName": name, "Value": value, "Timestamp": stamp})
        return found


class _Stopper:
    """Stops the container as SageMaker does: SIGTERM, then SIGKILL after the grace period."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.reason: str | None = None
        self._lock = threading.RLock()  # RLock: a signal handler may run inside another
        self._killer: threading.Timer | None = None

    def stop(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            self._send(signal.SIGTERM)
            self._killer = threading.Timer(STOP_GRACE_SECONDS, self._send, (signal.SIGKILL,))
            self._killer.daemon = True
            self._killer.start()

    def on_signal(self, signum: int, frame: object) -> None:
        """SIGINT/SIGTERM to this process: a StopTrainingJob; a second one kills at once."""
        if self.reason is not None:
            self._send(signal.SIGKILL)
        self.stop("Stopped")

    def cancel(self) -> None:
        if self._killer is not None:
            self._killer.cancel()

    def _send(self, signum: int) -> None:
        self.process.send_signal(signum)  # a no-op once the process has ended


class _Container:
    """The entrypoint as SageMaker runs it, output streamed, stop and max runtime enforced."""

    def __init__(
        self,
        request: dict,
        base: Path,
        log_file: Path,
        on_line: Callable[[str], None],
        env: Mapping[str, str],
    ) -> None:
        self.request = request
        self.base = base
        self.log_file = log_file
        self.on_line = on_line
        self.env = env
        self.metrics = _Metrics(request["AlgorithmSpecification"].get("MetricDefinitions", []))
        condition = request["StoppingCondition"]
        self.max_runtime = condition.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME)

    def run(self) -> tuple[str, str, str | None]:
        """(TrainingJobStatus, SecondaryStatus, FailureReason) once the container has ended."""
        algorithm = self.request["AlgorithmSpecification"]
        arguments = algorithm.get("ContainerArguments") or ["train"]  # `docker run IMAGE train`
        self.on_line(
            f"{NOTE} {self.request['TrainingJobName']}: image "
            f"{algorithm.get('TrainingImage') or '-'} played by "
            f"`python -m ernie_sm.cli {' '.join(arguments)}` in {self.base}"
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "ernie_sm.cli", *arguments],
            env=self._environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            # Its own session, as a container is: a terminal's Ctrl-C reaches only this
            # process, which turns it into the SIGTERM SageMaker sends on a stop.
            start_new_session=True,
        )
        stopper = _Stopper(process)
        timer = threading.Timer(self.max_runtime, stopper.stop, ("MaxRuntimeExceeded",))
        timer.daemon = True
        previous = _forward_signals(stopper.on_signal)
        try:
            timer.start()
            self._stream(process)
            code = process.wait()
        finally:
            _restore_signals(previous)
            timer.cancel()
            stopper.cancel()
            if process.poll() is None:  # we are leaving abnormally: leave no orphan behind
                process.kill()
                process.wait()
        return self._outcome(code, stopper.reason)

    def _environment(self) -> dict[str, str]:
        # SM_* come from the toolkit inside the container, never from the machine outside.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
        return {
            **inherited,
            "SAGEMAKER_BASE_DIR": str(self.base),
            "TRAINING_JOB_NAME": self.request["TrainingJobName"],
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }

    def _stream(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        with self.log_file.open("w", encoding="utf-8") as log:
            for raw in process.stdout:
                line = raw.rstrip("\n")
                log.write(line + "\n")
                self.metrics.feed(line)
                self.on_line(line)

    def _outcome(self, code: int, stop_reason: str | None) -> tuple[str, str, str | None]:
        if stop_reason == "MaxRuntimeExceeded":
            return (
                "Stopped",
                stop_reason,
                f"MaxRuntimeExceeded: the job ran past MaxRuntimeInSeconds "
                f"({self.max_runtime} s) and was stopped",
            )
        if stop_reason is not None:
            return "Stopped", "Stopped", None
        if code == 0:
            return "Completed", "Completed", None
        return "Failed", "Failed", self._failure_reason(code)

    def _failure_reason(self, code: int) -> str:
        failure = self.base / "output" / "failure"
        if failure.is_file():
            text = failure.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                return text[:FAILURE_REASON_MAX]
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return (
            f"AlgorithmError: the training container {how} and left no reason in "
            f"{CONTAINER_BASE}/output/failure; see the job's log"
        )


def _forward_signals(handler: Callable[[int, object], None]) -> dict[int, Any]:
    """Route SIGINT/SIGTERM to `handler`; only the main thread may, so elsewhere do nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


# ---------------------------------------------------------------------------------------
# The answer


def _model_uri(request: dict) -> str:
    output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    return f"{output}/{request['TrainingJobName']}/output/model.tar.gz"


def _upload_model(request: dict, buckets: Path, base: Path) -> str:
    """Pack model/ as SageMaker does, to <S3OutputPath>/<job>/output/model.tar.gz."""
    uri = _model_uri(request)
    target = s3_path(buckets, uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")  # readers never see half an archive
    with tarfile.open(partial, "w:gz") as tar:
        for path in sorted((base / "model").iterdir()):
            tar.add(path, arcname=path.name)
    os.replace(partial, target)
    return uri


def _describe(
    request: dict,
    base: Path,
    started: str,
    status: str,
    secondary: str,
    reason: str | None,
) -> dict[str, Any]:
    name = request["TrainingJobName"]
    answer: dict[str, Any] = {
        "TrainingJobName": name,
        "TrainingJobArn": _arn(name),
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
    }
    if reason:
        answer["FailureReason"] = reason
    answer.update({field: request[field] for field in ECHOED if field in request})
    answer.update(
        {
            "FinalMetricDataList": [],
            "TrainingStartTime": started,
            "TrainingEndTime": _now(),
            "LocalJobDir": str(base),  # not AWS: where this job's /opt/ml is on this machine
        }
    )
    return answer


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
