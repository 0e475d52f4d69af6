"""The notebook route, rehearsed: a boto3 session whose SageMaker training calls the local
SageMaker (rehearsal/local_sagemaker.py) answers, so that a ModelTrainer's `train()` runs
its job on this machine, with no AWS account and no network.

    trainer = rehearsal_trainer(execution_input, Path("build/notebook"), dataset_dir=...)
    trainer.train(wait=True, logs=False)

`rehearsal_trainer` is `operations.notebook.model_trainer` with the synthesized stack's
settings (cdk.out) in place of the deployed one's, and this session behind the SDK.

CreateTrainingJob runs the job to its end before it answers (the job's lines go to
`on_line`); DescribeTrainingJob then gives its outcome. What SageMaker would refuse comes
back as the ClientError AWS sends (ValidationException, ResourceInUse). What SageMaker does
as the job's role is authorized against the synthesized stack's policies, as a rehearsal
of the state machine does (rehearsal/job_access.py); the notebook's own caller is not in
the template, so its calls are not. Every other AWS call fails as a call without
credentials would: nothing leaves the machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ernie_sm.operations import notebook
from ernie_sm.rehearsal import definition
from ernie_sm.rehearsal.local_sagemaker import ResourceInUse, ValidationException, run_training_job
from ernie_sm.rehearsal.rehearse import OWN_CDK_OUT, STACK, stack_template, stage_dataset

REGION = "us-east-1"
# The SDK's telemetry calls an AWS address: opted out, as its own config allows.
SDK_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


def rehearsal_trainer(
    execution_input: dict,
    workdir: Path,
    run_name: str | None = None,
    dataset_dir: Path | None = None,
    dataset_prefix: str = "datasets/demo",
    cdk_out: Path = OWN_CDK_OUT,
    on_line: Callable[[str], None] = print,
    stack: str = STACK,
) -> Any:
    """A ModelTrainer for the synthesized `stack` whose jobs run in the local SageMaker;
    `dataset_dir` (a prepared dataset) is staged at `dataset_prefix` in its bucket."""
    from sagemaker.core.helper.session_helper import Session

    local = definition.load(stack_template(cdk_out, stack))
    if dataset_dir is not None:
        stage_dataset(dataset_dir, workdir / "buckets" / local.bucket / dataset_prefix)
    request = notebook.training_request(execution_input, local.prepare_environment, run_name)
    boto_session = local_session(workdir, on_line, local.policies)
    session = Session(boto_session=boto_session, sagemaker_config=SDK_CONFIG)
    return notebook.trainer_for(request, session)


def local_session(
    workdir: Path,
    on_line: Callable[[str], None] = print,
    policies: Mapping[str, Any] | None = None,
) -> Any:
    """A boto3 session served by the local SageMaker; S3 is `workdir/buckets`. With a
    template's `policies`, the jobs' calls are authorized against them."""
    import boto3

    session = boto3.Session(
        region_name=REGION, aws_access_key_id="rehearsal", aws_secret_access_key="rehearsal"
    )
    served = _LocalSageMaker(workdir / "buckets", workdir / "jobs", on_line, policies)
    session.events.register("provide-client-params.sagemaker.*", served.remember)
    session.events.register("before-call.*.*", served.answer)
    return session


class _LocalSageMaker:
    def __init__(
        self,
        buckets: Path,
        jobs: Path,
        on_line: Callable[[str], None],
        policies: Mapping[str, Any] | None,
    ) -> None:
        self.buckets, self.jobs, self.on_line, self.policies = buckets, jobs, on_line, policies
        self.params: dict[str, Any] = {}
        self.answers: dict[str, dict] = {}  # DescribeTrainingJob, by job name

    def remember(self, params: dict, **_: Any) -> None:
        self.params = dict(params)  # the API's parameters; before-call sees them serialized

    def answer(self, model: Any, **_: Any) -> tuple[Any, dict]:
        """Every call ends here: (HTTP response, parsed body), as botocore would return."""
        operation = model.name
        if model.service_model.service_name != "sagemaker":
            return _error(403, "UnrecognizedClientException", f"{operation}: not rehearsed")
        if operation == "CreateTrainingJob":
            return self._create(self.params)
        if operation == "DescribeTrainingJob":
            name = self.params.get("TrainingJobName", "")
            if name not in self.answers:
                return _error(400, "ValidationException", f"Requested resource not found: {name}")
            return _ok(self.answers[name])
        return _error(400, "ValidationException", f"{operation} is not rehearsed locally")

    def _create(self, request: dict) -> tuple[Any, dict]:
        try:
            answer = run_training_job(
                request, self.buckets, self.jobs, self.on_line, policies=self.policies
            )
        except ResourceInUse as exc:
            return _error(400, "ResourceInUse", str(exc))
        except ValidationException as exc:
            return _error(400, "ValidationException", str(exc))
        self.answers[request["TrainingJobName"]] = {
            **answer,
            "CreationTime": answer["TrainingStartTime"],
            "LastModifiedTime": answer["TrainingEndTime"],
        }
        return _ok({"TrainingJobArn": answer["TrainingJobArn"]})


def _ok(body: dict) -> tuple[Any, dict]:
    from botocore.awsrequest import AWSResponse

    return AWSResponse("local://sagemaker", 200, {}, None), {
        **body,
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }


def _error(status: int, code: str, message: str) -> tuple[Any, dict]:
    from botocore.awsrequest import AWSResponse

    return AWSResponse("local://sagemaker", status, {}, None), {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
