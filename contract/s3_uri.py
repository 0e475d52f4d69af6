"""S3 names as S3 defines them (not in SageMaker's model); patterns are used with fullmatch."""

from __future__ import annotations

import re

BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
S3_URI_PATTERN = re.compile(rf"s3://({BUCKET_PATTERN.pattern})/(.+)")
