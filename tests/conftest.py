"""Shared fixtures: a local SageMaker job layout with a synthetic dataset and a tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Before anything imports aws_cdk: jsii runs aws-cdk-lib on the Node.js 22 that
# package.json installs, and nothing in the suite may probe the instance-metadata address.
os.environ["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["CDK_DISABLE_VERSION_CHECK"] = "true"
os.environ["CDK_DISABLE_CLI_TELEMETRY"] = "true"

from training import layout  # noqa: E402


@pytest.fixture(scope="session")
def reference() -> Path:
    """The original ERNIE vocab, config and demo shard (shared/ beside the repository)."""
    path = Path(
        os.environ.get(
            "ERNIE_REFERENCE_DIR",
            Path(__file__).resolve().parents[2] / "shared" / "ernie-reference",
        )
    )
    assert path.is_dir(), f"ERNIE reference data not found at {path}; set ERNIE_REFERENCE_DIR"
    return path


@pytest.fixture
def sm_env(monkeypatch: pytest.MonkeyPatch):
    """Point the container contract at a folder, with no SM_* variables leaking in or out."""
    before = {k: v for k, v in os.environ.items() if k.startswith("SM_")}

    def use(base: Path) -> Path:
        for key in [k for k in os.environ if k.startswith("SM_")]:
            del os.environ[key]
        monkeypatch.setenv(layout.BASE_DIR_ENV, str(base))
        return base

    yield use
    for key in [k for k in os.environ if k.startswith("SM_")]:
        del os.environ[key]
    os.environ.update(before)
