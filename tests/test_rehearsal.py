"""`ernie-sm rehearse`: the synthesized state machine run locally, end to end, on a tiny model."""

from __future__ import annotations

import copy
import gzip
import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import ernie_sm.rehearsal.rehearse as runner
import pytest
from ernie_sm.dataprep.prepare import PrepareOptions, prepare
from ernie_sm.rehearsal import definition, demo, faults
from ernie_sm.rehearsal.rehearse import ROOT, STACK, rehearse
from rich.console import Console

from ernie_sm import cli
from tests.helpers import TINY_EVAL_HYPERPARAMETERS, make_job, tiny_input, write_labelled_set


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A prepared dataset (train and valid channels) of the synthetic corpus."""
    return make_job(tmp_path / "job") / "input" / "data"


def _object(workdir: Path, uri: str) -> Path:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return workdir / "buckets" / bucket / key


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo corpus, prepared as `make demo` prepares it (shorter samples)."""
    out = tmp_path_factory.mktemp("demo") / "dataset"
    options = PrepareOptions(
        inputs=[ROOT / "demo" / "corpus"],
        output=out,
        vocab_size=demo.VOCAB_SIZE,
        dictionaries=[ROOT / "demo" / "entities.txt"],
        max_seq_len=64,
        valid_fraction=0.1,
        workers=1,
        tasks=demo.TASKS,
    )
    prepare(options, console=Console(quiet=True))
    return out


DEMO_INPUT = {
    "dataset": "datasets/demo",
    "spot": False,
    "hyperparameters": {
        "ernie_config_path": "ernie-tiny",
        "max_seq_len": 64,
        "batch_size": 1024,
        "num_train_steps": 6,
        "skip_steps": 2,
        "validation_steps": 6,
        "save_steps": 6,
        "num_workers": 0,
    },
}


def test_an_execution_on_the_demo_dataset_trains_and_returns_the_model_uri(
    cdk_out, demo_dataset, tmp_path
):
    execution_input = DEMO_INPUT
    result = rehearse(execution_input, tmp_path / "r", cdk_out, demo_dataset)
    output = result["output"]
    assert output["attempts"] == 1 and output["training_job"].startswith("ernie-")
    archive = _object(tmp_path / "r", output["model"])
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"model.pdparams", "vocab.txt", "ernie_config.json"} <= names
    # Every call of the execution was authorized, by the principal that makes it on AWS.
    (record,) = (tmp_path / "r").glob("executions/*/authorizations.jsonl")
    decisions = [json.loads(line) for line in record.read_text().splitlines()]
    assert all(d["allowed"] for d in decisions)
    made = {(d["principal"].rsplit("/", 1)[-1], d["action"]) for d in decisions}
    machine, job = "PipelineStateMachineRole61BEBDFF", "TrainingJobRole2D61265B"
    assert {
        ("states.amazonaws.com", "sts:AssumeRole"),
        (machine, "lambda:InvokeFunction"),
        (machine, "sagemaker:CreateTrainingJob"),
        (machine, "iam:PassRole"),
        (machine, "sns:Publish"),
        (machine, "kms:GenerateDataKey"),
        ("sagemaker.amazonaws.com", "sts:AssumeRole"),
        (job, "ecr:BatchGetImage"),
        (job, "s3:ListBucket"),
        (job, "s3:GetObject"),
        (job, "kms:Decrypt"),
        (job, "s3:PutObject"),
        (job, "kms:GenerateDataKey"),  # the output key (g5 volumes are NVMe: no volume key)
        (job, "logs:PutLogEvents"),
    } <= made


def test_bad_input_fails_before_any_job(cdk_out, dataset, tmp_path, capfd):
    result = rehearse({"instance_count": 99}, tmp_path / "r", cdk_out, dataset)
    assert result["error"] == "ExecutionInputError"
    # The function's message, not Lambda's JSON wrapping of it.
    assert result["cause"].startswith("invalid execution input: instance_count: ")
    assert "[sns] ernie pretraining failed" in capfd.readouterr().err
    assert not (tmp_path / "r" / "jobs").exists()


def test_the_dataset_is_staged_where_the_input_trains(cdk_out, dataset, tmp_path):
    """Not at datasets/demo whatever the input says: at its `dataset`, as `upload` puts it."""
    bad = {"dataset": "datasets/my-corpus", "instance_count": 99}  # stops before any job
    assert rehearse(bad, tmp_path / "r", cdk_out, dataset)["error"] == "ExecutionInputError"
    (bucket,) = (tmp_path / "r" / "buckets").iterdir()
    staged = bucket / "datasets" / "my-corpus"
    assert sorted(p.name for p in staged.iterdir()) == ["train", "valid"]
    assert not (bucket / "datasets" / "demo").exists()


def test_a_dataset_folder_that_is_not_one_is_refused(cdk_out, tmp_path, capsys):
    with pytest.raises(OSError, match=r"--dataset .*absent does not exist: give the folder"):
        rehearse(tiny_input(), tmp_path / "r", cdk_out, tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    argv = ["rehearse", "--cdk-out", str(cdk_out), "--dir", str(tmp_path / "r2")]
    assert cli.main([*argv, "--dataset", str(tmp_path / "empty")]) == 2
    assert "empty has no train/ channel" in capsys.readouterr().err
    assert not (tmp_path / "r2" / "executions").exists()


def test_a_failing_job_ends_in_fail_with_its_failure_reason(cdk_out, dataset, tmp_path):
    shard = dataset / "train" / "part-00000.gz"
    lines = gzip.decompress(shard.read_bytes()).decode().splitlines()
    lines[1] = lines[1].rsplit(";", 1)[0]  # four fields instead of five
    shard.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    result = rehearse(tiny_input(), tmp_path / "r", cdk_out, dataset)
    assert result["error"] == "TrainingJobFailed"
    assert "part-00000.gz line 2" in result["cause"]


def _evaluated_input(**evaluation: object) -> dict:
    """tiny_input() with an evaluation on the labelled set staged at datasets/labelled."""
    return {
        **tiny_input(),
        "evaluation": {
            "dataset": "datasets/labelled",
            "hyperparameters": TINY_EVAL_HYPERPARAMETERS,
            **evaluation,
        },
    }


@pytest.fixture
def labelled(tmp_path: Path) -> dict[str, Path]:
    """A labelled set in the synthetic dataset's characters, staged at datasets/labelled."""
    return {"datasets/labelled": write_labelled_set(tmp_path / "labelled")}


@pytest.mark.parametrize("evaluation", [{}, {"evaluation": None}], ids=["absent", "null"])
def test_without_evaluation_the_output_is_the_trained_model_alone(
    cdk_out, dataset, tmp_path, evaluation
):
    result = rehearse({**tiny_input(), **evaluation}, tmp_path / "r", cdk_out, dataset)
    output = result["output"]
    assert set(output) == {"model", "training_job", "attempts"}
    assert _jobs(tmp_path / "r") == [output["training_job"]]


def test_an_evaluation_runs_after_training_and_its_results_join_the_output(
    cdk_out, dataset, labelled, tmp_path, capfd
):
    result = rehearse(_evaluated_input(), tmp_path / "r", cdk_out, dataset, folders=labelled)
    output = result["output"]
    assert output["attempts"] == 1 and output["training_job"].startswith("ernie-")
    evaluation = output["evaluation"]
    assert evaluation["training_job"].startswith("ernie-eval-") and evaluation["attempts"] == 1
    metrics = {m["MetricName"]: m["Value"] for m in evaluation["metrics"]}
    assert {"eval_accuracy", "eval_f1", "baseline_accuracy", "baseline_f1"} <= set(metrics)
    assert all(0 <= metrics[name] <= 1 for name in ("eval_accuracy", "baseline_accuracy"))
    with tarfile.open(_object(tmp_path / "r", evaluation["report"])) as tar:
        report = json.load(tar.extractfile("evaluation.json"))
    assert report  # what `ernie-sm evaluate` wrote, in the evaluation job's model archive
    # The evaluation job was given the trained model, and the notice carries the output.
    assert _jobs(tmp_path / "r") == sorted([output["training_job"], evaluation["training_job"]])
    err = capfd.readouterr().err
    notice = next(line for line in err.splitlines() if line.startswith("[sns] "))
    assert "ernie pretraining succeeded" in notice and "eval_accuracy" in notice


def test_a_capacity_shortage_of_the_evaluation_is_retried_with_the_same_model(
    cdk_out, dataset, labelled, tmp_path
):
    result = rehearse(
        _evaluated_input(),
        tmp_path / "r",
        cdk_out,
        dataset,
        fault_names=["none", "capacity"],
        folders=labelled,
    )
    output = result["output"]
    assert output["attempts"] == 1 and "-a1-" in output["training_job"]
    assert output["evaluation"]["attempts"] == 2 and "-a2-" in output["evaluation"]["training_job"]
    assert output["model"].endswith(f"/{output['training_job']}/output/model.tar.gz")


def test_a_failing_evaluation_ends_in_fail_with_its_failure_reason(
    cdk_out, dataset, labelled, tmp_path, capfd
):
    train_tsv = labelled["datasets/labelled"] / "train.tsv"
    train_tsv.write_text(train_tsv.read_text() + "a\tx\ty\n")  # three fields, not two
    result = rehearse(_evaluated_input(), tmp_path / "r", cdk_out, dataset, folders=labelled)
    assert result["error"] == "TrainingJobFailed"
    # Named: not the training job's failure, which would read the same.
    assert result["cause"].startswith("Evaluation job ernie-eval-")
    assert " failed: " in result["cause"] and "train.tsv line" in result["cause"]
    notice = next(line for line in capfd.readouterr().err.splitlines() if line.startswith("[sns] "))
    assert "ernie pretraining failed" in notice and "Evaluation job ernie-eval-" in notice


def test_a_bad_evaluation_field_fails_before_any_job(cdk_out, dataset, tmp_path):
    bad = {**tiny_input(), "evaluation": {"dataset": "elsewhere/x", "max_runtime_hours": 0}}
    result = rehearse(bad, tmp_path / "r", cdk_out, dataset)
    assert result["error"] == "ExecutionInputError"
    assert "evaluation.max_runtime_hours: " in result["cause"]
    assert not (tmp_path / "r" / "jobs").exists()


def _jobs(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "jobs").iterdir() if p.is_dir())


def test_a_capacity_shortage_is_retried_under_a_fresh_job_name(cdk_out, dataset, tmp_path):
    result = rehearse(tiny_input(), tmp_path / "r", cdk_out, dataset, fault_names=["capacity"])
    output = result["output"]
    assert output["attempts"] == 2
    assert "-a2-" in output["training_job"]
    assert _jobs(tmp_path / "r") == [output["training_job"]]  # the first attempt's never ran


def test_a_used_up_quota_and_throttling_are_retried_under_fresh_job_names(
    cdk_out, dataset, tmp_path
):
    faults = ["resource-limit", "throttled"]
    result = rehearse(tiny_input(), tmp_path / "r", cdk_out, dataset, fault_names=faults)
    output = result["output"]
    assert output["attempts"] == 3 and "-a3-" in output["training_job"]
    assert _jobs(tmp_path / "r") == [output["training_job"]]


def test_retries_run_out_and_the_execution_fails_with_the_last_reason(
    cdk_out, dataset, tmp_path, capfd
):
    result = rehearse(tiny_input(), tmp_path / "r", cdk_out, dataset, fault_names=["capacity"] * 3)
    assert result["error"] == "TrainingJobFailed"
    assert result["cause"].startswith("CapacityError: ")
    err = capfd.readouterr().err
    assert err.count("[prepare] job ") == 3 and "[sns] ernie pretraining failed" in err


@pytest.mark.parametrize(
    ("fault", "error", "cause"),
    [
        (
            "access-denied",
            "SageMaker.AmazonSageMakerException",
            "Error Code: AccessDeniedException",
        ),
        (
            "invalid-request",
            "SageMaker.AmazonSageMakerException",
            "Error Code: ValidationException",
        ),
        ("stopped", "TrainingJobStopped", "ended Stopped (MaxRuntimeExceeded) without a Failure"),
    ],
)
def test_what_retrying_cannot_fix_is_reported_after_one_attempt(
    cdk_out, dataset, tmp_path, capfd, fault, error, cause
):
    result = rehearse(tiny_input(), tmp_path / "r", cdk_out, dataset, fault_names=[fault])
    assert result["error"] == error
    assert cause in result["cause"]
    err = capfd.readouterr().err
    assert err.count("[prepare] job ") == 1
    notice = next(line for line in err.splitlines() if line.startswith("[sns] "))
    assert "ernie pretraining failed" in notice and error in notice


def test_the_definition_is_the_synthesized_one_made_local(cdk_out):
    local = definition.load(cdk_out / f"{STACK}.template.json")
    train = local.definition["States"]["Train"]
    assert train["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    assert local.prepare_environment["BUCKET"] == local.bucket
    assert local.prepare_environment["NAME_PREFIX"] == "ernie"
    assert "TimeoutSeconds" not in local.definition and local.notes
    # No timeout on AWS, not the interpreter's 60 s: the demo's job takes longer than that.
    assert train["TimeoutSeconds"] == definition.MAX_TIMER_SECONDS


def test_the_demo_prints_both_test_scores_as_they_came():
    evaluation = {
        "metrics": [
            {"MetricName": "eval_accuracy", "Value": 0.111111},
            {"MetricName": "eval_f1", "Value": 0.05},
            {"MetricName": "baseline_accuracy", "Value": 0.166667},
        ],
        "report": "s3://b/models/ernie-eval-x/output/model.tar.gz",
    }
    lines = demo.scores(evaluation)
    assert lines[0] == "pretrained: test accuracy 0.111, macro-F1 0.050"
    assert lines[1] == "  baseline: test accuracy 0.167, macro-F1 n/a"
    assert lines[2].startswith("pretraining changed test accuracy by -0.056")  # not hidden
    assert demo.scores({"metrics": []}) == [
        "pretrained: no test scores reported",
        "  baseline: no test scores reported",
    ]


def _staged_input(steps: int = 4) -> dict:
    """tiny_input() in two stages of knowledge masking (the trainer of ERNIE 1.0 takes
    `tasks`), a few steps each; `num_train_steps` comes from each stage's steps."""
    execution_input = tiny_input()
    del execution_input["hyperparameters"]["num_train_steps"]
    stage = {"tasks": {"knowledge_masking": 1}, "steps": steps}
    return {**execution_input, "stages": [stage, {**stage, "name": "second"}]}


def _checkpoints(workdir: Path) -> dict[str, list[str]]:
    """{stage folder: its files} under the one execution's checkpoint folder."""
    (execution,) = (workdir / "buckets" / "rehearsal-data" / "checkpoints").iterdir()
    return {
        folder.name: sorted(p.name for p in folder.rglob("*") if p.is_file())
        for folder in sorted(execution.iterdir())
    }


SECOND_STAGE = {"knowledge_masking": 1, "sentence_reordering": 1, "sentence_distance": 1}


def test_stages_train_in_order_each_from_the_previous_model_then_one_evaluation(
    cdk_out, demo_dataset, labelled, tmp_path, capfd
):
    """ERNIE 2.0 on the demo corpus: knowledge masking, then knowledge masking beside
    sentence reordering and sentence distance, then the evaluation."""
    hyperparameters = {**DEMO_INPUT["hyperparameters"], "validation_steps": 4}
    del hyperparameters["num_train_steps"]
    stages = [
        {"tasks": {"knowledge_masking": 1}, "steps": 4},
        {"name": "second", "tasks": SECOND_STAGE, "steps": 6},
    ]
    evaluation = {"dataset": "datasets/labelled", "hyperparameters": TINY_EVAL_HYPERPARAMETERS}
    execution_input = {
        **DEMO_INPUT,
        "hyperparameters": hyperparameters,
        "stages": stages,
        "evaluation": evaluation,
    }
    result = rehearse(execution_input, tmp_path / "r", cdk_out, demo_dataset, folders=labelled)
    output = result["output"]
    first, second = output["stages"]
    assert [first["name"], second["name"]] == ["stage-1", "second"]
    assert "-s1-" in first["training_job"] and "-s2-" in second["training_job"]
    assert all(stage["attempts"] == 1 and stage["metrics"] for stage in (first, second))
    # The output's model is the last stage's; the second job started from the first's.
    assert output["model"] == second["model"] and output["training_job"] == second["training_job"]
    jobs = tmp_path / "r" / "jobs"
    data = {
        stage["name"]: jobs / stage["training_job"] / "opt/ml/input/data"
        for stage in (first, second)
    }
    assert not (data["stage-1"] / "model").exists()
    # The model channel held the first stage's archive, as the local "S3" has it.
    stage_1_model = _object(tmp_path / "r", first["model"]).read_bytes()
    assert (data["second"] / "model" / "model.tar.gz").read_bytes() == stage_1_model
    for stage, tasks, steps in ((first, stages[0]["tasks"], "4"), (second, SECOND_STAGE, "6")):
        config = jobs / stage["training_job"] / "opt/ml/input/config/hyperparameters.json"
        hyperparameters = json.loads(config.read_text())
        assert hyperparameters["tasks"] == ",".join(f"{t}:1" for t in tasks)
        assert hyperparameters["num_train_steps"] == steps
    # The second stage still reports the first stage's task beside its new ones.
    reported = {m["MetricName"] for m in second["metrics"]}
    assert {
        f"{kind}-{task}-{figure}"
        for kind in ("Training", "Validation")
        for task in SECOND_STAGE
        for figure in ("loss", "accuracy")
    } <= reported
    assert "Training-knowledge_masking-loss" in {m["MetricName"] for m in first["metrics"]}
    err = capfd.readouterr().err
    assert err.index(f"[prepare] job {first['training_job']}") < err.index(
        f"[prepare] job {second['training_job']}"
    )
    log = (jobs / second["training_job"] / "algo-1.log").read_text()
    assert "warm start: weights from" in log
    assert "warm start" not in (jobs / first["training_job"] / "algo-1.log").read_text()
    # Each stage kept its checkpoints in its own folder: the second did not resume the first.
    folders = _checkpoints(tmp_path / "r")
    assert list(folders) == ["stage-1", "stage-2"] and all(folders.values())
    # The evaluation ran once, after the last stage, on its model.
    evaluated = output["evaluation"]["training_job"]
    assert _jobs(tmp_path / "r") == sorted(
        [first["training_job"], second["training_job"], evaluated]
    )
    stage_2_model = _object(tmp_path / "r", second["model"]).read_bytes()
    assert (jobs / evaluated / "opt/ml/input/data/model/model.tar.gz").read_bytes() == stage_2_model
    notice = next(line for line in err.splitlines() if line.startswith("[sns] "))
    assert "ernie pretraining succeeded" in notice and second["training_job"] in notice


def test_a_failing_stage_fails_the_execution_naming_the_stage(cdk_out, dataset, tmp_path, capfd):
    faults = ["none", "stopped"]  # the second stage's job stops at its time limit
    result = rehearse(_staged_input(), tmp_path / "r", cdk_out, dataset, fault_names=faults)
    assert result["error"] == "TrainingJobStopped"
    assert result["cause"].startswith("Stage second (stages[1]) failed: The training job ernie-s2-")
    err = capfd.readouterr().err
    assert err.count("[prepare] job ") == 2
    notice = next(line for line in err.splitlines() if line.startswith("[sns] "))
    assert "ernie pretraining failed" in notice and "Stage second (stages[1])" in notice


# --- Step Functions' limits and the routing around notices ----------------------------------


# A hand-written definition has no template: its tasks run as a role that may do anything.
ANYONE = f"arn:aws:iam::{definition.ACCOUNT}:role/Anyone"
ANYTHING = {
    "prepare_environment": {},
    "policies": {
        "identity": {
            ANYONE: [
                {
                    "name": "everything",
                    "policy": {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    },
                }
            ]
        },
        "resource": {},
        "encryption": {},
    },
    "state_machine_role": ANYONE,
    "prepare_role": ANYONE,
    "prepare_log_group": f"arn:aws:logs:{definition.REGION}:{definition.ACCOUNT}:log-group:x",
}


def _run(
    workdir: Path,
    asl: dict,
    execution_input: dict,
    settings: dict | None = None,
    **config: object,
) -> dict:
    """One execution of `asl` in the rehearsal's interpreter, its tasks served locally with
    `settings` (the roles and policies, the Prepare function's variables: _from_state's)."""
    run_dir = workdir / "run"
    run_dir.mkdir(parents=True)
    files = {
        "definition.json": asl,
        "input.json": execution_input,
        "context.json": runner._context("rehearsal-test"),
        "config.json": {
            **(settings or ANYTHING),
            "buckets": str(workdir / "buckets"),
            "jobs": str(workdir / "jobs"),
            "faults": [],
            **config,
        },
    }
    for name, content in files.items():
        (run_dir / name).write_text(json.dumps(content))
    return runner._run(run_dir)


def _from_state(cdk_out: Path, state: str, state_input: object) -> tuple[dict, dict]:
    """The synthesized definition, made local, entered at `state` with `state_input` (a
    Pass in front sets it), and the settings its tasks run with (roles, policies, the
    Prepare function's variables)."""
    local = definition.load(cdk_out / f"{STACK}.template.json")
    asl = copy.deepcopy(local.definition)
    # The interpreter refuses states it cannot reach: a branch never taken keeps them.
    asl["States"]["Rehearsal start"] = {
        "Type": "Choice",
        "Choices": [{"Variable": "$.never", "IsPresent": True, "Next": asl["StartAt"]}],
        "Default": "Rehearsal state",
    }
    asl["States"]["Rehearsal state"] = {"Type": "Pass", "Result": state_input, "Next": state}
    asl["StartAt"] = "Rehearsal start"
    settings = {
        "prepare_environment": local.prepare_environment,
        "policies": local.policies,
        "state_machine_role": local.state_machine_role,
        "prepare_role": local.prepare_role,
        "prepare_log_group": local.prepare_log_group,
    }
    return asl, settings


BIG = "x" * 150_000  # twice over in one state: past 256 KiB


def test_a_state_whose_data_passes_256_kib_fails_the_execution_as_on_aws(tmp_path, capfd):
    """States.DataLimitExceeded, which no Catch takes, and nothing runs after it."""
    asl = {
        "StartAt": "Grow",
        "States": {
            "Grow": {
                "Type": "Pass",
                "Parameters": {"a.$": "$.big", "b.$": "$.big"},
                "Next": "Work",
            },
            "Work": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sns:publish",
                "Parameters": {"Message": "never sent"},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Succeed"},
        },
    }
    result = _run(tmp_path, asl, {"big": BIG})
    assert result == {
        "error": "States.DataLimitExceeded",
        "cause": "The state/task 'Grow' returned a result with a size exceeding the maximum "
        "number of bytes service limit.",
    }
    assert "[sns]" not in capfd.readouterr().err  # Work never ran
    # Just within the limit (262,144 bytes of UTF-8, an output's JSON text) is fine.
    fits = {"a": "é" * ((262_144 - len('{"a":""}')) // 2)}
    assert len(json.dumps(fits, ensure_ascii=False, separators=(",", ":")).encode()) == 262_144
    asl = {"StartAt": "Grow", "States": {"Grow": {"Type": "Pass", "Result": fits, "End": True}}}
    assert _run(tmp_path / "fits", asl, {}) == {"output": fits}
    asl["States"]["Grow"]["Result"] = {"a": fits["a"] + "!"}  # one byte more
    assert _run(tmp_path / "over", asl, {})["error"] == "States.DataLimitExceeded"


def test_a_task_result_past_256_kib_is_not_caught(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / ".described-big.json").write_text(json.dumps({"TrainingJobName": "big", "x": BIG * 2}))
    asl = {
        "StartAt": "Describe",
        "States": {
            "Describe": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
                "Parameters": {"TrainingJobName": "big"},
                "ResultSelector": {"name.$": "$.TrainingJobName"},
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Succeed"},
        },
    }
    result = _run(tmp_path, asl, {})
    assert result["error"] == "States.DataLimitExceeded" and "'Describe'" in result["cause"]


OUTPUT = {
    "model": "s3://rehearsal-data/models/ernie-x/output/model.tar.gz",
    "training_job": "ernie-x",
    "attempts": 1,
}
SNS_DOWN = ["SNS.InternalErrorException", "Internal error (Service: Sns, Status Code: 500)"]


def test_a_success_notice_that_cannot_be_published_still_succeeds_with_its_output(
    cdk_out, tmp_path, capfd
):
    asl, settings = _from_state(cdk_out, "NotifySuccess", OUTPUT)
    result = _run(tmp_path, asl, {}, settings, publish_error=SNS_DOWN)
    assert result == {"output": OUTPUT}  # the model's output, not the notice's error
    err = capfd.readouterr().err
    assert err.count("[sns] not published (SNS.InternalErrorException)") == 5  # 4 retries


def test_a_success_notice_that_aws_refuses_still_succeeds_with_its_output(cdk_out, tmp_path, capfd):
    """The first deployment's defect: a state machine role without the topic's key, whose
    every notice SNS refuses (KMSAccessDenied). The execution still ends with its output."""
    asl, settings = _from_state(cdk_out, "NotifySuccess", OUTPUT)
    for policy in settings["policies"]["identity"][settings["state_machine_role"]]:
        for statement in policy["policy"]["Statement"]:
            actions = statement["Action"]
            actions = [actions] if isinstance(actions, str) else actions
            kept = [a for a in actions if not a.startswith("kms:GenerateDataKey")]
            statement["Action"] = kept or ["sts:GetCallerIdentity"]
    assert _run(tmp_path, asl, {}, settings) == {"output": OUTPUT}
    assert "[state] NotifySuccess caught an error" in capfd.readouterr().err


def test_a_failure_notice_is_retried_and_the_failure_still_ends_the_execution(
    cdk_out, tmp_path, capfd
):
    error = {"Error": "TrainingJobFailed", "Cause": "AlgorithmError: boom"}
    asl, settings = _from_state(cdk_out, "NotifyFailure", {"error": error})
    result = _run(tmp_path, asl, {}, settings, publish_error=SNS_DOWN)
    assert result == {"error": "TrainingJobFailed", "cause": "AlgorithmError: boom"}
    assert capfd.readouterr().err.count("[sns] not published") == 5


@pytest.mark.parametrize("long_cause", ["cut", "keep"])
def test_a_job_failure_whose_cause_passes_32768_characters_still_gives_its_notice(
    cdk_out, tmp_path, capfd, monkeypatch, long_cause
):
    """A job's description grows with every spot interruption: Step Functions holds a
    Cause to 32,768 characters. Whether it comes cut there or whole, the job is described
    by name and the failure is reported with its reason, with a notice."""
    if long_cause == "keep":
        monkeypatch.setenv("REHEARSAL_LONG_CAUSE", "keep")
    result = rehearse(tiny_input(), tmp_path / "r", cdk_out, fault_names=["interrupted"])
    (described,) = (tmp_path / "r" / "jobs").glob(".described-*.json")
    job = json.loads(described.read_text())
    assert len(json.dumps(job)) > 32_768
    assert len(job["SecondaryStatusTransitions"]) == 3 * faults.SPOT_INTERRUPTIONS
    assert result == {"error": "TrainingJobFailed", "cause": job["FailureReason"]}
    err = capfd.readouterr().err
    notice = next(line for line in err.splitlines() if line.startswith("[sns] "))
    assert "ernie pretraining failed" in notice and "InternalServerError" in notice


def test_a_later_stage_that_cannot_be_prepared_is_named(cdk_out, tmp_path, capfd):
    staged = _staged_input()
    state = {
        "attempt": 1,
        "stage": {"index": 1, "model": "s3://elsewhere/model.tar.gz"},
        "stages": {"text": "", "comma": ""},
    }
    asl, settings = _from_state(cdk_out, "Prepare stage", state)
    result = _run(tmp_path, asl, staged, settings)
    assert result["error"] == "ValueError"
    assert result["cause"].startswith(
        "Stage second (stages[1]) could not be prepared: a stage after the first needs "
    )
    # A stage without a name is named as Prepare names it.
    del staged["stages"][1]["name"]
    result = _run(tmp_path / "unnamed", asl, staged, settings)
    assert result["cause"].startswith("Stage stage-2 (stages[1]) could not be prepared: ")
    assert capfd.readouterr().err.count("[sns] ernie pretraining failed") == 2


def _processes_of(workdir: Path) -> list[str]:
    """The processes still running for a rehearsal in `workdir` (its jobs' SAGEMAKER_BASE_DIR
    points there; the interpreter and local tasks have it in their arguments or config)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if str(workdir).encode() in seen:
            found.append(proc.name)
    return found


def test_ctrl_c_stops_everything_the_rehearsal_started_and_exits_130(cdk_out, dataset, tmp_path):
    """A terminal's Ctrl-C (SIGINT to the command) while a job trains: the job is stopped as
    StopTrainingJob would, nothing is left running, no traceback, and the exit is 130."""
    workdir = tmp_path / "r"
    execution_input = tmp_path / "input.json"
    execution_input.write_text(json.dumps(tiny_input(num_train_steps="100000")))
    command = [sys.executable, "-m", "ernie_sm.cli", "rehearse", "--cdk-out", str(cdk_out)]
    command += ["--dir", str(workdir), "--input", str(execution_input), "--dataset", str(dataset)]
    rehearsal = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert rehearsal.stderr is not None
    before = []
    for line in rehearsal.stderr:  # until the job trains
        before.append(line)
        if "[train] step=" in line:
            break
    assert any("[train] step=" in line for line in before), "".join(before)[-3000:]
    rehearsal.send_signal(signal.SIGINT)
    _, after = rehearsal.communicate(timeout=120)
    err = "".join(before) + after
    assert rehearsal.returncode == 130, err[-3000:]
    assert "[rehearsal] interrupted: stopping the execution and its training job" in after
    assert "[rehearsal] stopped: nothing the rehearsal started is running" in after
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert _processes_of(workdir) == []


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples" / "inputs").glob("*.json")), ids=lambda p: p.stem
)
def test_every_example_input_rehearses_at_toy_size(example, cdk_out, demo_dataset, tmp_path):
    """What examples/inputs/ ships runs as shipped through the stack's state machine, at
    toy size (rehearse --toy): ERNIE-base's million steps become a few, the model the
    input warm-starts from a stand-in in the local bucket."""
    execution_input = json.loads(example.read_text())
    evaluation = execution_input.get("evaluation")
    folders = (
        {evaluation["dataset"]: write_labelled_set(tmp_path / "labelled")} if evaluation else {}
    )
    result = rehearse(
        execution_input, tmp_path / "r", cdk_out, demo_dataset, folders=folders, toy=True
    )
    assert "output" in result, result
    model = _object(tmp_path / "r", result["output"]["model"])
    assert model.is_file()
    stages = execution_input.get("stages") or [None]
    jobs = sorted(p.name for p in (tmp_path / "r" / "jobs").iterdir() if p.is_dir())
    assert len(jobs) == len(stages) + bool(evaluation), jobs


def test_toy_size_keeps_the_pipeline_and_shrinks_the_work():
    from ernie_sm.rehearsal.toy import STAGE_STEPS, TRAINING, model_keys, toy_input

    shipped = json.loads((ROOT / "examples" / "inputs" / "ernie-2.0.json").read_text())
    shipped["warm_start_model"] = "s3://my-dataset-bucket/models/ernie-1.0/model.tar.gz"
    toy = toy_input(shipped, "rehearsal-data")
    assert [s["tasks"] for s in toy["stages"]] == [s["tasks"] for s in shipped["stages"]]
    assert [s["steps"] for s in toy["stages"]] == [STAGE_STEPS, STAGE_STEPS]
    assert "num_train_steps" not in toy["hyperparameters"]  # refused beside stages
    assert toy["hyperparameters"]["ernie_config_path"] == "ernie-tiny"
    assert toy["stages"][1]["hyperparameters"] == {
        "learning_rate": 0.00005,  # the input's own
        "warmup_steps": TRAINING["warmup_steps"],
    }
    assert toy["warm_start_model"] == "s3://rehearsal-data/models/ernie-1.0/model.tar.gz"
    assert model_keys(toy) == ["models/ernie-1.0/model.tar.gz"]
    assert shipped["stages"][0]["steps"] == 400000  # the input itself is left as it was


def test_rehearse_takes_hyperparameter_overrides_as_start_does(cdk_out, dataset, tmp_path, capsys):
    execution_input = tmp_path / "input.json"
    execution_input.write_text(json.dumps(tiny_input()))
    argv = ["rehearse", "--cdk-out", str(cdk_out), "--dir", str(tmp_path / "r")]
    argv += ["--input", str(execution_input), "--dataset", str(dataset)]
    assert cli.main([*argv, "--hp", "batch_size"]) == 2
    assert "--hp 'batch_size': expected name=value" in capsys.readouterr().err
    assert cli.main([*argv, "--hp", "num_train_steps=many"]) == 1  # Prepare refuses it
    assert "hyperparameters.num_train_steps" in capsys.readouterr().err
