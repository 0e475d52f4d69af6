"""This project's limits on an execution input; SageMaker's own come from its API model
(sagemaker_api)."""

from __future__ import annotations

import re

MAX_HOURS = 28 * 24  # SageMaker's longest training run
MAX_INSTANCES = 16
MAX_VOLUME_GB = 16384
MAX_STAGES = 8
MAX_STEPS = 2**31 - 1
# A job's hyperparameters as JSON text (UTF-8 bytes of the names and values). Step Functions
# holds each state's input and output to 256 KiB (262,144 bytes; Step Functions quotas, and
# States.DataLimitExceeded past it, which no Catch takes): a job's request and, after it,
# its DescribeTrainingJob both carry them, beside the stages so far. SageMaker alone would
# take 100 values of 2500 characters, some 270 KB. tests/test_state_payloads.py proves that
# no input this allows makes any state's data too large.
MAX_HYPERPARAMETERS_BYTES = 16 * 1024
# The longest message of an ExecutionInputError. Lambda hands the state machine its error
# as a JSON Cause (message, type, stack trace), which the state machine parses; Step
# Functions holds a Cause to 32,768 characters, and one cut short would no longer parse.
MAX_MESSAGE = 8192
# S3 key prefixes (datasets, the stack's folders): characters S3 needs no escaping for.
MAX_PREFIX = 512
PREFIX_CHARACTERS = "A-Za-z0-9!_.*'()=@+-"
PREFIX_PATTERN = re.compile(rf"[/{PREFIX_CHARACTERS}]+")  # used with fullmatch


def valid_key_prefix(prefix: str) -> bool:
    """Whether `prefix` (no leading or trailing slash) is a key prefix of single slashes."""
    return (
        0 < len(prefix) <= MAX_PREFIX
        and bool(PREFIX_PATTERN.fullmatch(prefix))
        and all(part not in ("", ".", "..") for part in prefix.split("/"))
    )
