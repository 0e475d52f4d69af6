"""SageMaker's CreateTrainingJob constraints, checked here as the service checks them.

botocore carries SageMaker's service model: every member of CreateTrainingJob with its
type, enum, length or value range and pattern. `python -m ernie_sm.pipeline.sagemaker_api` reads
it (botocore is needed only then) and writes `sagemaker_api.json` next to this module:
every shape reachable from the request, patterns translated from Java's regex dialect
to Python's. `check_request` validates a request against that file with the standard
library alone, so the Prepare Lambda refuses what SageMaker would refuse, and the local
SageMaker of a rehearsal answers with SageMaker's own ValidationException sentences:

    1 validation error detected: Value 'ml.g5.2xlarg' at 'resourceConfig.instanceType'
    failed to satisfy constraint: Member must satisfy enum value set: [ml.m4.xlarge, ...]

Paths name members as SageMaker does (lower camel case, list items as `<list>.<n>.member`
counting from 1); entries of a list of strings and of a map are reported on the list or
map itself ("Member must satisfy constraint: [...]", "Map value must satisfy constraint:
[...]"). SageMaker prints enum values in its own (hash) order; here they keep the
model's. Two checks have no wording of SageMaker's, which answers them with a
SerializationException or botocore refuses before sending: a value of the wrong type
("Member must be of type integer") and a member the model does not have.

Java's regexes differ from Python's where it matters here: `.` matches no line
terminator (\\n, \\r, \\u0085, \\u2028, \\u2029), \\d \\s \\w are ASCII, and \\p{L},
\\p{N}, \\p{Z} (Unicode letters, numbers, separators) and \\p{Alnum} (ASCII letters and
digits) exist; they are translated exactly, the \\p classes by the Unicode database of
the Python that extracted them (recorded in the file). Any other construct fails the
extraction. Lengths are Java's too: UTF-16 code units.
"""

from __future__ import annotations

import functools
import json
import re
import string
import sys
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHAPES_FILE = Path(__file__).with_name("sagemaker_api.json")
OPERATION = "CreateTrainingJob"
LINE_TERMINATORS = "\n\r\x85\u2028\u2029"  # what Java's `.` never matches
UNKNOWN_MEMBER = f"Member is not in the {OPERATION} model"
# Python type standing for each model type the checker knows, with its range for numbers.
_TYPES: dict[str, tuple[type | tuple[type, ...], int | None]] = {
    "string": (str, None),
    "boolean": (bool, None),
    "integer": (int, 2**31),
    "long": (int, 2**63),
    "structure": (Mapping, None),
    "list": ((list, tuple), None),
    "map": (Mapping, None),
}


@dataclass(frozen=True)
class Violation:
    """One constraint of the model a request breaks, at SageMaker's path for the member."""

    path: str  # e.g. "resourceConfig.instanceType", "inputDataConfig.1.member.channelName"
    value: Any  # the offending value; None where a required member is missing
    constraint: str  # e.g. "Member must have length less than or equal to 63"

    def message(self) -> str:
        """SageMaker's sentence for it, as in its ValidationException."""
        value = "null" if self.value is None else f"'{_java_text(self.value)}'"
        return f"Value {value} at '{self.path}' failed to satisfy constraint: {self.constraint}"


def validation_message(messages: Sequence[str]) -> str:
    """SageMaker's ValidationException text for these problems."""
    count = len(messages)
    return f"{count} validation error{'' if count == 1 else 's'} detected: " + "; ".join(messages)


def check_request(request: Mapping[str, Any]) -> list[Violation]:
    """Every constraint of CreateTrainingJob's model that `request` breaks; [] if none."""
    return _check(_model()["input"], request, "")


def check_member(member: str, value: Any) -> list[Violation]:
    """Check one member's value, named by its model path ("VpcConfig.Subnets",
    "Tags.member.Key", "HyperParameters.value")."""
    return _check(_resolve(member), value, ".".join(map(_camel, member.split("."))))


def refusal(member: str, value: Any) -> str | None:
    """SageMaker's reason to refuse `value` as `member` (see check_member), None if it takes it."""
    return "; ".join(v.constraint for v in check_member(member, value)) or None


def member_shape(member: str) -> dict[str, Any]:
    """The model's shape of a member path (see check_member), e.g. its "enum" or "max"."""
    return _shapes()[_resolve(member)]


def regex(member: str) -> re.Pattern[str]:
    """The member's pattern as a Python regex, to be used with fullmatch."""
    return _compiled(member_shape(member)["pattern"])


def aws_length(text: str) -> int:
    """A string's length as SageMaker counts it: UTF-16 code units."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


# ---------------------------------------------------------------------------------------
# Checking


@functools.cache
def _model() -> dict[str, Any]:
    return json.loads(SHAPES_FILE.read_text(encoding="utf-8"))


def _shapes() -> dict[str, dict[str, Any]]:
    return _model()["shapes"]


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(_model()["patterns"][pattern])


def _resolve(member: str) -> str:
    name = _model()["input"]
    for part in member.split("."):
        shape = _shapes()[name]
        name = shape["members"][part] if shape["type"] == "structure" else shape[part]
    return name


def _check(name: str, value: Any, path: str) -> list[Violation]:
    shape = _shapes()[name]
    if not _has_type(shape["type"], value):
        return [Violation(path, value, f"Member must be of type {shape['type']}")]
    found = [Violation(path, value, text) for text, holds in _rules(shape) if not holds(value)]
    if shape["type"] == "structure":
        found += _structure(shape, value, path)
    elif shape["type"] == "list":
        found += _list(shape, value, path)
    elif shape["type"] == "map":
        found += _entries(shape["key"], value.keys(), "Map keys", value, path)
        found += _entries(shape["value"], value.values(), "Map value", value, path)
    return found


def _has_type(kind: str, value: Any) -> bool:
    python_type, bound = _TYPES[kind]
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, python_type) and (bound is None or -bound <= value < bound)


# How min and max apply: lengths of strings (UTF-16 units) and sizes of lists and maps.
_MEASURES: dict[str, tuple[Callable[[Any], int], str]] = {
    "string": (aws_length, "length"),
    "list": (len, "length"),
    "map": (len, "length"),
}


def _rules(shape: dict[str, Any]) -> Iterator[tuple[str, Callable[[Any], bool]]]:
    """(SageMaker's wording, test) of each constraint of a shape, in SageMaker's order."""
    measure, noun = _MEASURES.get(shape["type"], (int, "value"))
    if "enum" in shape:
        values = shape["enum"]
        yield f"Member must satisfy enum value set: [{', '.join(values)}]", values.__contains__
    if "max" in shape:
        high = shape["max"]
        yield f"Member must have {noun} less than or equal to {high}", lambda v: measure(v) <= high
    if "min" in shape:
        low = shape["min"]
        yield f"Member must have {noun} greater than or equal to {low}", lambda v: measure(v) >= low
    if "pattern" in shape:
        pattern = _compiled(shape["pattern"])
        yield (
            f"Member must satisfy regular expression pattern: {shape['pattern']}",
            lambda v: pattern.fullmatch(v) is not None,
        )


def _structure(shape: dict[str, Any], value: Mapping[str, Any], path: str) -> list[Violation]:
    found = [
        Violation(_join(path, name), None, "Member must not be null")
        for name in shape["required"]
        if value.get(name) is None
    ]
    for name, item in value.items():
        member = shape["members"].get(name)
        if member is None:
            found.append(Violation(_join(path, name), item, UNKNOWN_MEMBER))
        elif item is not None:  # null is an absent member, as in SageMaker's JSON
            found += _check(member, item, _join(path, name))
    return found


def _list(shape: dict[str, Any], value: Sequence[Any], path: str) -> list[Violation]:
    if _shapes()[shape["member"]]["type"] in ("structure", "list", "map"):
        return [
            violation
            for number, item in enumerate(value, 1)
            for violation in _check(shape["member"], item, f"{path}.{number}.member")
        ]
    return _entries(shape["member"], value, "Member", value, path)


def _entries(name: str, items: Any, label: str, container: Any, path: str) -> list[Violation]:
    """Strings in a list or map: one violation on the container lists the item's constraints."""
    if all(not _check(name, item, path) for item in items):
        return []
    rules = ", ".join(text for text, _ in _rules(_shapes()[name]))
    return [Violation(path, container, f"{label} must satisfy constraint: [{rules}]")]


def _join(path: str, member: str) -> str:
    return f"{path}.{_camel(member)}" if path else _camel(member)


def _camel(member: str) -> str:
    return member[:1].lower() + member[1:]


def _java_text(value: Any) -> str:
    """A value as Java's toString writes it in SageMaker's messages."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_java_text(k)}={_java_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_java_text, value)) + "]"
    return "null" if value is None else str(value)


# ---------------------------------------------------------------------------------------
# Extraction from botocore (not in the Lambda: only `main` and the tests call it)

# What a shape's metadata may hold that the checker has no use for.
_IGNORED_METADATA = {"sensitive", "idempotencyToken", "contextParam", "requiresLength"}
_POSIX_ALNUM = "A-Za-z0-9"  # Java's \p{Alnum} is ASCII unless UNICODE_CHARACTER_CLASS
_GROUPS = ("(?:", "(?=", "(?!", "(?<=", "(?<!")  # the same in Java and Python
_JAVA_DOT = "[^" + "".join(f"\\u{ord(c):04x}" for c in LINE_TERMINATORS) + "]"


class UnsupportedPattern(ValueError):
    """A Java regex construct whose meaning in Python this translation does not promise."""


def extract_shapes() -> dict[str, Any]:
    """The compact model of every shape CreateTrainingJob's input reaches, from botocore."""
    import botocore
    import botocore.session

    service = botocore.session.get_session().get_service_model("sagemaker")
    root = service.operation_model(OPERATION).input_shape
    shapes: dict[str, dict[str, Any]] = {}
    pending = [root]
    while pending:
        shape = pending.pop()
        if shape.name not in shapes:
            shapes[shape.name], children = _entry(shape)
            pending += children
    patterns = sorted({s["pattern"] for s in shapes.values() if "pattern" in s})
    return {
        "operation": OPERATION,
        "botocore": botocore.__version__,
        "unicode": unicodedata.unidata_version,
        "input": root.name,
        "shapes": dict(sorted(shapes.items())),
        "patterns": {pattern: java_to_python(pattern) for pattern in patterns},
    }


def _entry(shape: Any) -> tuple[dict[str, Any], list[Any]]:
    """(compact shape, its child shapes) of one botocore shape; unknown features fail."""
    kind, metadata = shape.type_name, dict(shape.metadata)
    unknown = set(metadata) - _IGNORED_METADATA - {"required", "min", "max", "pattern", "enum"}
    if kind not in _TYPES or unknown:
        raise ValueError(f"shape {shape.name}: the checker knows no {kind} {sorted(unknown)}")
    entry = {
        "type": kind,
        **{k: metadata[k] for k in ("min", "max", "pattern", "enum") if k in metadata},
    }
    if kind == "structure":
        entry["members"] = {name: member.name for name, member in shape.members.items()}
        entry["required"] = list(metadata.get("required", []))
        return entry, list(shape.members.values())
    if kind == "list":
        entry["member"] = shape.member.name
        return entry, [shape.member]
    if kind == "map":
        if shape.key.type_name != "string" or shape.value.type_name != "string":
            raise ValueError(f"shape {shape.name}: the checker knows only maps of strings")
        entry["key"], entry["value"] = shape.key.name, shape.value.name
        return entry, [shape.key, shape.value]
    return entry, []


def java_to_python(pattern: str) -> str:
    """A Java regex as a Python one that fullmatches exactly the same strings."""
    out, i, in_class, quantified = ["(?a)"], 0, False, False  # (?a): \d \s \w as in Java
    while i < len(pattern):
        if pattern[i] == "\\":
            token, i = _escape(pattern, i, in_class)
            quantified = False
        elif in_class:
            token, i, in_class = _class_character(pattern, i)
            quantified = False
        else:
            token, i, in_class, quantified = _outside_class(pattern, i, quantified)
        out.append(token)
    if in_class:
        raise UnsupportedPattern(f"unterminated class in {pattern!r}")
    translated = "".join(out)
    re.compile(translated)
    return translated


def _class_character(pattern: str, i: int) -> tuple[str, int, bool]:
    """(text, next index, still in the class) for pattern[i] inside [...]."""
    if pattern[i] == "[" or pattern.startswith("&&", i):
        raise UnsupportedPattern(f"class union or intersection in {pattern!r}")
    return pattern[i], i + 1, pattern[i] != "]"  # . and the rest are literal in both


def _outside_class(pattern: str, i: int, quantified: bool) -> tuple[str, int, bool, bool]:
    """(text, next index, in a class now, a quantifier now) for pattern[i] outside [...]."""
    c = pattern[i]
    if c == "[":
        start = i + 1 + (pattern[i + 1 : i + 2] == "^")
        if pattern[start : start + 1] == "]":
            raise UnsupportedPattern(f"a class starting with ] in {pattern!r}")
        return pattern[i:start], start, True, False
    if pattern.startswith("(?", i):
        group = next((g for g in _GROUPS if pattern.startswith(g, i)), None)
        if group is None:
            raise UnsupportedPattern(f"group {pattern[i : i + 4]!r}... in {pattern!r}")
        return group, i + len(group), False, False
    if c in "^$":
        raise UnsupportedPattern(f"anchor {c!r} in {pattern!r} (matching is whole-string)")
    if c == "+" and quantified:
        raise UnsupportedPattern(f"possessive quantifier in {pattern!r}")
    return (_JAVA_DOT if c == "." else c), i + 1, False, c in "*+?}"


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """(Python text, next index) for the escape at pattern[i]."""
    code = pattern[i + 1 : i + 2]
    if code in ("p", "P"):
        match = re.compile(r"\\p\{(\w+)\}").match(pattern, i)
        classes = _unicode_classes()
        if code == "P" or match is None or match.group(1) not in classes:
            raise UnsupportedPattern(f"{pattern[i : i + 12]!r}... in {pattern!r}")
        body = classes[match.group(1)]
        return (body if in_class else f"[{body}]"), match.end()
    if code and (code in "dDsSwW" or code in string.punctuation):
        return pattern[i : i + 2], i + 2  # ASCII classes (with (?a)) and escaped symbols
    raise UnsupportedPattern(f"escape \\{code} in {pattern!r}")


@functools.cache
def _unicode_classes() -> dict[str, str]:
    """Java's \\p{L}, \\p{N}, \\p{Z} as Python class bodies of code point ranges."""
    ranges: dict[str, list[list[int]]] = {"L": [], "N": [], "Z": []}
    for code in range(sys.maxunicode + 1):
        found = ranges.get(unicodedata.category(chr(code))[0])
        if found is None:
            continue
        if found and found[-1][1] == code - 1:
            found[-1][1] = code
        else:
            found.append([code, code])
    classes = {name: "".join(map(_class_range, spans)) for name, spans in ranges.items()}
    return {**classes, "Alnum": _POSIX_ALNUM}


def _class_range(span: list[int]) -> str:
    low, high = (f"\\U{code:08x}" if code > 0xFFFF else f"\\u{code:04x}" for code in span)
    return low if span[0] == span[1] else f"{low}-{high}"


def main() -> None:
    """Write sagemaker_api.json from the installed botocore."""
    text = json.dumps(extract_shapes(), indent=1, ensure_ascii=False) + "\n"
    SHAPES_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SHAPES_FILE}")


if __name__ == "__main__":
    main()
