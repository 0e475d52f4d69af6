"""Layers point down: each folder imports only the folders below it (setup.py's FOLDERS,
bottom first, then the `ernie-sm` command line above them all), the contract is standard
library only, and what the Prepare Lambda and the training image bundle, whole packages,
imports nothing they do not hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ernie_sm.stacks.training_pipeline import LAMBDA_PACKAGES

from tests.cdk_support import ROOT


def layers() -> tuple[str, ...]:
    """setup.py's FOLDERS, read without running setup()."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FOLDERS":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no FOLDERS")


LAYERS = (*layers(), "ernie_sm")


def imports(path: Path, lazy: bool = True) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of the file; only the module-level ones if not lazy."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if lazy else iter(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            yield node.lineno, node.module or ""
            if node.module in ("ernie_sm", *(f"ernie_sm.{layer}" for layer in LAYERS)):
                yield from ((node.lineno, f"{node.module}.{a.name}") for a in node.names)


def folder_of(module: str) -> str | None:
    """The folder an `ernie_sm.<folder>...` module lives in (ernie_sm for the CLI)."""
    parts = module.split(".")
    if parts[0] != "ernie_sm":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "ernie_sm"


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_every_package_folder_is_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("folder", LAYERS)
def test_a_folder_imports_only_the_layers_below_it(folder):
    below = set(LAYERS[: LAYERS.index(folder)])
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources(folder)
        for line, module in imports(path)
        if folder_of(module) not in (None, folder, *below)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_contract_is_standard_library_only():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sources("contract")
        for line, module in imports(path)
        if module.split(".")[0] not in sys.stdlib_module_names and folder_of(module) != "contract"
    ]
    assert not wrong, "\n".join(wrong)


def test_the_lambda_bundle_imports_only_itself_and_the_standard_library():
    folders = {package.split(".")[1] for package in LAMBDA_PACKAGES}
    wrong = []
    for folder in folders:
        for path in sources(folder):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            # extract_shapes reads botocore's model; only the tests and `python -m` call it.
            skipped = {
                node.lineno
                for function in ast.walk(tree)
                if isinstance(function, ast.FunctionDef) and function.name == "extract_shapes"
                for node in ast.walk(function)
                if hasattr(node, "lineno")
            }
            wrong += [
                f"{path.relative_to(ROOT)}:{line} imports {module}"
                for line, module in imports(path)
                if line not in skipped
                and module.split(".")[0] not in sys.stdlib_module_names
                and folder_of(module) not in folders
            ]
    assert not wrong, "\n".join(wrong)


# What the training image installs beside the project: the base image's Paddle and the
# dependencies pyproject.toml gives the image (base, [tokenize] and [serve]), by import name.
IMAGE_THIRD_PARTY = {
    *("paddle", "numpy", "rich", "sagemaker_training", "rjieba", "tokenizers"),
    *("gunicorn", "falcon"),
}


def image_folders() -> set[str]:
    """The packages .dockerignore lets into the build context, whole."""
    allowed = {
        line[1:].strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    return {name for name in allowed if (ROOT / name / "__init__.py").is_file()}


def test_the_image_holds_whole_packages_that_import_only_what_it_installs():
    folders = image_folders()
    assert folders == {"ernie_sm", "contract", "text", "training", "serving"}
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for folder in folders
        for path in sources(folder)
        # The command line imports the other subcommands' modules only when they run.
        for line, module in imports(path, lazy=folder != "ernie_sm")
        if module.split(".")[0] not in sys.stdlib_module_names | IMAGE_THIRD_PARTY
        and folder_of(module) not in folders
    ]
    assert not wrong, "\n".join(wrong)


def test_ernie_sm_from_another_checkout_is_refused_not_mixed(tmp_path):
    """A second clone run with this environment would take its own ernie_sm/ and this
    checkout's subpackages: the import fails and says so instead."""
    other = tmp_path / "other-clone"
    (other / "ernie_sm").mkdir(parents=True)
    (other / "ernie_sm" / "__init__.py").write_text((ROOT / "ernie_sm" / "__init__.py").read_text())
    mixed = subprocess.run(
        [sys.executable, "-c", "import ernie_sm"], cwd=other, capture_output=True, text=True
    )
    assert mixed.returncode == 1
    assert "installed from another checkout; run make in this one" in mixed.stderr
    assert str(other) in mixed.stderr
    alone = subprocess.run(
        [sys.executable, "-c", "import ernie_sm.training.layout"], cwd=ROOT, capture_output=True
    )
    assert alone.returncode == 0, alone.stderr
