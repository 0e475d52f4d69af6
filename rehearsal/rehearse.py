"""`ernie-sm rehearse`: one execution of the deployed state machine, run on this machine.

The definition is the one `cdk synth` wrote (cdk.out); aws-local-stepfunctions (Node.js)
interprets it, and its Task states are served by local stand-ins (rehearsal/tasks.py):
the real Prepare handler, a local SageMaker that runs the image's entrypoint on the CPU
(rehearsal/local_sagemaker.py), and an SNS that prints. A folder stands for S3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from ernie_sm.contract.channels import TRAIN, VALID
from ernie_sm.operations.executions import InputError, parse_assignments
from ernie_sm.pipeline.execution_input import DEFAULT_DATASET
from ernie_sm.rehearsal import authorization, definition, faults, policies
from ernie_sm.rehearsal.authorization import Request
from ernie_sm.rehearsal.toy import model_keys, stage_toy_model, toy_input

ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = ROOT / "node_modules" / ".bin"
RUNNER = Path(__file__).with_name("run_state_machine.mjs")
STACK = "ErniePretraining"
# The managed rule each `.sync` integration of the definition creates, and what it takes.
SYNC_RULES = {
    "sagemaker:createTrainingJob.sync": "StepFunctionsGetEventsForSageMakerTrainingJobsRule",
    "sagemaker:createProcessingJob.sync": "StepFunctionsGetEventsForSageMakerProcessingJobsRule",
}
RULE_ACTIONS = ("events:PutTargets", "events:PutRule", "events:DescribeRule")
AUTHORIZATIONS = "authorizations.jsonl"  # every call's decision, in a run's folder
OWN_CDK_OUT = ROOT / "cdk.out"  # this project's app's cloud assembly (cdk.json's default)


def rehearse(
    execution_input: dict,
    workdir: Path,
    cdk_out: Path = OWN_CDK_OUT,
    dataset_dir: Path | None = None,
    dataset_prefix: str | None = None,
    fault_names: Sequence[str] = (),
    folders: Mapping[str, Path] | None = None,
    stack: str = STACK,
    toy: bool = False,
) -> dict:
    """Run one execution of `stack` in the cloud assembly `cdk_out` (this project's
    app's, or another app's that composes the constructs); returns {"output": ...} or
    {"error": ..., "cause": ...}.

    `dataset_dir` is a prepared dataset, staged as `ernie-sm upload` would at
    `dataset_prefix`, by default where the input trains (its `dataset`); `folders` maps more key prefixes to folders put into the bucket as they are
    (e.g. {"datasets/demo-topics": <a labelled set>} for an evaluation). With `toy`, the
    input runs at toy size (rehearsal/toy.py).
    """
    local = definition.load(stack_template(cdk_out, stack))
    for note in local.notes:
        print(f"[rehearsal] {note}", file=sys.stderr)
    buckets, jobs = workdir / "buckets", workdir / "jobs"
    if toy:
        execution_input = toy_input(execution_input, local.bucket)
    if dataset_dir is not None:
        prefix = dataset_prefix or _input_dataset(execution_input)
        stage_dataset(dataset_dir, buckets / local.bucket / prefix.strip("/"))
        for key in model_keys(execution_input) if toy else []:
            stage_toy_model(dataset_dir / TRAIN / "vocab.txt", buckets / local.bucket / key)
    for prefix, folder in (folders or {}).items():
        stage_folder(folder, buckets / local.bucket / prefix.strip("/"))
    name = "rehearsal-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    files = {
        "definition.json": local.definition,
        "input.json": execution_input,
        "context.json": _context(name),
        "config.json": {
            "prepare_environment": local.prepare_environment,
            "buckets": str(buckets),
            "jobs": str(jobs),
            "faults": list(fault_names),
            "policies": local.policies,
            "state_machine_role": local.state_machine_role,
            "prepare_role": local.prepare_role,
            "prepare_log_group": local.prepare_log_group,
        },
    }
    run_dir = workdir / "executions" / name
    run_dir.mkdir(parents=True)
    for file_name, content in files.items():
        (run_dir / file_name).write_text(json.dumps(content, indent=2))
    refused = refused_deployment(local, str(run_dir / AUTHORIZATIONS))
    if refused:
        _summarize_authorizations(run_dir / AUTHORIZATIONS)
        return refused
    print(f"[rehearsal] execution {name}; S3 is {buckets}", file=sys.stderr, flush=True)
    return _run(run_dir)


def refused_deployment(local: definition.LocalDefinition, record: str | None = None) -> dict | None:
    """What CreateStateMachine checks of the role, which no execution would get past:
    Step Functions must be able to assume it, and a `.sync` task needs the managed
    EventBridge rule through which it learns that the job ended (Step Functions developer
    guide, "IAM policies for ... SageMaker": events:PutTargets, PutRule, DescribeRule)."""
    role = local.state_machine_role
    trust = Request(
        "states.amazonaws.com",
        "sts:AssumeRole",
        role,
        {"aws:SourceAccount": definition.ACCOUNT, "aws:SourceArn": local.state_machine},
    )
    if authorization.decide([trust], local.policies, record)[0]:
        return {
            "error": "InvalidDefinition",
            "cause": f"Neither the global service principal states.amazonaws.com, nor the "
            f"regional one is authorized to assume the provided role ({role}): the stack "
            "would not deploy",
        }
    rules = {
        SYNC_RULES[r.rsplit(":::", 1)[-1]]
        for r in (s.get("Resource", "") for s in local.definition["States"].values())
        if r.rsplit(":::", 1)[-1] in SYNC_RULES
    }
    arns = [f"arn:aws:events:{definition.REGION}:{definition.ACCOUNT}:rule/{r}" for r in rules]
    calls = [Request(role, a, arn) for arn in sorted(arns) for a in RULE_ACTIONS]
    if any(authorization.decide(calls, local.policies, record)):
        return {
            "error": "AccessDeniedException",
            "cause": f"'{role}' is not authorized to create managed-rule.: the stack would not "
            "deploy",
        }
    return None


def stack_template(cdk_out: Path, stack: str = STACK) -> Path:
    """The stack's template in `cdk_out`. This project's own cdk.out is synthesized when
    it lacks this project's stack; any other assembly never is (its app synthesizes it):
    a missing template is a DefinitionError saying so."""
    try:
        return definition.template_file(cdk_out, stack)
    except definition.DefinitionError:
        if stack != STACK or cdk_out.resolve() != OWN_CDK_OUT.resolve():
            raise
    synth(cdk_out)
    return definition.template_file(cdk_out, stack)


def synth(cdk_out: Path) -> None:
    print("[rehearsal] synthesizing the stack (cdk synth)", file=sys.stderr, flush=True)
    command = [str(NODE_BIN / "cdk"), "synth", "--quiet", "-o", str(cdk_out)]
    subprocess.run(command, cwd=ROOT, env=_env(), check=True)


def _input_dataset(execution_input: dict) -> str:
    """Where the input trains: its `dataset`, else Prepare's default (a bad value is left to
    Prepare, which refuses it naming the field)."""
    dataset = execution_input.get("dataset") if isinstance(execution_input, dict) else None
    return dataset if isinstance(dataset, str) and dataset.strip("/") else DEFAULT_DATASET


def stage_dataset(dataset_dir: Path, prefix: Path) -> None:
    """`ernie-sm upload`, locally: the channels of a prepared dataset into the bucket folder;
    a folder that is not one (no train/ channel) is refused, not staged as nothing."""
    if not (dataset_dir / TRAIN).is_dir():
        what = "does not exist" if not dataset_dir.exists() else f"has no {TRAIN}/ channel"
        raise OSError(
            f"--dataset {dataset_dir} {what}: give the folder `ernie-sm prepare -o` wrote"
        )
    for channel in (TRAIN, VALID):
        if (dataset_dir / channel).is_dir():
            shutil.rmtree(prefix / channel, ignore_errors=True)
            shutil.copytree(dataset_dir / channel, prefix / channel)


def stage_folder(folder: Path, prefix: Path) -> None:
    """`aws s3 sync FOLDER s3://bucket/PREFIX`, locally, replacing what was there."""
    shutil.rmtree(prefix, ignore_errors=True)
    shutil.copytree(folder, prefix)


def _context(name: str) -> dict:
    machine = f"arn:aws:states:{definition.REGION}:{definition.ACCOUNT}:stateMachine:rehearsal"
    return {
        "Execution": {
            "Id": f"arn:aws:states:{definition.REGION}:{definition.ACCOUNT}:execution:rehearsal:{name}",
            "Name": name,
            "StartTime": datetime.now(timezone.utc).isoformat(),
        },
        "StateMachine": {"Id": machine, "Name": "rehearsal"},
    }


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # A rehearsal stays on this machine: no metadata probes, no CDK version check.
        "AWS_EC2_METADATA_DISABLED": "true",
        "CDK_DISABLE_VERSION_CHECK": "true",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
    }


def _run(run_dir: Path) -> dict:
    if not (NODE_BIN / "node").exists():
        raise FileNotFoundError(
            f"{NODE_BIN / 'node'} is missing: run `make` targets (npm ci) first"
        )
    env = {
        **_env(),
        "REHEARSAL_PYTHON": sys.executable,
        "REHEARSAL_CONFIG": str(run_dir / "config.json"),
        authorization.RECORD: str(run_dir / AUTHORIZATIONS),
    }
    args = [str(NODE_BIN / "node"), str(RUNNER)] + [
        str(run_dir / f) for f in ("definition.json", "input.json", "context.json")
    ]
    # Its own session: a terminal's Ctrl-C reaches this process alone, which then stops
    # what the rehearsal started in order (_stop_all) instead of leaving it to die anyhow.
    interpreter = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, _ = interpreter.communicate()
    except KeyboardInterrupt:
        _stop_all(interpreter)
        raise
    lines = stdout.strip().splitlines()
    if interpreter.returncode != 0 or not lines:
        return {
            "error": "Rehearsal.Interpreter",
            "cause": f"the interpreter exited {interpreter.returncode}",
        }
    result = json.loads(lines[-1])
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    _summarize_authorizations(run_dir / AUTHORIZATIONS)
    return result


def _stop_all(interpreter: subprocess.Popen) -> None:
    """Stop the interpreter and the local task processes of its session; the local
    SageMaker stops a running training job as StopTrainingJob does (SIGTERM: it saves a
    checkpoint and ends) and waits for it. A second Ctrl-C kills the job at once."""
    print(
        "\n[rehearsal] interrupted: stopping the execution and its training job "
        "(Ctrl-C again to kill the job now)",
        file=sys.stderr,
        flush=True,
    )
    group = interpreter.pid
    _signal_group(group, signal.SIGTERM)
    interpreter.wait()
    while True:
        try:
            while _signal_group(group, 0):  # until no process of the session is left
                time.sleep(0.2)
            break
        except KeyboardInterrupt:
            _signal_group(group, signal.SIGTERM)  # the local SageMaker: "a second one kills"
    print("[rehearsal] stopped: nothing the rehearsal started is running", file=sys.stderr)


def _signal_group(group: int, signum: int) -> bool:
    """Send `signum` to the process group; False when no process of it is left."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def _summarize_authorizations(record: Path) -> None:
    decisions = (
        [json.loads(line) for line in record.read_text().splitlines()] if record.is_file() else []
    )
    refused = sum(not d["allowed"] for d in decisions)
    print(
        f"[rehearsal] {len(decisions)} AWS calls authorized against the template's policies, "
        f"{refused} refused (each in {record})",
        file=sys.stderr,
    )


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "rehearse",
        help="run one execution of the deployed state machine locally (no AWS, no Docker)",
        description=__doc__,
    )
    p.add_argument("--input", type=Path, help="execution input JSON (default: {})")
    p.add_argument("--dir", type=Path, default=Path("build/rehearsal"), help="work folder")
    p.add_argument(
        "--cdk-out",
        type=Path,
        default=OWN_CDK_OUT,
        help="the cloud assembly (default: this project's, synthesized if missing); another "
        "app's once that app is synthesized",
    )
    p.add_argument(
        "--stack",
        default=STACK,
        help=f"the stack of the cloud assembly to rehearse, by name (default: {STACK})",
    )
    p.add_argument(
        "--dataset",
        type=Path,
        help="a prepared dataset to put in the local bucket (default: none, "
        "only what --stage puts there)",
    )
    p.add_argument(
        "--dataset-prefix",
        help=f"where it goes in the bucket (default: the input's dataset, else {DEFAULT_DATASET})",
    )
    p.add_argument(
        "--stage",
        dest="folders",
        action="append",
        default=[],
        metavar="PREFIX=FOLDER",
        help="also put FOLDER into the local bucket at PREFIX, as it is (repeatable; e.g. "
        "datasets/demo-topics=build/demo/topics, the labelled set of an evaluation)",
    )
    p.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hyperparameter override, over the input's (repeatable), as `ernie-sm start` takes",
    )
    p.add_argument(
        "--toy",
        action="store_true",
        help="rehearse the input at toy size: ernie-tiny, a few steps a job, float32 on the "
        "CPU, a stand-in for any model it warm-starts from (rehearsal/toy.py)",
    )
    p.add_argument(
        "--fault",
        dest="faults",
        action="append",
        default=[],
        choices=sorted(faults.FAULTS),
        help="the next training job fails this way, as SageMaker reports it (repeatable: "
        "one job each, in order; see rehearsal/faults.py)",
    )
    p.set_defaults(run=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        execution_input = json.loads(args.input.read_text()) if args.input else {}
        if args.hp:  # over the input's, unchecked: the rehearsed Prepare step checks them
            given = execution_input.get("hyperparameters")
            execution_input["hyperparameters"] = {
                **(given if isinstance(given, dict) else {}),
                **parse_assignments(args.hp),
            }
        folders = {}
        for item in args.folders:
            prefix, sep, folder = item.partition("=")
            if not sep or not prefix or not folder:
                raise OSError(f"--stage takes PREFIX=FOLDER, got {item!r}")
            folders[prefix] = Path(folder)
        result = rehearse(
            execution_input,
            args.dir,
            args.cdk_out,
            args.dataset,
            args.dataset_prefix,
            args.faults,
            folders,
            args.stack,
            args.toy,
        )
    except KeyboardInterrupt:
        return 130  # 128 + SIGINT, as a shell reports an interrupted command
    except (
        OSError,
        json.JSONDecodeError,
        definition.DefinitionError,
        policies.PolicyError,
        authorization.EvaluatorError,
        subprocess.CalledProcessError,
        InputError,
    ) as exc:
        print(f"ernie-sm rehearse: {exc}", file=sys.stderr)
        return 2
    return report(result)


def report(result: dict) -> int:
    if "output" in result:
        print(json.dumps(result["output"], indent=2))
        return 0
    print(f"execution failed: {result['error']}: {result['cause']}", file=sys.stderr)
    return 1
