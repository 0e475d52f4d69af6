"""serving.json: what the export writes is what the server reads; a bad one names its fault."""

from __future__ import annotations

import json

import pytest
from ernie_sm.contract.errors import ConfigError
from ernie_sm.contract.serving import (
    FEATURE_EXTRACTION,
    FILL_MASK,
    MANIFEST,
    TASK_ENV,
    TEXT_CLASSIFICATION,
    ServingManifest,
    read_manifest,
    served_task,
)


@pytest.fixture
def root(tmp_path):
    (tmp_path / "serving").mkdir()
    for name in ("fill_mask", "features", "classifier"):
        (tmp_path / "serving" / f"{name}.pdiparams").write_bytes(b"weights")
    (tmp_path / "vocab.txt").write_text("[PAD]\t0\n")
    return tmp_path


PRETRAINED = {FILL_MASK: "serving/fill_mask", FEATURE_EXTRACTION: "serving/features"}


def test_written_manifest_reads_back(root):
    written = ServingManifest(models=PRETRAINED, max_seq_len=128)
    written.write(root)
    assert read_manifest(root) == written
    classifier = ServingManifest(
        models={TEXT_CLASSIFICATION: "serving/classifier"}, labels=("sport", "music")
    )
    classifier.write(root)
    assert read_manifest(root).labels == ("sport", "music")


def edit(root, **changes):
    raw = {**json.loads(ServingManifest(models=PRETRAINED).write(root).read_text()), **changes}
    (root / MANIFEST).write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": 2}, r"format 2, this server reads 1"),
        ({"extra": 1}, r"unknown fields extra"),
        ({"models": {}}, r"models must map at least one task"),
        ({"models": {"summarization": "serving/features"}}, r"task 'summarization' is not one"),
        ({"models": {FILL_MASK: "serving/missing"}}, r"fill-mask's model 'serving/missing'"),
        ({"vocab": "other.txt"}, r"vocab 'other.txt' is missing"),
        ({"models": {TEXT_CLASSIFICATION: "serving/classifier"}}, r"needs its labels"),
        ({"max_seq_len": 2}, r"max_seq_len must be an integer of at least 3"),
        ({"max_top_k": 0}, r"max_top_k must be an integer of at least 1"),
    ],
)
def test_a_bad_manifest_names_its_fault(root, changes, message):
    edit(root, **changes)
    with pytest.raises(ConfigError, match=message) as error:
        read_manifest(root)
    assert str(root) in str(error.value)


def test_an_archive_without_a_manifest_says_it_was_not_exported_for_serving(tmp_path):
    with pytest.raises(ConfigError, match=r"holds no serving.json: the model was not exported"):
        read_manifest(tmp_path)


def test_the_served_task_is_the_archives_unless_overridden(root):
    pretrained = ServingManifest(models=PRETRAINED)
    assert served_task(pretrained, None) == FILL_MASK
    assert served_task(pretrained, FEATURE_EXTRACTION) == FEATURE_EXTRACTION
    with pytest.raises(ConfigError, match=rf"{TASK_ENV}='text-classification': the model serves"):
        served_task(pretrained, TEXT_CLASSIFICATION)
    features = ServingManifest(models={FEATURE_EXTRACTION: "serving/features"})
    assert served_task(features, None) == FEATURE_EXTRACTION
    two = ServingManifest(
        models={FEATURE_EXTRACTION: "f", TEXT_CLASSIFICATION: "c"}, labels=("a", "b")
    )
    with pytest.raises(ConfigError, match=rf"set {TASK_ENV} to one"):
        served_task(two, None)
