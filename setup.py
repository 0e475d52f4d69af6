"""Maps the repository's top-level folders onto the one import namespace `ernie_sm`.

pyproject.toml holds everything else. Only the folders present are packaged: the training
image's build context has ernie_sm/, contract/, text/, training/ and serving/ alone, so the
image installs the trainer, `ernie-sm evaluate`, `ernie-sm serve` and nothing more.
"""

from pathlib import Path

from setuptools import find_packages, setup

# Bottom layer first; each imports only the ones before it (tests/test_layers.py).
FOLDERS = (
    "contract",
    "text",
    "training",
    "dataprep",
    "weights",
    "serving",
    "pipeline",
    "stacks",
    "operations",
    "rehearsal",
)
present = [folder for folder in FOLDERS if Path(folder, "__init__.py").is_file()]
setup(
    package_dir={"ernie_sm": "ernie_sm", **{f"ernie_sm.{f}": f for f in present}},
    packages=[
        "ernie_sm",
        *(f"ernie_sm.{f}" for f in present),
        *(f"ernie_sm.{f}.{sub}" for f in present for sub in find_packages(f)),
    ],
)
