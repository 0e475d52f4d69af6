"""Shared fixtures: the released ERNIE 1.0 vocab and data, and a local SageMaker job layout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Before anything imports aws_cdk: jsii runs aws-cdk-lib on the Node.js 22 that
# package.json installs, and nothing in the suite may probe the instance-metadata address.
os.environ["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["CDK_DISABLE_VERSION_CHECK"] = "true"
os.environ["CDK_DISABLE_CLI_TELEMETRY"] = "true"


def _stale_editable_install() -> list[str]:
    """The modules of the checkout that its editable install (a tree of links, made by
    make) lacks: a file added since make ran cannot be imported until it runs again."""
    import ernie_sm

    trees = [Path(p) for p in ernie_sm.__path__ if "__editable__" in p]
    packages = [p.parent for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"]
    modules = [m.relative_to(ROOT) for package in packages for m in package.rglob("*.py")]
    return [
        str(module)
        for tree in trees
        for module in modules
        if module.parts[0] != "ernie_sm" and not (tree / module).exists()
    ]


if _missing := _stale_editable_install():
    pytest.exit(
        f"the editable install lacks {len(_missing)} file(s) added since make ran "
        f"({', '.join(_missing[:3])}): run `make .venv/bin/ernie-sm` (make test does)",
        returncode=4,
    )

from ernie_sm.contract import presets  # noqa: E402
from ernie_sm.training import layout  # noqa: E402


@pytest.fixture(scope="session")
def ernie_vocab() -> Path:
    """The released ERNIE 1.0 vocab, as the package ships it (preset `ernie-1.0`)."""
    return presets.locate("ernie-1.0", ROOT, presets.VOCABS, "vocab")


@pytest.fixture(scope="session")
def ernie_shard() -> Path:
    """200 lines of the original ERNIE demo shard, as released (tests/data/README.md)."""
    return ROOT / "tests" / "data" / "ernie-1.0-demo-sample.gz"


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


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials and no config, metadata service or container credentials."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def cdk_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cloud assembly as `cdk synth` writes it (the rehearsal reads nothing else)."""
    out = tmp_path_factory.mktemp("cdk.out")
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    command = [str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "-o", str(out)]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return out
