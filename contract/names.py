"""What a misspelt name was meant to be: one hint for every place that refuses a name
(execution-input fields, hyperparameters, tasks, instance types)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: object, known: Iterable[str]) -> str | None:
    """The known name that `name` most resembles, if one is close enough."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return close[0] if close else None


def hint(name: object, known: Iterable[str], plural: str) -> str:
    """ "did you mean <the closest known name>?", else the list of them ("the tasks are ...")."""
    known = list(known)
    found = closest(name, known)
    return f"did you mean {found}?" if found else f"the {plural} are {', '.join(known)}"
