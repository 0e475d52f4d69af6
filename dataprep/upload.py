"""`ernie-sm upload`: put a prepared dataset into S3 as the training job's two channels.

A dataset is `<dir>/train/` (vocab.txt, train_filelist, shards), optionally `<dir>/valid/`
(valid_filelist, shards) and `<dir>/summary.json`. The job trusts a channel only once its
filelist exists, so filelists go up last, after every shard they name; when a re-upload
changes data, the filelists already in S3 are deleted first so the half-updated dataset
never looks complete. A channel is everything under `<prefix>/train/` or
`<prefix>/valid/`, so objects there that the dataset lacks (shards of a larger dataset, a
valid channel it no longer has) are deleted too, after the filelists. Objects carry their
SHA-256 in metadata, so unchanged files are skipped on the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ernie_sm.contract import bucket_layout
from ernie_sm.contract.errors import DataError
from ernie_sm.contract.filelist import read_filelist
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

FILELISTS = {"train": "train_filelist", "valid": "valid_filelist"}
VOCAB = "vocab.txt"
SUMMARY = "summary.json"
MULTIPART_THRESHOLD = 64 * 1024 * 1024
CONCURRENCY = 4  # files in flight at once, and threads per multipart file
DELETE_BATCH = 1000  # keys per DeleteObjects request, S3's limit
_HASH_CHUNK = 1024 * 1024
_MISSING_KEY_CODES = {"404", "NoSuchKey", "NotFound"}
_MISSING_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "Forbidden"}


class UploadError(Exception):
    """A dataset or S3 problem, with a message meant for the user."""


@dataclass
class UploadReport:
    """What an upload did; `channels` maps channel name to its S3 URI (ends with '/')."""

    uploaded: int = 0
    skipped: int = 0
    deleted: int = 0  # objects under the channels that were not part of the dataset
    bytes_uploaded: int = 0
    channels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _File:
    path: Path
    key: str
    size: int
    sha256: str


def default_prefix(dataset_dir: Path) -> str:
    """`datasets/<folder name>`; resolved so that `.` names the real folder."""
    return f"{bucket_layout.DATASETS}/{Path(dataset_dir).resolve().name}"


def check_dataset(dataset_dir: Path) -> list[str]:
    """Raise UploadError unless the dataset is complete locally; return its channel names."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise UploadError(f"dataset folder {root} does not exist")
    if not (root / "train").is_dir():
        raise UploadError(
            f"{root} has no train/ folder (expected the output of `ernie-sm prepare`)"
        )
    if not (root / "train" / VOCAB).is_file():
        raise UploadError(
            f"{root / 'train' / VOCAB} is missing: the job reads the vocab from train/"
        )
    channels = ["train"] + (["valid"] if (root / "valid").is_dir() else [])
    for channel in channels:
        _check_filelist(root / channel, FILELISTS[channel])
    return channels


def _check_filelist(channel: Path, name: str) -> None:
    path = channel / name
    if not path.is_file():
        raise UploadError(f"{path} is missing: the {channel.name} channel needs its filelist")
    try:
        shards = read_filelist(path)
    except DataError as e:
        raise UploadError(str(e)) from None
    inside = channel.resolve()
    for shard in shards:
        # The job only receives the channel folder, so a shard outside it would be lost.
        if not shard.path.resolve().is_relative_to(inside):
            raise UploadError(f"{path} names {shard.path}, which is outside {channel}")


def _local_files(root: Path, channels: list[str]) -> tuple[list[Path], list[Path]]:
    """(data files, filelists), each in a stable order."""
    filelists = [root / channel / FILELISTS[channel] for channel in channels]
    data = [
        path
        for channel in channels
        for path in sorted((root / channel).rglob("*"))
        if path.is_file() and path not in filelists
    ]
    if (root / SUMMARY).is_file():
        data.append(root / SUMMARY)
    return data, filelists


def _sha256(path: Path, advance: Callable[[int], None]) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def _error_message(error: Exception, bucket: str, key: str | None) -> str:
    """A user-facing message for a boto3/botocore failure on s3://bucket/key."""
    from botocore.exceptions import ClientError, NoCredentialsError

    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(error, NoCredentialsError):
        return (
            f"no AWS credentials found while accessing {where}: configure them "
            "(`aws configure`, `aws sso login`, AWS_PROFILE or --profile) and retry"
        )
    # upload_file wraps the ClientError in S3UploadFailedError (chained as __context__).
    cause = error if isinstance(error, ClientError) else error.__context__
    if not isinstance(cause, ClientError):
        return f"S3 request for {where} failed: {error}"
    code = str(cause.response.get("Error", {}).get("Code", ""))
    if code == "NoSuchBucket" or (key is None and code in _MISSING_BUCKET_CODES):
        return f"bucket {bucket!r} does not exist (while accessing {where}); create it or pass --bucket"
    if code in _DENIED_CODES:
        return (
            f"access denied to {where}: the credentials need s3:ListBucket on the bucket, and "
            "s3:PutObject, s3:GetObject and s3:DeleteObject on the prefix (and KMS key use "
            "with --kms-key-id)"
        )
    return f"S3 request for {where} failed: {cause}"


@contextlib.contextmanager
def aws_errors(bucket: str, key: str | None = None) -> Iterator[None]:
    """Turn boto3/botocore failures into UploadError naming the bucket and key."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as e:
        raise UploadError(_error_message(e, bucket, key)) from e


def _check_bucket(s3: Any, bucket: str) -> None:
    """Fail early on a missing bucket or missing credentials, before any transfer."""
    from botocore.exceptions import ClientError

    with aws_errors(bucket):
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as e:
            # 403 may only mean no s3:ListBucket; the object calls will tell for sure.
            if str(e.response.get("Error", {}).get("Code")) not in _DENIED_CODES:
                raise


def _head(s3: Any, bucket: str, key: str) -> dict | None:
    """The object's metadata, or None if it is absent (or unreadable without s3:ListBucket)."""
    from botocore.exceptions import ClientError

    with aws_errors(bucket, key):
        try:
            return s3.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in _MISSING_KEY_CODES | _DENIED_CODES:
                return None
            raise


def _is_current(head: dict | None, file: _File, sse: str) -> bool:
    if head is None:
        return False
    return head.get("Metadata", {}).get("sha256") == file.sha256 and (
        head.get("ServerSideEncryption") == sse
    )


class _Uploader:
    """One upload run: the client, where objects go, how they are encrypted, and progress."""

    def __init__(
        self, s3: Any, bucket: str, prefix: str, kms_key_id: str | None, progress: Progress
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        self.s3, self.bucket, self.prefix, self.progress = s3, bucket, prefix, progress
        self.sse = "aws:kms" if kms_key_id else "AES256"
        self.sse_args = {"ServerSideEncryption": self.sse}
        if kms_key_id:
            self.sse_args["SSEKMSKeyId"] = kms_key_id
        self.config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_THRESHOLD,
            max_concurrency=CONCURRENCY,
        )

    def describe(self, root: Path, paths: list[Path]) -> list[tuple[_File, dict | None]]:
        """Hash each file and look up its object: (file, head or None)."""
        task = self.progress.add_task("checking", total=sum(p.stat().st_size for p in paths))
        described = []
        for path in paths:
            sha = _sha256(path, lambda n: self.progress.advance(task, n))
            key = f"{self.prefix}/{path.relative_to(root).as_posix()}"
            file = _File(path=path, key=key, size=path.stat().st_size, sha256=sha)
            described.append((file, _head(self.s3, self.bucket, key)))
        return described

    def channel_objects(self) -> set[str]:
        """Keys under the prefix's channel folders: the job downloads every one of them."""
        keys: set[str] = set()
        paginator = self.s3.get_paginator("list_objects_v2")
        for channel in FILELISTS:
            folder = f"{self.prefix}/{channel}/"  # the slash keeps datasets/ab out of datasets/a
            with aws_errors(self.bucket, folder):
                for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
                    keys.update(item["Key"] for item in page.get("Contents", []))
        return keys

    def delete(self, keys: list[str]) -> None:
        """Delete `keys`, a batch a request; a key S3 refuses raises UploadError."""
        from botocore.exceptions import ClientError

        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with aws_errors(self.bucket, batch[0]):
                response = self.s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            if errors := response.get("Errors"):  # refused keys, in an answer that is a 200
                error = ClientError({"Error": errors[0]}, "DeleteObjects")
                raise UploadError(_error_message(error, self.bucket, errors[0].get("Key")))

    def upload(self, file: _File, task: Any) -> None:
        with aws_errors(self.bucket, file.key):
            self.s3.upload_file(
                str(file.path),
                self.bucket,
                file.key,
                ExtraArgs={**self.sse_args, "Metadata": {"sha256": file.sha256}},
                Callback=lambda n: self.progress.advance(task, n),
                Config=self.config,
            )

    def upload_all(self, files: list[_File], task: Any) -> None:
        """Upload concurrently; return only once every file is in S3, or raise the first failure."""
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            futures = [pool.submit(self.upload, file, task) for file in files]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def upload_dataset(
    dataset_dir: Path,
    bucket: str,
    prefix: str,
    s3_client: Any = None,
    kms_key_id: str | None = None,
    progress: bool = True,
) -> UploadReport:
    """Upload a prepared dataset to s3://bucket/prefix/; data first, filelists last.

    Objects under prefix/train/ and prefix/valid/ that are not part of the dataset are
    deleted, so each channel is exactly the dataset's.

    Raises UploadError (nothing uploaded) if the dataset is incomplete, and UploadError for
    AWS failures. `s3_client` defaults to `boto3.client("s3")`.
    """
    root, prefix = Path(dataset_dir), prefix.strip("/")
    if not prefix:
        raise UploadError("the S3 prefix must not be empty")
    channels = check_dataset(root)
    if s3_client is None:
        s3_client = make_s3_client()
    _check_bucket(s3_client, bucket)
    data, filelists = _local_files(root, channels)
    with _progress(progress) as bar:
        uploader = _Uploader(s3_client, bucket, prefix, kms_key_id, bar)
        described = uploader.describe(root, data + filelists)  # one hashing pass, one bar
        existing = uploader.channel_objects()
        report = _sync(uploader, described[: len(data)], described[len(data) :], existing)
    report.channels = {c: f"s3://{bucket}/{prefix}/{c}/" for c in channels}
    return report


def _sync(
    uploader: _Uploader,
    data: list[tuple[_File, dict | None]],
    filelists: list[tuple[_File, dict | None]],
    existing: set[str],
) -> UploadReport:
    """Make the channels hold exactly the dataset, never looking complete before they do."""
    extra = sorted(existing - {f.key for f, _ in data + filelists})
    stale_data = [f for f, head in data if not _is_current(head, f, uploader.sse)]
    if stale_data or extra:
        # Retract every filelist in S3 first (a valid one the dataset no longer has too):
        # until the new ones land, the dataset is incomplete. Only then go the objects it lacks.
        lists = {f"{uploader.prefix}/{c}/{name}" for c, name in FILELISTS.items()}
        uploader.delete(sorted(existing & lists))
        uploader.delete([key for key in extra if key not in lists])
        stale_lists = [f for f, _ in filelists]
    else:
        stale_lists = [f for f, head in filelists if not _is_current(head, f, uploader.sse)]
    stale = stale_data + stale_lists
    task = uploader.progress.add_task("uploading", total=sum(f.size for f in stale))
    uploader.upload_all(stale_data, task)
    for file in stale_lists:  # one at a time, after all data: the job's completeness marker
        uploader.upload(file, task)
    return UploadReport(
        uploaded=len(stale),
        skipped=len(data) + len(filelists) - len(stale),
        deleted=len(extra),
        bytes_uploaded=sum(f.size for f in stale),
    )


def _progress(enabled: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
    )


def make_s3_client(region: str | None = None, profile: str | None = None) -> Any:
    """An S3 client from the default credential chain, or from a named profile."""
    try:
        import boto3
    except ImportError:
        raise UploadError("boto3 is not installed: pip install 'ernie-sm[prepare]'") from None
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(profile_name=profile, region_name=region).client("s3")
    except BotoCoreError as e:  # e.g. ProfileNotFound
        raise UploadError(f"cannot create an S3 client: {e}") from None


def _format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    """The `upload` subcommand: 0 on success, 2 with a message on stderr on failure."""
    dataset_dir = Path(args.dataset_dir)
    prefix = args.prefix if args.prefix is not None else default_prefix(dataset_dir)
    try:
        s3 = make_s3_client(args.region, args.profile)
        report = upload_dataset(
            dataset_dir, args.bucket, prefix, s3, args.kms_key_id, progress=not args.no_progress
        )
    except UploadError as e:
        print(f"ernie-sm upload: error: {e}", file=sys.stderr)
        return 2
    print(
        f"uploaded {report.uploaded} file(s) ({_format_bytes(report.bytes_uploaded)}), "
        f"skipped {report.skipped} already in S3, deleted {report.deleted} not in the dataset"
    )
    for channel, uri in report.channels.items():
        print(f"{channel}: {uri}")
    # What an execution input takes is the key prefix, not the channels' URIs.
    print(
        f'start an execution on it: ernie-sm start --dataset {prefix}  (input: "dataset": "{prefix}")'
    )
    if not prefix.startswith(f"{bucket_layout.DATASETS}/"):
        print(
            f"note: the stack's executions read datasets under {bucket_layout.DATASETS}/ only: "
            f"upload with --prefix {bucket_layout.DATASETS}/<name> to train on it",
            file=sys.stderr,
        )
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register `upload` on the CLI's subcommands."""
    parser = commands.add_parser(
        "upload",
        help="upload a prepared dataset to S3 as the training job's train/valid channels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", help="output of `ernie-sm prepare`")
    parser.add_argument("--bucket", required=True, help="S3 bucket to upload to")
    parser.add_argument("--prefix", help="key prefix (default: datasets/<DATASET_DIR name>)")
    parser.add_argument("--region", help="AWS region of the bucket (default: from the profile)")
    parser.add_argument("--profile", help="AWS named profile (default: the credential chain)")
    parser.add_argument("--kms-key-id", help="encrypt with this KMS key (default: SSE-S3 AES256)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
