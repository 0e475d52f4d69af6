"""The state machine that turns an execution input into a SageMaker training job and reports the outcome.

    Stages? (no `stages` in the input) -> Start -> Prepare (Lambda: validate the input,
          name the job, build the request) -> Train (createTrainingJob.sync) -> Model ->
          Evaluate? -> Succeeded (publish the model URI)
    With `stages`: Stages? -> Start stages -> Prepare stage (the same Lambda, given the
          stage's index and the previous stage's model) -> Train stage -> Stage metrics?
          -> Stage outcome -> Record stage -> Next stage? -> Next stage -> Prepare stage
          ... -> (the last)
          Stages (the last model and the list of every stage's job) -> Evaluate? -> ...;
          the stages retry and fail as Train does, in states of their own (ids ending in
          " (stage)"), a job's failure with its Cause prefixed by the stage's name, and so
          a Prepare failure of the second stage or a later one
    With `evaluation` in the input: Model -> Prepare evaluation (the same Lambda, given
          the model URI) -> Evaluate (createTrainingJob.sync running `ernie-sm evaluate`)
          -> Evaluation (the model URI and the evaluation job's metrics and report) ->
          Succeeded; Evaluate fails, backs off and tries again as Train does, in states
          of its own (their ids end in " (evaluation)"), its attempts counted from 1, a
          failure's Cause prefixed "Evaluation job <name> failed: "
    Prepare refuses the input -> Notify -> Fail (the error names the field)
    Train cannot start for lack of quota (ResourceLimitExceeded), is throttled, or the
          job finds no capacity (FailureReason "CapacityError...") -> back off, Prepare
          again with a fresh job name (SageMaker rejects a reused name, which is what a
          plain Retry would send) -> ... -> attempts spent: Notify -> Fail
    Any other end: Notify -> Fail, whose Error/Cause say what happened: the job's
          FailureReason (the job described afresh, DescribeTrainingJob), else the API
          error, else the job's status
    Notices are retried; one that still cannot be published never hides a failure nor
          fails a success (Succeeded keeps the execution's output). Prepare retries
          Lambda's transient errors, throttling included.

CDK's SageMakerCreateTrainingJob task cannot set managed spot training, CheckpointConfig,
MaxWaitTimeInSeconds or inter-container encryption, so Train is a CustomState on the
service integration with a hand-written least-privilege policy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct
from ernie_sm.pipeline.limits import MAX_HOURS, MAX_STAGES
from ernie_sm.pipeline.naming import MAX_ATTEMPTS, check_name_prefix
from ernie_sm.pipeline.parsing import parse_input
from ernie_sm.pipeline.stack_environment import ExecutionLimits, execution_seconds
from ernie_sm.stacks import nag
from ernie_sm.stacks.dataset_bucket import CHECKPOINTS, DATASETS, MODELS
from ernie_sm.stacks.execution_role import ExecutionRole
from ernie_sm.stacks.lambda_bundle import lambda_code
from ernie_sm.stacks.network import check_vpc

# The Prepare function carries the execution-input contract, the trainer's modules it
# checks hyperparameters and metrics with, and the SageMaker API model it checks requests
# against: nothing else (stdlib only).
# The Prepare function's code: the input contract and what it stands on (tests/test_layers.py).
LAMBDA_PACKAGES = ("ernie_sm.contract", "ernie_sm.pipeline")
# How createTrainingJob.sync fails. A SageMaker API error is named "SageMaker." + the
# Java SDK's exception class, with a plain-text Cause ("... (Service: AmazonSageMaker;
# Status Code: 400; Error Code: ValidationException; ...)"); only ResourceLimitExceeded has
# a class of its own, every other code (ValidationException, AccessDeniedException,
# ThrottlingException) is AmazonSageMakerException. A job that ends Failed or Stopped is
# States.TaskFailed with its DescribeTrainingJob JSON as Cause. In a Catch, States.TaskFailed
# matches every error but States.Timeout, so the specific catchers come first.
RESOURCE_LIMIT = "SageMaker.ResourceLimitExceededException"
API_ERROR = "SageMaker.AmazonSageMakerException"
THROTTLED_CAUSE = "*ThrottlingException*"
# A job's Cause is its DescribeTrainingJob JSON, which grows with every spot interruption
# (SecondaryStatusTransitions). Step Functions holds a Cause to 32,768 characters
# (TaskFailedEventDetails / ExecutionFailedEventDetails, Step Functions API reference) and
# documents no more: a longer one may come cut short, no longer JSON, and
# States.StringToJson on it would fail the execution (States.Runtime, which no Catch takes)
# without a notice. So the failure routing never parses the Cause: any JSON-looking Cause
# of a States.TaskFailed has the job described afresh (DescribeTrainingJob, by the name
# Prepare gave it), whatever its length, and only the fields the routing reads are used;
# where describing fails, the Cause goes out as it came. Should Step Functions instead end
# the execution itself, no state of ours runs: the ExecutionsFailed alarm (monitoring.py)
# still publishes to the topic.
JOB_CAUSE = "{*"
DESCRIBE_JOB = "sagemaker:describeTrainingJob"  # an AWS SDK integration (aws-sdk:...)
CAPACITY_REASON = "CapacityError*"  # a started job's FailureReason when no instances were found
LAMBDA_CAUSE = '{*"errorMessage"*'  # a Lambda error's Cause: {"errorMessage", "errorType", ...}
# Lambda's transient invoke errors. Step Functions' guide ("Handle Lambda service exceptions",
# step-functions/latest/dg/bp-lambda-serviceexception.html) recommends retrying
# Lambda.ClientExecutionTimeoutException, ServiceException, AWSLambdaException and
# SdkClientException, which CDK's retry_on_service_exceptions does; a throttled invoke
# (Lambda "hits the maximum number of invocations") is Lambda.TooManyRequestsException,
# which it does not: a stage's Prepare throttled would throw away the stages before it.
LAMBDA_THROTTLED = "Lambda.TooManyRequestsException"
MAX_EXECUTION_SECONDS = 365 * 86400  # a standard workflow's longest execution
# Request fields the Prepare step always returns; passed on one by one (JSONPath). Exactly
# the members pipeline/requests.py builds, on every route (tests/test_stack.py).
REQUEST_FIELDS = (
    "TrainingJobName",
    "AlgorithmSpecification",
    "RoleArn",
    "HyperParameters",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "Tags",
)
# The evaluation's request: no checkpoints (its job has nothing to resume).
EVALUATION_REQUEST_FIELDS = tuple(f for f in REQUEST_FIELDS if f != "CheckpointConfig")


@dataclass(frozen=True)
class Phase:
    """One SageMaker job of an execution and the states around it (Prepare, the job,
    back-off, failure reading). The training's states keep their plain ids."""

    task_id: str  # the createTrainingJob.sync state
    prepare_id: str
    suffix: str = ""  # appended to the ids of the states each phase has its own of
    result_path: str = "$.training"  # where the job's DescribeTrainingJob lands
    request_fields: tuple[str, ...] = REQUEST_FIELDS  # passed on, with VpcConfig in a VPC
    payload: Mapping[str, str] = field(default_factory=dict)  # more for the Prepare event
    carry: Mapping[str, str] = field(default_factory=dict)  # kept through the back-off
    selected: Mapping[str, str] = field(default_factory=dict)  # more of Prepare's answer

    def id(self, name: str) -> str:
        return f"{name}{self.suffix}"


TRAINING = Phase("Train", "Prepare job")
# The trained model's output ($.trained) rides along; the event's "model" makes Prepare
# build the evaluation request.
EVALUATION = Phase(
    "Evaluate",
    "Prepare evaluation",
    suffix=" (evaluation)",
    result_path="$.evaluation",
    request_fields=EVALUATION_REQUEST_FIELDS,
    payload={"model.$": "$.trained.model"},
    carry={"trained.$": "$.trained"},
)
EVALUATION_INPUT = "$$.Execution.Input.evaluation"
# An input with stages trains them in a loop of its own phase: $.stage is {"index", and
# from the second stage on "model": the previous stage's model}, what Prepare needs;
# $.stages is the output's list so far, as JSON text (see _stage_loop).
STAGE = Phase(
    "Train stage",
    "Prepare stage",
    suffix=" (stage)",
    payload={"stage.$": "$.stage"},
    carry={"stage.$": "$.stage", "stages.$": "$.stages"},
    selected={"stage.$": "$.Payload.stage"},
)
STAGES_INPUT = "$$.Execution.Input.stages"


@dataclass(frozen=True)
class TrainingPipelineProps:
    bucket: s3.IBucket
    key: kms.IKey
    image_uri: str
    # An ExecutionRole's `role`: the jobs then run in its VPC (subnet_ids and
    # security_group_ids below may be left out, and must otherwise be the same). Any
    # other role must allow what ExecutionRole's does, the VPC's network interfaces too.
    execution_role: iam.IRole
    # Begins every job name (checked at synth as Prepare checks it: check_name_prefix).
    name_prefix: str = "ernie"
    notification_email: str | None = None
    subnet_ids: tuple[str, ...] = ()  # run jobs in these VPC subnets (private, with S3 access)
    security_group_ids: tuple[str, ...] = ()
    # Execution-input fields the stack sets for every execution unless the input does
    # (e.g. {"instance_type": "ml.p4d.24xlarge", "instance_count": 2}); checked at synth.
    input_defaults: Mapping[str, object] = field(default_factory=dict)
    max_attempts: int = 3  # 1..MAX_ATTEMPTS, so that every attempt's job name fits
    retry_wait_minutes: int = 5  # before the second attempt; doubled before each later one


def job_network(props: TrainingPipelineProps) -> TrainingPipelineProps:
    """The props with the jobs' VPC of the ExecutionRole they run as, whose policy lets
    SageMaker create their network interfaces there (and only there): a VPC the role's
    policy does not name would fail every job. Refused when the props name another."""
    owner = props.execution_role.node.scope
    if not isinstance(owner, ExecutionRole):
        return props  # a role made elsewhere: whoever made it grants the network interfaces
    role_vpc = (owner.subnet_ids, owner.security_group_ids)
    given = (tuple(props.subnet_ids), tuple(props.security_group_ids))
    if given == ((), ()):
        return replace(props, subnet_ids=role_vpc[0], security_group_ids=role_vpc[1])
    if given != role_vpc:
        raise ValueError(
            f"TrainingPipelineProps.subnet_ids/security_group_ids {given} differ from those "
            f"of the ExecutionRole {owner.node.path} {role_vpc}: SageMaker creates the jobs' "
            "network interfaces as that role, which may create them only in its own VPC "
            "settings; give them to ExecutionRoleProps alone (the pipeline reads them there)"
        )
    return props


class TrainingPipeline(Construct):
    """`topic`, `prepare_function`, `state_machine`; it acknowledges its own cdk-nag
    findings (stacks/nag.py). stacks/outputs.py gives its stack the outputs the operator
    commands read."""

    def __init__(self, scope: Construct, construct_id: str, props: TrainingPipelineProps) -> None:
        super().__init__(scope, construct_id)
        # Fail the synth, not every execution.
        check_name_prefix(props.name_prefix)
        if not 1 <= props.max_attempts <= MAX_ATTEMPTS:
            raise ValueError(
                f"max_attempts must be 1 to {MAX_ATTEMPTS} (each attempt's job name ends "
                f"-a<attempt>-<time>), got {props.max_attempts!r}"
            )
        check_vpc(props.subnet_ids, props.security_group_ids)
        props = job_network(props)
        parse_input(dict(props.input_defaults))
        self.props = props
        self.topic = self._topic()
        self.prepare_function = self._prepare_function()
        self.state_machine = self._state_machine()
        nag.acknowledge_pipeline(self)

    def _topic(self) -> sns.Topic:
        topic = sns.Topic(
            self,
            "Notifications",
            master_key=self.props.key,
            enforce_ssl=True,
            display_name=f"{self.props.name_prefix} training outcomes",
        )
        # Alarms publish to this encrypted topic: CloudWatch needs the key.
        self.props.key.grant(
            iam.ServicePrincipal("cloudwatch.amazonaws.com"), "kms:Decrypt", "kms:GenerateDataKey*"
        )
        if self.props.notification_email:
            topic.add_subscription(subscriptions.EmailSubscription(self.props.notification_email))
        return topic

    def _prepare_function(self) -> lambda_.Function:
        stack = Stack.of(self)
        function = lambda_.Function(
            self,
            "Prepare",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="ernie_sm.pipeline.handler.handler",
            code=lambda_code(LAMBDA_PACKAGES),
            timeout=Duration.seconds(30),
            memory_size=256,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=logs.LogGroup(
                self,
                "PrepareLogs",
                retention=logs.RetentionDays.THREE_MONTHS,
                removal_policy=RemovalPolicy.DESTROY,
            ),
            environment={
                "IMAGE_URI": self.props.image_uri,
                "ROLE_ARN": self.props.execution_role.role_arn,
                "BUCKET": self.props.bucket.bucket_name,
                "KMS_KEY_ARN": self.props.key.key_arn,
                "NAME_PREFIX": self.props.name_prefix,
                "DATASET_PREFIX": DATASETS.rstrip("/"),
                "OUTPUT_PREFIX": MODELS.rstrip("/"),
                "CHECKPOINT_PREFIX": CHECKPOINTS.rstrip("/"),
                "SUBNETS": ",".join(self.props.subnet_ids),
                "SECURITY_GROUPS": ",".join(self.props.security_group_ids),
                "INPUT_DEFAULTS": json.dumps(dict(self.props.input_defaults)),
                "EXECUTION_LIMITS": json.dumps(asdict(self.execution_limits())),
            },
            description=f"Validates {stack.stack_name} execution input and builds the training job",
        )
        return function

    def _state_machine(self) -> sfn.StateMachine:
        failed = sfn.Fail(self, "Failed", error_path="$.error.Error", cause_path="$.error.Cause")
        fail_notice = self._notify("NotifyFailure", "failed", "$.error")
        # A notice that cannot be sent (after its retries) must not hide the failure it was
        # about.
        fail_notice.add_catch(failed, errors=["States.ALL"], result_path=sfn.JsonPath.DISCARD)
        fail_notice.next(failed)
        prepare, train = self._job_states(TRAINING, fail_notice)
        succeeded = sfn.Pass(
            self,
            "Model",
            parameters={
                "model.$": "$.training.ModelArtifacts.S3ModelArtifacts",
                "training_job.$": "$.training.TrainingJobName",
                "attempts.$": "$.job.attempt",
            },
        )
        success_notice = self._notify("NotifySuccess", "succeeded", "$")
        done = sfn.Succeed(self, "Done", output_path="$")
        # Nor turn a success into a failure: the execution succeeds with its output (the
        # notice's error discarded, so the output is the model's, not the error).
        success_notice.add_catch(done, errors=["States.ALL"], result_path=sfn.JsonPath.DISCARD)
        success_notice.next(done)
        evaluate = self._evaluation(fail_notice, success_notice)
        single = sfn.Pass(self, "Start", parameters={"attempt": 1})
        single.next(prepare).next(train).next(succeeded).next(evaluate)
        # As Evaluate? does: absent or null is the single job of ERNIE 1.0.
        staged = sfn.Choice(self, "Stages?")
        staged.when(sfn.Condition.not_(sfn.Condition.is_present(STAGES_INPUT)), single)
        staged.when(sfn.Condition.is_null(STAGES_INPUT), single)
        definition = staged.otherwise(self._stage_loop(fail_notice, evaluate))
        log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            retention=logs.RetentionDays.THREE_MONTHS,
            removal_policy=RemovalPolicy.DESTROY,
        )
        machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"{self.props.name_prefix}-pretraining",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=self.execution_timeout(),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        self._grant_training(machine.role)
        # SnsPublish grants sns:Publish only; a publisher to a topic with SSE also needs the
        # key (SNS developer guide, "Key management": SNS calls GenerateDataKey and Decrypt
        # with the publisher's credentials). Without it every notice fails.
        self.props.key.grant(machine.role, "kms:GenerateDataKey", "kms:Decrypt")
        return machine

    def backoff_seconds(self) -> list[int]:
        """The wait before attempt 2, 3, ...: retry_wait_minutes, doubling each time."""
        first = self.props.retry_wait_minutes * 60
        return [first * 2**n for n in range(self.props.max_attempts - 1)]

    def execution_limits(self) -> ExecutionLimits:
        """The retries, and a timeout long enough for every attempt of every stage's
        training and of the evaluation to run as long as SageMaker lets a job run (spot
        waiting included), plus their back-offs and an hour for the steps around them, so
        that it never cuts off an attempt SageMaker would have let finish; but at most a
        year, a standard workflow's longest execution, which MAX_STAGES stages of 28 days
        would outlast: Prepare refuses stages that could (EXECUTION_LIMITS)."""
        attempts, backoffs = self.props.max_attempts, tuple(self.backoff_seconds())
        longest = execution_seconds([MAX_HOURS * 3600] * (MAX_STAGES + 1), attempts, backoffs)
        return ExecutionLimits(attempts, backoffs, min(longest, MAX_EXECUTION_SECONDS))

    def execution_timeout(self) -> Duration:
        return Duration.seconds(self.execution_limits().timeout_seconds)

    def _job_states(
        self,
        phase: Phase,
        fail_notice: sfn.IChainable,
        job_failed: sfn.IChainable | None = None,
        prepare_failed: sfn.IChainable | None = None,
    ) -> tuple[tasks.LambdaInvoke, sfn.CustomState]:
        """Prepare and the job of a phase, with the job's retries and failure routing:
        a used-up quota, throttling or no capacity back off and Prepare a fresh job name;
        a job that ended Failed/Stopped fails with its reason; anything else fails too.
        A job's failures go to `job_failed`, Prepare's to `prepare_failed` (by default both
        to fail_notice)."""
        failed = job_failed or fail_notice
        prepare = self._prepare_state(prepare_failed or fail_notice, phase)
        again = self._another_attempt(prepare, failed, phase)
        job = self._train_state(phase)
        job.add_catch(again, errors=[RESOURCE_LIMIT], result_path="$.error")
        throttled = sfn.Choice(self, phase.id("Throttled?"))
        throttled.when(sfn.Condition.string_matches("$.error.Cause", THROTTLED_CAUSE), again)
        job.add_catch(throttled.otherwise(failed), errors=[API_ERROR], result_path="$.error")
        job.add_catch(
            self._job_end(again, failed, phase),
            errors=["States.TaskFailed"],
            result_path="$.error",
        )
        job.add_catch(failed, errors=["States.ALL"], result_path="$.error")
        return prepare, job

    def _stage_loop(self, fail_notice: sfn.IChainable, evaluate: sfn.IChainable) -> sfn.Pass:
        """An input with stages: one job per stage, in order, each Prepared with its index
        and the previous stage's model; after the last, the output lists every stage and
        goes on to Evaluate? with the last stage's model.

        Step Functions has no intrinsic that appends to an array, so the list is kept as
        the JSON text of its items, comma-separated ($.stages.text, with $.stages.comma
        empty until the first item is in), and parsed once at the end."""
        named = sfn.Pass(
            self,
            "Name the stage",
            parameters={
                "Error.$": "$.error.Error",
                "Cause.$": "States.Format('Stage {} (stages[{}]) failed: {}', "
                "$.job.stage.name, $.job.stage.index, $.error.Cause)",
            },
            result_path="$.error",
        )
        named.next(fail_notice)
        prepare, train = self._job_states(
            STAGE, fail_notice, named, self._name_unprepared_stage(fail_notice)
        )
        result = STAGE.result_path
        outcome = sfn.Pass(
            self,
            "Stage outcome",
            parameters={
                "name.$": "$.job.stage.name",
                "training_job.$": f"{result}.TrainingJobName",
                "model.$": f"{result}.ModelArtifacts.S3ModelArtifacts",
                "attempts.$": "$.job.attempt",
                "metrics.$": f"{result}.FinalMetricDataList",
            },
            result_path="$.outcome",
        )
        # DescribeTrainingJob has no FinalMetricDataList when the job logged no metric.
        no_metrics = sfn.Pass(
            self,
            "No stage metrics",
            result=sfn.Result.from_array([]),
            result_path=f"{result}.FinalMetricDataList",
        )
        metrics = sfn.Choice(self, "Stage metrics?")
        metrics.when(sfn.Condition.is_present(f"{result}.FinalMetricDataList"), outcome)
        metrics.otherwise(no_metrics.next(outcome))
        record = sfn.Pass(
            self,
            "Record stage",
            parameters={
                "text.$": "States.Format('{}{}{}', $.stages.text, $.stages.comma, "
                "States.JsonToString($.outcome))",
                "comma": ",",
            },
            result_path="$.stages",
        )
        following = sfn.Pass(
            self,
            "Next stage",
            parameters={
                "attempt": 1,
                "stage": {"index.$": "$.job.stage.next", "model.$": "$.outcome.model"},
                "stages.$": "$.stages",
            },
        )
        done = sfn.Pass(
            self,
            "Stages",
            parameters={
                "model.$": "$.outcome.model",
                "training_job.$": "$.outcome.training_job",
                "attempts.$": "$.outcome.attempts",
                "stages.$": "States.StringToJson(States.Format('[{}]', $.stages.text))",
            },
        )
        last = sfn.Choice(self, "Next stage?")
        last.when(sfn.Condition.is_present("$.job.stage.next"), following.next(prepare))
        last.otherwise(done.next(evaluate))
        train.next(metrics)
        outcome.next(record).next(last)
        start = sfn.Pass(
            self,
            "Start stages",
            parameters={"attempt": 1, "stage": {"index": 0}, "stages": {"text": "", "comma": ""}},
        )
        start.next(prepare).next(train)
        return start

    def _name_unprepared_stage(self, fail_notice: sfn.IChainable) -> sfn.Choice:
        """A Prepare failure of the second stage or a later one names the stage (Prepare
        at the first checks the whole input, and its message names the fields), as the
        input has it: its name, or stage-N (Prepare's default) where it has none."""
        index = "$.stage.index"
        look_up = sfn.Pass(
            self,
            "Look up the stage",
            parameters={
                "Stage.$": f"States.ArrayGetItem({STAGES_INPUT}, {index})",
                "number.$": f"States.MathAdd({index}, 1)",
            },
            result_path="$.failure",
        )

        def naming(construct_id: str, label: str, value: str) -> sfn.Pass:
            named = sfn.Pass(
                self,
                construct_id,
                parameters={
                    "Error.$": "$.error.Error",
                    "Cause.$": f"States.Format('Stage {label} (stages[{{}}]) could not be "
                    f"prepared: {{}}', {value}, {index}, $.error.Cause)",
                },
                result_path="$.error",
            )
            named.next(fail_notice)
            return named

        by_name = naming("Name the unprepared stage", "{}", "$.failure.Stage.name")
        by_number = naming("Number the unprepared stage", "stage-{}", "$.failure.number")
        has_name = sfn.Choice(self, "Stage named?")
        has_name.when(
            sfn.Condition.and_(
                sfn.Condition.is_present("$.failure.Stage.name"),
                sfn.Condition.is_string("$.failure.Stage.name"),
            ),
            by_name,
        ).otherwise(by_number)
        later = sfn.Choice(self, "Later stage?")
        later.when(sfn.Condition.number_greater_than(index, 0), look_up.next(has_name))
        return later.otherwise(fail_notice)

    def _evaluation(
        self, fail_notice: sfn.IChainable, success_notice: sfn.IChainable
    ) -> sfn.Choice:
        """After Model: without `evaluation` in the input (absent or null) straight to the
        success notice; with it, the evaluation job, then the output with its results. The
        evaluation job's failures name it, as a stage's do."""
        start = sfn.Pass(self, "Start evaluation", parameters={"attempt": 1, "trained.$": "$"})
        named = sfn.Pass(
            self,
            "Name the evaluation",
            parameters={
                "Error.$": "$.error.Error",
                "Cause.$": "States.Format('Evaluation job {} failed: {}', "
                "$.job.request.TrainingJobName, $.error.Cause)",
            },
            result_path="$.error",
        )
        named.next(fail_notice)
        prepare, evaluate = self._job_states(EVALUATION, fail_notice, named)
        result = EVALUATION.result_path
        # The output is the training's (with its stages, if any) and the evaluation's.
        output = sfn.Pass(
            self,
            "Evaluation",
            parameters={
                "training_job.$": f"{result}.TrainingJobName",
                "attempts.$": "$.job.attempt",
                "metrics.$": f"{result}.FinalMetricDataList",
                "report.$": f"{result}.ModelArtifacts.S3ModelArtifacts",
            },
            result_path="$.trained.evaluation",
            output_path="$.trained",
        )
        output.next(success_notice)
        # A job that completed without its [eval] lines scored nothing: a failure, not an
        # output without results (and a Pass reading a missing path would fail uncaught).
        no_metrics = sfn.Pass(
            self,
            "No evaluation metrics",
            parameters={
                "Error": "EvaluationWithoutMetrics",
                "Cause.$": f"States.Format('The evaluation job {{}} completed without the "
                f"metric lines it prints', {result}.TrainingJobName)",
            },
            result_path="$.error",
        )
        scored = sfn.Choice(self, "Scored?")
        scored.when(sfn.Condition.is_present(f"{result}.FinalMetricDataList[0]"), output)
        start.next(prepare).next(evaluate).next(scored.otherwise(no_metrics.next(fail_notice)))
        # Rules in order: IsNull on an absent field would be an error, not false. Not
        # IsPresent rather than IsPresent false, which means the same on AWS but which the
        # rehearsal's interpreter (aws-local-stepfunctions) never finds true.
        choice = sfn.Choice(self, "Evaluate?")
        choice.when(sfn.Condition.not_(sfn.Condition.is_present(EVALUATION_INPUT)), success_notice)
        choice.when(sfn.Condition.is_null(EVALUATION_INPUT), success_notice)
        return choice.otherwise(start)

    def _prepare_state(self, fail_notice: sfn.IChainable, phase: Phase) -> tasks.LambdaInvoke:
        prepare = tasks.LambdaInvoke(
            self,
            phase.prepare_id,
            lambda_function=self.prepare_function,
            payload=sfn.TaskInput.from_object(
                {
                    "input.$": "$$.Execution.Input",
                    "execution.$": "$$.Execution.Name",
                    "attempt.$": "$.attempt",
                    **phase.payload,
                }
            ),
            result_selector={
                "request.$": "$.Payload.request",
                "attempt.$": "$.Payload.attempt",
                **phase.selected,
            },
            result_path="$.job",
            retry_on_service_exceptions=True,
        )
        # A throttled invoke passes as the function's concurrency frees up (LAMBDA_THROTTLED).
        prepare.add_retry(
            errors=[LAMBDA_THROTTLED],
            interval=Duration.seconds(5),
            max_attempts=8,
            backoff_rate=2,
            max_delay=Duration.minutes(2),
            jitter_strategy=sfn.JitterType.FULL,
        )
        # A function's error (ExecutionInputError, ...) has Lambda's JSON as Cause: keep its
        # message. Anything else (a Lambda service error) goes out as it came.
        read = sfn.Pass(
            self,
            phase.id("Read Prepare error"),
            parameters={"Lambda.$": "States.StringToJson($.error.Cause)"},
            result_path="$.failure",
        )
        message = sfn.Pass(
            self,
            phase.id("Prepare error"),
            parameters={"Error.$": "$.error.Error", "Cause.$": "$.failure.Lambda.errorMessage"},
            result_path="$.error",
        )
        function_error = sfn.Choice(self, phase.id("Function error?"))
        function_error.when(
            sfn.Condition.string_matches("$.error.Cause", LAMBDA_CAUSE),
            read.next(message).next(fail_notice),
        ).otherwise(fail_notice)
        prepare.add_catch(function_error, errors=["States.ALL"], result_path="$.error")
        return prepare

    def _another_attempt(
        self, prepare: sfn.IChainable, fail_notice: sfn.IChainable, phase: Phase
    ) -> sfn.Choice:
        """Back off, then Prepare names the next attempt's job afresh; or give up."""
        waits = ", ".join(str(seconds) for seconds in [0, *self.backoff_seconds()])
        count = sfn.Pass(
            self,
            phase.id("Count attempt"),
            parameters={
                "attempt.$": "States.MathAdd($.job.attempt, 1)",
                "backoff.$": f"States.ArrayGetItem(States.Array({waits}), $.job.attempt)",
                **phase.carry,
            },
        )
        wait = sfn.Wait(self, phase.id("Back off"), time=sfn.WaitTime.seconds_path("$.backoff"))
        again = sfn.Choice(self, phase.id("Another attempt?"))
        again.when(
            sfn.Condition.number_less_than("$.job.attempt", self.props.max_attempts),
            count.next(wait).next(prepare),
        ).otherwise(fail_notice)
        return again

    def _train_state(self, phase: Phase) -> sfn.CustomState:
        """The job: every field of the request Prepare built (the evaluation's carries
        ContainerArguments inside AlgorithmSpecification)."""
        fields = phase.request_fields
        if self.props.subnet_ids:
            fields = (*fields, "VpcConfig")
        parameters: dict[str, Any] = {f"{name}.$": f"$.job.request.{name}" for name in fields}
        return sfn.CustomState(
            self,
            phase.task_id,
            state_json={
                "Type": "Task",
                "Resource": f"arn:{Stack.of(self).partition}:states:::sagemaker:createTrainingJob.sync",
                "Parameters": parameters,
                "ResultPath": phase.result_path,
            },
        )

    def _job_end(
        self, again: sfn.IChainable, fail_notice: sfn.IChainable, phase: Phase
    ) -> sfn.Choice:
        """States.TaskFailed: a job that ended Failed or Stopped (its DescribeTrainingJob
        JSON as Cause) becomes TrainingJobFailed/TrainingJobStopped with its FailureReason,
        or its status when it has none; a capacity shortage tries again. The job is read
        by describing it, not from the Cause, which may be cut short (JOB_CAUSE); its
        description takes the error's place, so that the state holds one copy of it."""
        read = sfn.CustomState(
            self,
            phase.id("Read job"),
            state_json={
                "Type": "Task",
                "Resource": f"arn:{Stack.of(self).partition}:states:::aws-sdk:{DESCRIBE_JOB}",
                "Parameters": {"TrainingJobName.$": "$.job.request.TrainingJobName"},
                "ResultPath": "$.error",
            },
        )
        # SageMaker's throttling and internal errors pass; a job that cannot be described
        # fails with its Cause as it came (the describe's own error beside it).
        _retry_transient(read, first_wait_seconds=2)
        read.add_catch(fail_notice, errors=["States.ALL"], result_path="$.failure.Describe")
        error = "States.Format('TrainingJob{}', $.error.TrainingJobStatus)"
        reason = sfn.Pass(
            self,
            phase.id("Failure reason"),
            parameters={"Error.$": error, "Cause.$": "$.error.FailureReason"},
            result_path="$.error",
        )
        status = sfn.Pass(
            self,
            phase.id("Job status"),
            parameters={
                "Error.$": error,
                "Cause.$": "States.Format('The training job {} ended {} ({}) without a "
                "FailureReason', $.error.TrainingJobName, $.error.TrainingJobStatus, "
                "$.error.SecondaryStatus)",
            },
            result_path="$.error",
        )
        capacity = sfn.Choice(self, phase.id("Out of capacity?"))
        capacity.when(sfn.Condition.string_matches("$.error.Cause", CAPACITY_REASON), again)
        has_reason = sfn.Choice(self, phase.id("Has a reason?"))
        has_reason.when(
            sfn.Condition.is_present("$.error.FailureReason"),
            reason.next(capacity.otherwise(fail_notice)),
        ).otherwise(status.next(fail_notice))
        ended = sfn.Choice(self, phase.id("Job ended?"))
        ended.when(
            sfn.Condition.string_matches("$.error.Cause", JOB_CAUSE), read.next(has_reason)
        ).otherwise(fail_notice)
        return ended

    def _notify(self, construct_id: str, outcome: str, path: str) -> tasks.SnsPublish:
        """Publish the outcome, retrying what passes (SNS's throttling and internal errors,
        KMS throttling on the topic's key); the caller decides what a notice that still
        cannot be sent leads to."""
        notice = tasks.SnsPublish(
            self,
            construct_id,
            topic=self.topic,
            subject=f"{self.props.name_prefix} pretraining {outcome}",
            message=sfn.TaskInput.from_object(
                {"execution.$": "$$.Execution.Id", "outcome": outcome, "detail.$": path}
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        _retry_transient(notice, first_wait_seconds=5)
        return notice

    def _grant_training(self, role: iam.IRole) -> None:
        """What createTrainingJob.sync needs: jobs of this prefix, PassRole to SageMaker only."""
        stack = Stack.of(self)
        self.jobs_arn = jobs = stack.format_arn(
            service="sagemaker",
            resource="training-job",
            resource_name=f"{self.props.name_prefix}-*",
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # ListTags as AWS's policy for createTrainingJob.sync has it, scoped to the
                # jobs the integration creates (docs: step-functions/latest/dg/sagemaker-iam).
                actions=[
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                    "sagemaker:ListTags",
                ],
                resources=[jobs],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.props.execution_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        # Encrypted volumes and outputs: SageMaker takes a grant on the key for the job. The
        # condition key kms:GrantIsForAWSResource is only in the request context of the
        # grant operations (CreateGrant, ListGrants, RevokeGrant; AWS KMS condition keys),
        # so DescribeKey, which SageMaker may call to check the key, stands on its own.
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["kms:CreateGrant"],
                resources=[self.props.key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["kms:DescribeKey"], resources=[self.props.key.key_arn])
        )
        rule = stack.format_arn(
            service="events",
            resource="rule",
            resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule",
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[rule],
            )
        )


def _retry_transient(state: sfn.TaskStateBase | sfn.CustomState, first_wait_seconds: int) -> None:
    """Four more tries of a call whose errors are mostly passing (throttling, internal
    errors), waits doubling with full jitter; what still fails goes to the state's Catch."""
    state.add_retry(
        errors=["States.ALL"],
        interval=Duration.seconds(first_wait_seconds),
        max_attempts=4,
        backoff_rate=2,
        jitter_strategy=sfn.JitterType.FULL,
    )
