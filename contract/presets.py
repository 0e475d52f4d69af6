"""Files shipped in the package that a setting may name instead of a path (`ernie-1.0-base`)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ernie_sm.contract.errors import ConfigError


@dataclass(frozen=True)
class PresetKind:
    package: str  # the package whose folder holds the files
    folder: str
    suffix: str
    names: tuple[str, ...]


CONFIGS = PresetKind("ernie_sm.training", "configs", ".json", ("ernie-1.0-base", "ernie-tiny"))
# The released ERNIE 1.0 vocab (origin and licence in text/vocabs/README.md).
VOCABS = PresetKind("ernie_sm.text", "vocabs", ".txt", ("ernie-1.0",))


def locate(value: str | Path, base_dir: Path, kind: PresetKind, setting: str) -> Path:
    """The preset named `value`, else the file at `value` (relative ones under base_dir).

    `setting` names what the value was given as, for the error a missing file raises.
    """
    if str(value) in kind.names:
        return Path(str(resources.files(kind.package) / kind.folder / f"{value}{kind.suffix}"))
    path = Path(value)
    path = path if path.is_absolute() else base_dir / path
    try:
        found = path.is_file()
    except (OSError, ValueError) as exc:  # a name too long, a NUL
        raise ConfigError(f"{setting} {str(value)!r} cannot be a file: {exc}") from None
    if not found:
        raise ConfigError(
            f"{setting} {str(value)!r}: {path} does not exist "
            f"(give a file or a bundled preset: {', '.join(kind.names)})"
        )
    return path
