"""What a training job does as its role, authorized as AWS would (rehearsal/authorization.py).

SageMaker makes these calls with the request's RoleArn: it assumes the role (the role's
trust policy must let sagemaker.amazonaws.com in), pulls the image, takes a grant on the
volume's KMS key, downloads each channel (ListBucket on the prefix, GetObject on every
object, Decrypt for SSE-KMS), syncs checkpoints both ways, uploads model.tar.gz, and sends
the container's log and metrics to CloudWatch. Each check returns the reason the job (or
the request) fails, worded as SageMaker and S3 word it, or None when AWS would allow it.
A refused log or metric call does not fail a job on AWS, only loses what it carried: those
come back as warnings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ernie_sm.rehearsal import authorization
from ernie_sm.rehearsal.authorization import Request
from ernie_sm.rehearsal.definition import ACCOUNT, REGION

SAGEMAKER = "sagemaker.amazonaws.com"
ECR_PULL = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
# <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@digest]
ECR_IMAGE = re.compile(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/([^:@]+)")
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"


class JobAccess:
    def __init__(self, request: Mapping[str, Any], policies: Mapping[str, Any]) -> None:
        self.request, self.policies = request, policies
        self.role = request["RoleArn"]
        name = request["TrainingJobName"]
        self.job_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name.lower()}"

    def _first_denial(self, requests: list[Request]) -> str | None:
        for denial in authorization.decide(requests, self.policies):
            if denial is not None:
                return denial.message()
        return None

    def refused_request(self) -> str | None:
        """CreateTrainingJob's own checks of the role, as ValidationException messages."""
        assume = Request(
            SAGEMAKER,
            "sts:AssumeRole",
            self.role,
            {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": self.job_arn},
        )
        if self._first_denial([assume]):
            return (
                f"Could not assume role {self.role}. Please ensure that the role exists and "
                f"allows principal '{SAGEMAKER}' to assume the role."
            )
        image = ECR_IMAGE.match(self.request["AlgorithmSpecification"].get("TrainingImage", ""))
        if image:
            account, region, name = image.groups()
            repository = f"arn:aws:ecr:{region}:{account}:repository/{name}"
            pull = [Request(self.role, action, repository) for action in ECR_PULL]
            pull.append(Request(self.role, "ecr:GetAuthorizationToken", "*"))
            if self._first_denial(pull):
                return (
                    f"Access denied for repository: {name} in registry ID: {account}. Please "
                    f"check if your ECR repository and image exist and role {self.role} has "
                    f"proper pull permissions for SageMaker: {', '.join(sorted(ECR_PULL))}"
                )
        return None

    def refused_volume_key(self) -> str | None:
        """The job's volumes are encrypted with a grant SageMaker takes as the role."""
        key = self.request["ResourceConfig"].get("VolumeKmsKeyId")
        if not key:
            return None
        grant = authorization.kms(
            self.role, "kms:CreateGrant", key, "sagemaker", {"kms:GrantIsForAWSResource": "true"}
        )
        denied = self._first_denial([grant])
        return denied and f"ClientError: Unable to create a grant on VolumeKmsKeyId {key}: {denied}"

    def refused_download(self, channel: str, uri: str, keys: Iterable[str]) -> str | None:
        bucket, prefix = _split(uri)
        listing = authorization.s3_list(self.role, bucket, prefix)
        reads = authorization.s3_reads(self.role, bucket, keys, self.policies)
        denials = authorization.decide([listing, *reads], self.policies)
        if denials[0]:
            return (
                f"ClientError: Data download failed:Failed to list objects under {uri} given "
                f"in input data source of channel '{channel}' (AccessDenied: "
                f"{denials[0].message()})"
            )
        for denial in denials[1:]:
            if denial:
                return (
                    f"ClientError: Data download failed:Unable to download object "
                    f"{_object(denial.request.resource, uri)} (AccessDenied: {denial.message()})"
                )
        return None

    def refused_upload(self, uri: str, keys: Iterable[str], what: str) -> str | None:
        """An upload of `keys` under `uri` (model.tar.gz, checkpoints), with the output key
        SageMaker encrypts it with when the request names one."""
        bucket, _ = _split(uri)
        requests = authorization.s3_writes(self.role, bucket, keys, self.policies)
        output_key = self.request.get("OutputDataConfig", {}).get("KmsKeyId")
        if output_key and requests:
            requests.append(authorization.kms(self.role, "kms:GenerateDataKey", output_key, "s3"))
        denied = self._first_denial(requests)
        return denied and f"ClientError: {what} upload failed:AccessDenied: {denied}"

    def warnings(self, host: str) -> list[str]:
        stream = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{LOG_GROUP}:log-stream:"
        stream += f"{self.request['TrainingJobName']}/{host}"
        calls = [
            (Request(self.role, "logs:CreateLogStream", stream), "the job's log"),
            (Request(self.role, "logs:PutLogEvents", stream), "the job's log"),
            (
                Request(
                    self.role,
                    "cloudwatch:PutMetricData",
                    "*",
                    {"cloudwatch:namespace": METRICS_NAMESPACE},
                ),
                "the job's metrics",
            ),
        ]
        denials = authorization.decide([c for c, _ in calls], self.policies)
        return [
            f"AWS would refuse: {denial.message()}: {lost} would not reach CloudWatch"
            for denial, (_, lost) in zip(denials, calls, strict=True)
            if denial is not None
        ]


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _object(arn: str, uri: str) -> str:
    """An object's s3:// URI from its ARN (or the channel's URI for a KMS call)."""
    if arn.startswith("arn:aws:s3:::"):
        return "s3://" + arn.removeprefix("arn:aws:s3:::")
    return uri
