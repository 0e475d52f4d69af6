"""A Lambda function's code made of some modules of this project, laid out by import name.

The repository's folders are subpackages of `ernie_sm` only once installed (setup.py maps
them), so the asset is assembled, not copied as a folder: each module's file is found
where Python imports it from and written at `ernie_sm/.../<module>.py`, with the package
`__init__` files above it. Nothing else goes in, and Docker is never needed.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Sequence
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_


def module_files(modules: Sequence[str], data: Sequence[str] = ()) -> dict[str, Path]:
    """{path in the bundle: source file} for the modules (with their packages) and the data
    files (`package/file` in import-name form, e.g. `ernie_sm.pipeline/model.json`)."""
    files: dict[str, Path] = {}
    for module in modules:
        parts = module.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise ValueError(f"{name} cannot be found to bundle")
            origin = Path(spec.origin)
            target = "/".join(parts[:depth]) + (
                "/__init__.py" if origin.name == "__init__.py" else ".py"
            )
            files[target] = origin
    for item in data:
        package, _, file_name = item.partition("/")
        spec = importlib.util.find_spec(package)
        folder = Path(next(iter(spec.submodule_search_locations)))
        files["/".join([*package.split("."), file_name])] = folder / file_name
    return files


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


def lambda_code(modules: Sequence[str], data: Sequence[str] = ()) -> lambda_.Code:
    """The asset: exactly these modules and data files, hashed by what was bundled."""
    files = module_files(modules, data)
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
