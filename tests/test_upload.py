"""`ernie-sm upload` against moto's in-memory S3; nothing reaches the network."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from ernie_sm.dataprep import upload
from ernie_sm.dataprep.upload import UploadError, upload_dataset
from moto import mock_aws

BUCKET = "ernie-data"
PREFIX = "datasets/tiny"
SHARDS = ["train/part-00000.gz", "train/part-00001.gz", "valid/part-00000.gz"]
FILELISTS = ["train/train_filelist", "valid/valid_filelist"]
DATA = [*SHARDS, "train/vocab.txt", "summary.json"]


@pytest.fixture
def s3(aws_env):
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    for name in SHARDS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(gzip.compress(f"1 2 3;0 0 0;{name}\n".encode()))
    (root / "train" / "vocab.txt").write_text("[PAD]\t0\n[CLS]\t1\n", encoding="utf-8")
    (root / "train" / "train_filelist").write_text("part-00000.gz\t0.15\npart-00001.gz\t0.15\n")
    (root / "valid" / "valid_filelist").write_text("part-00000.gz\t0.15\n")
    (root / "summary.json").write_text(json.dumps({"shards": 3}))
    return root


class Recorder:
    """The real client, with its uploads and deletes logged in the order they happen."""

    def __init__(self, client) -> None:
        self._client = client
        self.events: list[tuple[str, str]] = []

    def upload_file(self, Filename, Bucket, Key, **kwargs):
        self.events.append(("start", Key))
        self._client.upload_file(Filename, Bucket, Key, **kwargs)
        self.events.append(("end", Key))

    def delete_objects(self, **kwargs):
        self.events += [("delete", item["Key"]) for item in kwargs["Delete"]["Objects"]]
        return self._client.delete_objects(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)

    def uploaded(self) -> set[str]:
        return {key.removeprefix(PREFIX + "/") for event, key in self.events if event == "end"}


def keys(s3) -> set[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET)
    return {item["Key"] for item in listing.get("Contents", [])}


def run(root: Path, client, **kwargs) -> upload.UploadReport:
    return upload_dataset(root, BUCKET, PREFIX, s3_client=client, progress=False, **kwargs)


def test_uploads_every_file_with_checksum_and_encryption(s3, dataset):
    report = run(dataset, s3)

    assert keys(s3) == {f"{PREFIX}/{name}" for name in DATA + FILELISTS}
    for name in DATA + FILELISTS:
        local = (dataset / name).read_bytes()
        head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")
        assert head["Metadata"] == {"sha256": hashlib.sha256(local).hexdigest()}
        assert head["ServerSideEncryption"] == "AES256"
        assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}")["Body"].read() == local
    assert (report.uploaded, report.skipped) == (len(DATA) + 2, 0)
    assert report.bytes_uploaded == sum((dataset / n).stat().st_size for n in DATA + FILELISTS)
    assert report.channels == {
        "train": f"s3://{BUCKET}/{PREFIX}/train/",
        "valid": f"s3://{BUCKET}/{PREFIX}/valid/",
    }


def test_filelists_start_only_after_every_data_file_finished(s3, dataset):
    recorder = Recorder(s3)
    run(dataset, recorder)

    events = recorder.events
    last_data_end = max(
        i
        for i, (event, key) in enumerate(events)
        if event == "end" and not key.endswith("filelist")
    )
    filelist_starts = [
        i for i, (event, key) in enumerate(events) if event == "start" and key.endswith("filelist")
    ]
    assert len(filelist_starts) == 2
    assert min(filelist_starts) > last_data_end
    assert recorder.uploaded() == set(DATA + FILELISTS)


def test_kms_key_selects_sse_kms_and_changing_encryption_reuploads(s3, dataset):
    run(dataset, s3)
    report = run(dataset, s3, kms_key_id="alias/ernie")

    assert report.uploaded == len(DATA) + 2
    head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/train/part-00000.gz")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", "alias/ernie")


def test_second_upload_skips_everything(s3, dataset):
    run(dataset, s3)
    recorder = Recorder(s3)
    report = run(dataset, recorder)

    assert (report.uploaded, report.skipped, report.bytes_uploaded) == (0, len(DATA) + 2, 0)
    assert recorder.events == []


def test_changed_shard_alone_is_reuploaded_and_filelists_are_retracted_first(s3, dataset):
    run(dataset, s3)
    shard = dataset / "train" / "part-00001.gz"
    shard.write_bytes(gzip.compress(b"4 5 6;0 0 0;changed\n"))
    recorder = Recorder(s3)
    report = run(dataset, recorder)

    # Data: only the changed shard. The filelists go away first and come back last.
    assert recorder.uploaded() == {"train/part-00001.gz", *FILELISTS}
    assert (report.uploaded, report.skipped) == (3, len(DATA) - 1)
    deletes = [i for i, (event, _) in enumerate(recorder.events) if event == "delete"]
    shard_start = recorder.events.index(("start", f"{PREFIX}/train/part-00001.gz"))
    assert len(deletes) == 2 and max(deletes) < shard_start
    head = s3.head_object(Bucket=BUCKET, Key=f"{PREFIX}/train/part-00001.gz")
    assert head["Metadata"]["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert keys(s3) == {f"{PREFIX}/{name}" for name in DATA + FILELISTS}


def delete_before_lists_return(recorder: Recorder, gone: set[str]) -> None:
    """`gone` was deleted, each after both filelists went and before either came back."""
    events = recorder.events
    deleted = {key for event, key in events if event == "delete"}
    assert {f"{PREFIX}/{name}" for name in FILELISTS} | gone <= deleted
    last_withdrawal = max(events.index(("delete", f"{PREFIX}/{name}")) for name in FILELISTS)
    first_return = min(
        i for i, (event, key) in enumerate(events) if key.endswith("filelist") and event == "start"
    )
    for key in gone:
        assert last_withdrawal < events.index(("delete", key)) < first_return


def test_reupload_without_valid_removes_the_old_valid_channel(s3, dataset):
    run(dataset, s3)
    for path in (dataset / "valid").iterdir():
        path.unlink()
    (dataset / "valid").rmdir()
    recorder = Recorder(s3)
    report = run(dataset, recorder)

    kept = [name for name in DATA + FILELISTS if not name.startswith("valid/")]
    assert keys(s3) == {f"{PREFIX}/{name}" for name in kept}
    assert report.channels == {"train": f"s3://{BUCKET}/{PREFIX}/train/"}
    assert (report.uploaded, report.deleted) == (1, 2)  # train_filelist back; valid/ gone
    delete_before_lists_return(recorder, {f"{PREFIX}/valid/part-00000.gz"})


def test_fewer_shards_leave_nothing_stale_and_neighbours_alone(s3, dataset, monkeypatch):
    neighbours = [
        "datasets/tinyx/train/part-00001.gz",  # a prefix sharing our prefix's beginning
        "datasets/tiny2/valid/valid_filelist",
        f"{PREFIX}/summary-notes.txt",  # under the prefix, outside both channels
        f"{PREFIX}/trainer/part-00001.gz",
    ]
    for key in neighbours:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    run(dataset, s3)
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/train/part-00007.gz", Body=b"older run")
    (dataset / "train" / "part-00001.gz").unlink()
    (dataset / "train" / "train_filelist").write_text("part-00000.gz\t0.15\n")
    monkeypatch.setattr(upload, "DELETE_BATCH", 1)  # one request a key: batching is exercised
    recorder = Recorder(s3)
    report = run(dataset, recorder)

    kept = [name for name in DATA + FILELISTS if name != "train/part-00001.gz"]
    assert keys(s3) == {f"{PREFIX}/{name}" for name in kept} | set(neighbours)
    assert report.deleted == 2 and recorder.uploaded() == set(FILELISTS)
    gone = {f"{PREFIX}/train/part-00001.gz", f"{PREFIX}/train/part-00007.gz"}
    delete_before_lists_return(recorder, gone)


def deny(status: int, parsed: dict):
    """A before-call handler answering for S3 as an S3 that refuses would."""

    def answer(**kwargs):
        return AWSResponse(f"https://{BUCKET}.s3.amazonaws.com/", status, {}, None), parsed

    return answer


def test_refused_listing_names_the_channel_and_the_permission(s3, dataset):
    error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
    s3.meta.events.register("before-call.s3.ListObjectsV2", deny(403, error))
    recorder = Recorder(s3)
    with pytest.raises(
        UploadError, match=rf"access denied to s3://{BUCKET}/{PREFIX}/train/: .*s3:ListBucket"
    ):
        run(dataset, recorder)
    assert recorder.events == []


def test_refused_delete_names_the_key(s3, dataset):
    run(dataset, s3)
    (dataset / "train" / "part-00001.gz").write_bytes(b"changed")
    refused = {"Key": f"{PREFIX}/train/train_filelist", "Code": "AccessDenied", "Message": "no"}
    s3.meta.events.register("before-call.s3.DeleteObjects", deny(200, {"Errors": [refused]}))
    with pytest.raises(
        UploadError, match=rf"access denied to s3://{BUCKET}/{PREFIX}/train/train_filelist:"
    ):
        run(dataset, s3)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: (root / "train" / "train_filelist").unlink(), "train_filelist is missing"),
        (lambda root: (root / "train" / "vocab.txt").unlink(), "vocab.txt is missing"),
        (lambda root: (root / "train" / "part-00001.gz").unlink(), "part-00001.gz does not exist"),
        (lambda root: (root / "valid" / "valid_filelist").unlink(), "valid_filelist is missing"),
        (
            lambda root: (root / "train" / "train_filelist").write_text("../summary.json\t0.15\n"),
            "outside",
        ),
    ],
)
def test_incomplete_dataset_uploads_nothing(s3, dataset, breakage, message):
    breakage(dataset)
    recorder = Recorder(s3)
    with pytest.raises(UploadError, match=message):
        run(dataset, recorder)
    assert recorder.events == []
    assert keys(s3) == set()


def test_missing_dataset_folder_is_named(s3, tmp_path):
    with pytest.raises(UploadError, match=r"dataset folder .*nowhere does not exist"):
        run(tmp_path / "nowhere", s3)


def test_missing_bucket_is_named(s3, dataset):
    with pytest.raises(UploadError, match="bucket 'no-such-bucket' does not exist"):
        upload_dataset(dataset, "no-such-bucket", PREFIX, s3_client=s3, progress=False)


def test_access_denied_names_bucket_and_key(s3, dataset):
    error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
    s3.meta.events.register("before-call.s3.PutObject", deny(403, error))
    with pytest.raises(UploadError, match=rf"access denied to s3://{BUCKET}/{PREFIX}/\S+"):
        run(dataset, s3)
    assert keys(s3) == set()


def test_missing_credentials_say_how_to_configure(aws_env, monkeypatch, dataset):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with mock_aws(config={"core": {"mock_credentials": False}}):
        client = boto3.client("s3")
        with pytest.raises(UploadError, match=rf"no AWS credentials .*s3://{BUCKET}.*--profile"):
            run(dataset, client)


def test_multipart_threshold_and_concurrency_reach_the_transfer(s3, dataset):
    configs = []

    class Spy(Recorder):
        def upload_file(self, Filename, Bucket, Key, **kwargs):
            configs.append(kwargs["Config"])
            super().upload_file(Filename, Bucket, Key, **kwargs)

    run(dataset, Spy(s3))
    assert {(c.multipart_threshold, c.max_concurrency) for c in configs} == {(64 * 1024**2, 4)}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ernie-sm")
    upload.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_uploads_to_default_prefix_and_prints_channels(s3, dataset, capsys):
    args = parse(["upload", str(dataset), "--bucket", BUCKET, "--region", "us-east-1"])
    assert args.run(args) == 0

    out = capsys.readouterr().out
    assert f"train: s3://{BUCKET}/datasets/tiny/train/" in out.splitlines()
    assert f"valid: s3://{BUCKET}/datasets/tiny/valid/" in out.splitlines()
    assert "uploaded 7 file(s)" in out
    assert f"datasets/tiny/{FILELISTS[0]}" in keys(s3)
    # What an execution input takes: the key prefix, not a channel's s3:// URI.
    assert out.splitlines()[-1] == (
        "start an execution on it: ernie-sm start --dataset datasets/tiny  "
        '(input: "dataset": "datasets/tiny")'
    )
    assert capsys.readouterr().err == ""


def test_cli_warns_that_executions_do_not_read_a_prefix_outside_datasets(s3, dataset, capsys):
    args = parse(["upload", str(dataset), "--bucket", BUCKET, "--prefix", "corpora/tiny"])
    assert args.run(args) == 0
    captured = capsys.readouterr()
    assert "ernie-sm start --dataset corpora/tiny" in captured.out
    assert "the stack's executions read datasets under datasets/ only" in captured.err
    assert "--prefix datasets/<name>" in captured.err


def test_cli_reports_bad_dataset_with_exit_code_2(s3, dataset, capsys):
    (dataset / "train" / "train_filelist").unlink()
    args = parse(["upload", str(dataset), "--bucket", BUCKET, "--prefix", "x/y"])
    assert args.run(args) == 2

    captured = capsys.readouterr()
    assert "train_filelist is missing" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert keys(s3) == set()


def test_cli_reports_unknown_profile_with_exit_code_2(aws_env, dataset, capsys):
    args = parse(["upload", str(dataset), "--bucket", BUCKET, "--profile", "nobody"])
    assert args.run(args) == 2
    assert "nobody" in capsys.readouterr().err
