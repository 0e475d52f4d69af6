"""The execution input's `stages` field and each stage's training request
(pipeline/requests.py): what the state machine's "Prepare stage" builds."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from ernie_sm.pipeline import handler, limits, parsing, requests, sagemaker_api, stack_environment
from ernie_sm.pipeline.execution_input import ExecutionInputError, StageInput
from ernie_sm.pipeline.parsing import parse_input
from ernie_sm.pipeline.requests import training_job_request
from ernie_sm.pipeline.stack_environment import StackEnvironment

from tests.test_execution import BUCKET, ENV, ENVIRON, MODEL, NAME, NOW, problems

KM = {"knowledge_masking": 1}
MULTI = {"knowledge_masking": 0.6, "sentence_reordering": 0.2, "sentence_distance": 0.2}
STAGES = [{"tasks": KM, "steps": 100}, {"tasks": MULTI, "steps": 50, "name": "multi"}]
PREVIOUS = f"s3://{BUCKET}/models/ernie-s1-run-1-1a2b3c4d-a1-20260301123045/output/model.tar.gz"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "inputs" / "ernie-2.0.json"


def staged(stages: list | None = None, **fields) -> dict:
    return {**fields, "stages": STAGES if stages is None else stages}


def stage_request(
    raw: dict, stage: int, previous: str | None = None, attempt: int = 1, execution_name="run-1"
) -> dict:
    inp = parse_input(raw)
    return training_job_request(inp, ENV, execution_name, attempt, NOW, stage, previous)


# --- the field --------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{}, {"stages": None}], ids=["absent", "null"])
def test_without_stages_the_request_is_todays_to_the_byte(fields):
    raw = {"hyperparameters": {"batch_size": 64}, "warm_start_model": MODEL}
    inp = parse_input({**raw, **fields})
    assert inp.stages is None and inp == parse_input(raw)
    today = training_job_request(parse_input(raw), ENV, "run-1", 2, NOW)
    assert json.dumps(training_job_request(inp, ENV, "run-1", 2, NOW)) == json.dumps(today)
    with pytest.raises(ValueError, match="stage index"):
        training_job_request(inp, ENV, "run-1", 2, NOW, 0)


def test_stages_are_filled_in_and_round_trip():
    inp = parse_input(staged())
    assert inp.stages == (
        StageInput(name="stage-1", tasks={"knowledge_masking": 1.0}, steps=100),
        StageInput(name="multi", tasks=MULTI, steps=50),
    )
    # The normalised input (what the handler returns) is an input that gives the same.
    assert parse_input(staged(json.loads(json.dumps(inp.to_dict()["stages"])))) == inp


@pytest.mark.parametrize(
    ("stages", "field", "says"),
    [
        ("x", "stages", "expected an array of stage objects or null, got string 'x'"),
        ([], "stages", "expected 1 to 8 stages, got 0"),
        ([{"tasks": KM, "steps": 1}] * 9, "stages", "expected 1 to 8 stages, got 9"),
        ([{"tasks": KM, "steps": 1}, 5], "stages[1]", "expected a stage object, got number 5"),
        ([{"steps": 1}], "stages[0].tasks", "required"),
        ([{"tasks": KM}], "stages[0].steps", "required"),
        ([{"tasks": {}, "steps": 1}], "stages[0].tasks", "got an empty object"),
        ([{"tasks": ["knowledge_masking"], "steps": 1}], "stages[0].tasks", "got an array"),
        (
            [{"tasks": KM, "steps": 1}, {"tasks": {"sentence_reorder": 1}, "steps": 1}],
            "stages[1].tasks.sentence_reorder",
            "unknown task (did you mean sentence_reordering?)",
        ),
        ([{"tasks": {"x": 1}, "steps": 1}], "stages[0].tasks.x", "the tasks are knowledge_"),
        ([{"tasks": KM, "steps": 0}], "stages[0].steps", "integer from 1 to 2147483647"),
        ([{"tasks": KM, "steps": 1.5}], "stages[0].steps", "got number 1.5"),
        ([{"tasks": KM, "steps": "10"}], "stages[0].steps", "got string '10'"),
        ([{"tasks": KM, "steps": 2**31}], "stages[0].steps", "integer from 1"),
        ([{"tasks": KM, "steps": 1, "step": 2}], "stages[0].step", "did you mean steps?"),
        ([{"tasks": KM, "steps": 1, "name": "Big"}], "stages[0].name", "lower-case letters"),
        ([{"tasks": KM, "steps": 1, "name": "a" * 33}], "stages[0].name", "1 to 32"),
        ([{"tasks": KM, "steps": 1, "name": "-a"}], "stages[0].name", "starting with a letter"),
        ([{"tasks": KM, "steps": 1, "name": 2}], "stages[0].name", "expected a string"),
        (
            [{"tasks": KM, "steps": 1, "name": "stage-2"}, {"tasks": KM, "steps": 1}],
            "stages[1].name",
            "'stage-2' names more than one stage",
        ),
    ],
)
def test_each_bad_stage_field_is_named(stages, field, says):
    found = problems(staged(stages))
    assert says in found[field], found


@pytest.mark.parametrize("weight", [0, -1, math.nan, math.inf, True, "1", None, 10**400], ids=repr)
def test_a_weight_is_a_finite_number_above_zero(weight):
    stages = [{"tasks": KM, "steps": 1}, {"tasks": {"sentence_reordering": weight}, "steps": 1}]
    found = problems(staged(stages))
    assert found["stages[1].tasks.sentence_reordering"].startswith(
        "expected a finite number > 0, got "
    )


@pytest.mark.parametrize(
    ("weights", "field", "says"),
    [
        ({"knowledge_masking": 1e308, "sentence_distance": 1e308}, "", "weights sum to more"),
        ({"knowledge_masking": 1, "sentence_distance": 1e-320}, ".sentence_distance", "subnormal"),
        ({"knowledge_masking": 1, "sentence_distance": 1e-17}, ".sentence_distance", "never"),
        ({"knowledge_masking": 2.2250738585072014e-308}, ".knowledge_masking", "subnormal"),
    ],
)
def test_weights_the_job_could_not_draw_by_are_refused_at_prepare(weights, field, says):
    found = problems(staged([{"tasks": weights, "steps": 1}]))
    assert says in found[f"stages[0].tasks{field}"], found


@pytest.mark.parametrize(
    ("hyperparameters", "field", "says"),
    [
        ({"batch_size": "x"}, "stages[0].hyperparameters.batch_size", "expected an integer"),
        ({"bogus": 1}, "stages[0].hyperparameters.bogus", "unknown hyperparameter"),
        ("x", "stages[0].hyperparameters", "expected a JSON object"),
        ({"sagemaker_x": "1"}, "stages[0].hyperparameters.sagemaker_x", "reserved"),
        ({"ernie_config_path": "x" * 2501}, "stages[0].hyperparameters.ernie_config_path", ""),
        ({"use_fp16": "a\nb"}, "stages[0].hyperparameters.use_fp16", "line break"),
        ({"checkpoints": "/tmp/x"}, "stages[0].hyperparameters.checkpoints", "/opt/ml/checkpoints"),
        ({"tasks": "knowledge_masking"}, "stages[0].hyperparameters.tasks", "stage's tasks"),
        ({"num_train_steps": 5}, "stages[0].hyperparameters.num_train_steps", "stage's steps"),
    ],
)
def test_a_stages_hyperparameters_are_checked_as_the_top_level_ones(hyperparameters, field, says):
    found = problems(staged([{"tasks": KM, "steps": 1, "hyperparameters": hyperparameters}]))
    assert says in found[field], found


@pytest.mark.parametrize("name", ["tasks", "num_train_steps"])
def test_stages_set_tasks_and_steps_the_top_level_may_not(name):
    found = problems(staged(hyperparameters={name: "1"}))
    assert found == {f"hyperparameters.{name}": found[f"hyperparameters.{name}"]}
    assert "when stages is given" in found[f"hyperparameters.{name}"]


def test_every_stage_is_checked_before_the_first_job(monkeypatch):
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    bad = staged([*STAGES, {"tasks": KM, "steps": 1, "hyperparameters": {"batch_size": 0}}])
    with pytest.raises(ExecutionInputError, match=r"stages\[2\]\.hyperparameters\.batch_size"):
        handler.handler({"input": bad, "execution": "run-1"}, None)


# --- the requests -----------------------------------------------------------------------


def test_a_stages_hyperparameters_are_the_top_levels_its_own_and_its_tasks_and_steps():
    raw = staged(
        [{"tasks": KM, "steps": 100}, {**STAGES[1], "hyperparameters": {"learning_rate": 5e-5}}],
        hyperparameters={"learning_rate": 0.0001, "batch_size": 8192},
    )
    first = stage_request(raw, 0)["HyperParameters"]
    assert first == {
        "learning_rate": "0.0001",
        "batch_size": "8192",
        "tasks": "knowledge_masking:1",
        "num_train_steps": "100",
    }
    second = stage_request(raw, 1, PREVIOUS)["HyperParameters"]
    assert second == {
        "learning_rate": "5e-05",
        "batch_size": "8192",
        "tasks": "knowledge_masking:0.6,sentence_reordering:0.2,sentence_distance:0.2",
        "num_train_steps": "50",
    }


def _model_channel(request: dict) -> str | None:
    found = [c for c in request["InputDataConfig"] if c["ChannelName"] == "model"]
    return found[0]["DataSource"]["S3DataSource"]["S3Uri"] if found else None


def test_the_first_stage_warm_starts_as_the_input_says_the_others_from_the_stage_before():
    assert _model_channel(stage_request(staged(), 0)) is None
    assert _model_channel(stage_request(staged(warm_start_model=MODEL), 0)) == MODEL
    for raw in (staged(), staged(warm_start_model=MODEL)):
        assert _model_channel(stage_request(raw, 1, PREVIOUS)) == PREVIOUS


@pytest.mark.parametrize(
    "previous",
    [
        None,
        "s3://other-bucket/models/j/output/model.tar.gz",
        f"s3://{BUCKET}/datasets/j/output/model.tar.gz",
        f"s3://{BUCKET}/models/j/output/model.tar",
    ],
)
def test_a_later_stage_needs_the_previous_model_from_the_stacks_bucket(previous):
    with pytest.raises(ValueError, match="previous stage's model"):
        stage_request(staged(), 1, previous)


@pytest.mark.parametrize("stage", [-1, 2, True, None])
def test_the_stage_index_is_one_of_the_inputs(stage):
    with pytest.raises(ValueError, match="stage"):
        stage_request(staged(), stage, PREVIOUS)


def test_each_stage_has_its_own_checkpoint_folder_shared_by_its_attempts():
    folders = {
        (stage, attempt): stage_request(staged(), stage, PREVIOUS, attempt)["CheckpointConfig"]
        for stage in (0, 1)
        for attempt in (1, 2)
    }
    assert folders[0, 1] == folders[0, 2] != folders[1, 1] == folders[1, 2]
    assert folders[0, 1]["S3Uri"] == f"s3://{BUCKET}/checkpoints/run-1/stage-1/"
    assert folders[1, 1]["S3Uri"] == f"s3://{BUCKET}/checkpoints/run-1/stage-2/"
    assert folders[1, 1]["LocalPath"] == "/opt/ml/checkpoints"


@pytest.mark.parametrize("execution_name", ["run-1", "a" * 80, "名前", "---"])
@pytest.mark.parametrize("prefix", ["ernie", "ernie-" + "p" * 24])
def test_job_names_tell_the_stages_apart_within_63_characters(execution_name, prefix):
    raw = staged([{"tasks": KM, "steps": 1}] * 8, job_name_prefix=prefix)
    env = StackEnvironment.from_environ({**ENVIRON, "NAME_PREFIX": prefix})
    names = [
        training_job_request(parse_input(raw), env, execution_name, 3, NOW, stage, PREVIOUS)[
            "TrainingJobName"
        ]
        for stage in range(8)
    ]
    assert len(set(names)) == 8
    for stage, name in enumerate(names):
        assert name.startswith(f"{prefix}-s{stage + 1}-") and name.endswith("-a3-20260301123045")
        assert len(name) <= 63 and NAME.fullmatch(name), name


def test_every_stage_request_meets_sagemakers_model():
    raw = json.loads(EXAMPLE.read_text())
    for stage in range(len(raw["stages"])):
        request = stage_request(raw, stage, PREVIOUS)
        assert sagemaker_api.check_request(request) == []


# --- the Prepare function ---------------------------------------------------------------


@pytest.fixture
def prepare_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)


def test_prepare_answers_the_stage_and_the_next_one(prepare_env):
    event = {"input": staged(), "execution": "run-1", "attempt": 2}
    first = handler.handler({**event, "stage": {"index": 0}}, None)
    assert first["stage"] == {"index": 0, "name": "stage-1", "next": 1}
    assert first["request"]["TrainingJobName"].startswith("ernie-s1-run-1-")
    assert handler.handler(event, None)["stage"] == first["stage"]  # no stage: the first
    last = handler.handler({**event, "stage": {"index": 1, "model": PREVIOUS}}, None)
    assert last["stage"] == {"index": 1, "name": "multi"}  # no next: the last stage
    assert _model_channel(last["request"]) == PREVIOUS
    # Only what the state machine selects: not the normalised input, whose stages would
    # take the answer past Step Functions' 256 KiB (test_state_payloads.py).
    assert set(last) == {"request", "attempt", "stage"}
    # The evaluation's Prepare has no stage to answer.
    evaluation = {"dataset": "datasets/topics"}
    evaluated = {**event, "input": staged(evaluation=evaluation), "model": PREVIOUS}
    assert set(handler.handler(evaluated, None)) == {"request", "attempt"}


def test_a_two_stage_input_prepare_accepts_answers_far_under_256_kib(prepare_env):
    """Today's 2 stages of hyperparameters as long as the budget allows: the answer was
    the whole normalised input beside the request, some 288 KB, past the limit."""
    names = ("train_filelist", "valid_filelist", "vocab_path", "ernie_config_path")
    big = {name: "x" * 100 + "/x" * 1200 for name in names}  # names a file system takes
    stages = [{"tasks": KM, "steps": 1, "hyperparameters": {"epoch": " " * 2000 + "1"}}] * 2
    event = {"input": staged(stages, hyperparameters=big), "execution": "run-1"}
    answer = handler.handler({**event, "stage": {"index": 1, "model": PREVIOUS}}, None)
    size = len(json.dumps(answer).encode())
    assert size - len(json.dumps(answer["request"]).encode()) < 200  # the request, no input
    assert size < 32 * 1024


def test_hyperparameters_past_the_state_budget_are_refused_naming_the_job():
    path = "x" * 100 + "/x" * 1200  # as long as SageMaker allows, in names a file system takes
    long = {"train_filelist": path, "valid_filelist": path, "vocab_path": path}
    huge = {**long, "ernie_config_path": path}
    many = {**huge, **{name: " " * 2490 + "1" for name in ("epoch", "batch_size", "skip_steps")}}
    assert parsing._json_bytes(many) > limits.MAX_HYPERPARAMETERS_BYTES
    with pytest.raises(ExecutionInputError) as refused:
        parse_input({"hyperparameters": many})
    assert set(refused.value.problems) == {"hyperparameters"}
    assert "more than the 16384 a job's may take" in refused.value.problems["hyperparameters"]
    # A stage's own ones count with the top-level ones.
    stage = {"tasks": KM, "steps": 1, "hyperparameters": {"epoch": " " * 2490 + "1"}}
    with pytest.raises(ExecutionInputError) as refused:
        parse_input(
            staged(
                [{"tasks": KM, "steps": 1}, stage],
                hyperparameters=huge
                | {"batch_size": " " * 2490 + "1", "skip_steps": " " * 2490 + "1"},
            )
        )
    assert set(refused.value.problems) == {"stages[1].hyperparameters"}
    evaluation = {
        "dataset": "datasets/t",
        "hyperparameters": {
            name: " " * 2490 + "1"
            for name in (
                "num_train_steps",
                "batch_size",
                "max_seq_len",
                "eval_steps",
                "patience",
                "random_seed",
                "learning_rate",
            )
        },
    }
    with pytest.raises(ExecutionInputError) as refused:
        parse_input({"evaluation": evaluation})
    assert set(refused.value.problems) == {"evaluation.hyperparameters"}


@pytest.mark.parametrize("stage", ["0", [0], {"index": 0, "other": 1}])
def test_prepare_refuses_a_bad_stage_in_the_event(prepare_env, stage):
    with pytest.raises(ValueError, match="'stage'"):
        handler.handler({"input": staged(), "execution": "run-1", "stage": stage}, None)


# --- the execution's timeout --------------------------------------------------------------


def test_stages_that_could_outlast_the_execution_are_refused():
    limits = stack_environment.ExecutionLimits(3, (300, 600), 365 * 86400)
    env = StackEnvironment.from_environ(
        {**ENVIRON, "EXECUTION_LIMITS": json.dumps(dataclasses.asdict(limits))}
    )
    assert env.limits == limits
    eight = [{"tasks": KM, "steps": 1}] * 8
    long_jobs = parse_input(staged(eight, spot=False, max_runtime_hours=672))
    found = requests.check_against_stack(long_jobs, env)
    assert found["stages"].startswith("8 stages of up to 672 hours a job, 3 attempts each")
    assert "more than the execution's limit of 365 days" in found["stages"]
    # Spot jobs count with their waiting; 8 x 3 x 144 hours fit.
    assert requests.check_against_stack(parse_input(staged(eight, max_wait_hours=144)), env) == {}
    assert requests.check_against_stack(parse_input({"max_runtime_hours": 672}), env) == {}
    with pytest.raises(ExecutionInputError, match="stages: 8 stages"):
        training_job_request(long_jobs, env, "run-1", 1, NOW, 0)


def test_unreadable_execution_limits_are_the_stacks_problem():
    with pytest.raises(stack_environment.StackEnvironmentError, match="EXECUTION_LIMITS"):
        StackEnvironment.from_environ({**ENVIRON, "EXECUTION_LIMITS": '{"max_attempts": 3}'})
