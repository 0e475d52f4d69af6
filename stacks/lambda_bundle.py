"""A Lambda function's code made of whole packages of this project, laid out by import name.

The repository's folders are subpackages of `ernie_sm` only once installed (setup.py maps
them), so the asset is assembled, not copied as one folder: each package's folder is
found where Python imports it from and written at `ernie_sm/<package>/`, with
`ernie_sm/__init__.py` above it. Nothing else goes in, and Docker is never needed.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

NOT_BUNDLED = ("__pycache__", ".pyc")


def package_files(packages: Sequence[str]) -> dict[str, Path]:
    """{path in the bundle: source file} for every file of the packages (`ernie_sm.pipeline`),
    with the `__init__` of each package above them."""
    files: dict[str, Path] = {}
    for package in packages:
        parts = package.split(".")
        for depth in range(1, len(parts)):
            parent = find_folder(".".join(parts[:depth]))
            files["/".join([*parts[:depth], "__init__.py"])] = parent / "__init__.py"
        folder = find_folder(package)
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not any(part.endswith(NOT_BUNDLED) for part in relative.parts):
                files["/".join([*parts, *relative.parts])] = path
    return files


def find_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package} is not a package that can be bundled")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


@jsii.implements(ILocalBundling)
class _CopyFiles:
    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        for target, source in self.files.items():
            path = Path(output_dir, target)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
        return True


def lambda_code(packages: Sequence[str]) -> lambda_.Code:
    """The asset: exactly these packages, hashed by what was bundled."""
    files = package_files(packages)
    source = next(iter(files.values())).parent  # any folder: the hash is the output's
    return lambda_.Code.from_asset(
        str(source),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            # Never pulled: the local bundling always succeeds.
            image=DockerImage.from_registry("scratch"),
            local=_CopyFiles(files),
        ),
    )
