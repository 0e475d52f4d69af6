"""Names of an execution's jobs and S3 folders.

Each attempt gets a fresh job name, `<prefix>[-<mark>]-<execution>-<hash>-a<attempt>-<UTC
yyyymmddHHMMSS>`: the mark is `eval` for the evaluation and `s<n>` for stage n. All
attempts of one execution (of one stage) share its checkpoint folder, so that a retry
resumes where the previous attempt stopped and a stage never from the stage before it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from ernie_sm.pipeline import sagemaker_api
from ernie_sm.pipeline.limits import MAX_STAGES

JOB_NAME_LIMIT = sagemaker_api.member_shape("TrainingJobName")["max"]
# A stack's max_attempts is at most MAX_ATTEMPTS, so that the attempt's digits fit.
MAX_ATTEMPTS = 99
DIGEST_CHARS = 8
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
EVAL_JOB_MARK = "eval"


def stage_mark(index: int) -> str:
    """The mark of stage `index`'s jobs: `s<index + 1>`."""
    return f"s{index + 1}"


# A prefix leaves room for the longest mark and tail that job_name appends.
LONGEST_MARK = max((EVAL_JOB_MARK, stage_mark(MAX_STAGES - 1)), key=len)
JOB_NAME_PREFIX_MAX = JOB_NAME_LIMIT - len(
    f"-{LONGEST_MARK}-{'0' * DIGEST_CHARS}-a{MAX_ATTEMPTS}-"
    + datetime(2000, 1, 1).strftime(TIMESTAMP_FORMAT)
)
# A stack's name prefix begins every job name, and the state machine may create only
# `training-job/<prefix>-*`. SageMaker lower-cases training-job ARNs (boto/boto3#4606,
# aws/sagemaker-experiments#172) while IAM compares ARNs case-sensitively, so a prefix
# with upper case would be denied every job: lower case only, and TrainingJobName's
# other characters (no "_").
NAME_PREFIX_PATTERN = re.compile(r"[a-z0-9](?:-*[a-z0-9])*")


def valid_job_name_prefix(text: str) -> bool:
    """Whether `text` can begin a job name (an input's job_name_prefix)."""
    return 0 < len(text) <= JOB_NAME_PREFIX_MAX and not sagemaker_api.refusal(
        "TrainingJobName", text
    )


def name_prefix_problem(prefix: str) -> str | None:
    """Why a stack's name prefix would fail its executions, or None: the one check of
    the stack's synth (check_name_prefix) and of the Prepare function's environment."""
    if valid_job_name_prefix(prefix) and NAME_PREFIX_PATTERN.fullmatch(prefix):
        return None
    return (
        f"{prefix!r} is refused: expected 1 to {JOB_NAME_PREFIX_MAX} lower-case letters, "
        "digits and hyphens, starting and ending with a letter or digit. It begins every "
        f"training job's name (at most {JOB_NAME_LIMIT} characters with what each job "
        f"appends, -{LONGEST_MARK}-<execution>-<hash>-a<attempt>-<time>), and SageMaker "
        "lower-cases the job ARNs that the state machine may create (training-job/<prefix>-*)"
    )


def check_name_prefix(prefix: str, setting: str = "name_prefix") -> None:
    """Raise ValueError, naming `setting`, for a name prefix every execution would fail on."""
    problem = name_prefix_problem(prefix)
    if problem:
        raise ValueError(f"{setting} {problem}")


def job_name(prefix: str, execution_name: str, attempt: int, now: datetime, mark: str = "") -> str:
    """`<prefix>-<execution>-<hash>-a<attempt>-<yyyymmddHHMMSS>`: fresh per attempt, <= 63 chars.

    A `mark` ("eval") follows the prefix: `<prefix>-eval-<execution>-...`, still a name the
    state machine may create (`<name prefix>-*`).

    The execution part is the execution name with every run of other characters than
    letters and digits made a hyphen, shortened to fit; the hash (of the whole name) keeps
    names apart that sanitise or shorten alike. `now` is taken as UTC when naive.
    """
    if not valid_job_name_prefix(prefix):
        raise ValueError(
            f"job name prefix {prefix!r} is not 1..{JOB_NAME_PREFIX_MAX} letters, digits and hyphens"
        )
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an integer >= 1, got {attempt!r}")
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    tail = [_digest(execution_name), f"a{attempt}", now.strftime(TIMESTAMP_FORMAT)]
    limit = JOB_NAME_LIMIT
    head = [prefix, *([mark] if mark else [])]
    room = limit - len("-".join([*head, *tail])) - 1
    slug = _slug(execution_name)[: max(room, 0)].rstrip("-")
    name = "-".join([*head, *([slug] if slug else []), *tail])
    if sagemaker_api.refusal("TrainingJobName", name):
        raise ValueError(f"cannot make a job name of <= {limit} characters from {name!r}")
    return name


def execution_key(execution_name: str) -> str:
    """The execution's folder name in S3: the name itself when it is a plain one."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}", execution_name) and ".." not in (
        execution_name
    ):
        return execution_name
    slug = _slug(execution_name)[:60].rstrip("-")
    return f"{slug}-{_digest(execution_name)}" if slug else _digest(execution_name)


def checkpoint_folder(execution_name: str, stage: int | None = None) -> str:
    """The checkpoint folder under the stack's checkpoint prefix: shared by every attempt
    of one execution, so that a retry resumes from its checkpoints; of one stage (index)
    with `stage`, so that a stage does not resume from the one before."""
    folder = f"{execution_key(execution_name)}/"
    return folder if stage is None else f"{folder}stage-{stage + 1}/"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]
