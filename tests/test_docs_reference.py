"""The reference tables of docs/ are those contract/ defines (contract/reference.py)."""

from __future__ import annotations

import re

import pytest
from ernie_sm.contract import hyperparams, metrics, reference


@pytest.mark.parametrize(("page", "name", "table"), reference.tables())
def test_each_generated_table_of_the_docs_is_the_one_its_definitions_give(page, name, table):
    text = (reference.DOCS / page).read_text(encoding="utf-8")
    assert reference.rewritten(text, name, table) == text, (
        f"docs/{page}'s {name} table differs from contract/: run `{reference.COMMAND}`"
    )


def _rows(page: str, name: str) -> list[list[str]]:
    begin, end = reference.markers(name)
    text = (reference.DOCS / page).read_text(encoding="utf-8")
    table = text.split(begin)[1].split(end)[0].strip().splitlines()[2:]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in table]


@pytest.mark.parametrize(
    ("page", "specs"),
    [("container-contract.md", hyperparams.SPECS), ("evaluation.md", hyperparams.EVAL_SPECS)],
)
def test_the_hyperparameter_tables_name_every_hyperparameter_with_its_default(page, specs):
    rows = _rows(page, "hyperparameters")
    assert [row[0].strip("`") for row in rows] == list(specs)
    for (_, kind, default, help_text), spec in zip(rows, specs.values(), strict=True):
        assert kind == f"`{spec.type}`" and help_text == spec.help
        assert default == (f"`{spec.default}`" if spec.default else "empty")


@pytest.mark.parametrize(
    ("page", "definitions"),
    [
        ("container-contract.md", metrics.METRIC_DEFINITIONS),
        ("evaluation.md", metrics.EVAL_METRIC_DEFINITIONS),
    ],
)
def test_the_metric_tables_give_every_definition_its_regex(page, definitions):
    rows = _rows(page, "metrics")
    assert [(name.strip("`"), regex.strip("`")) for name, regex in rows] == [
        (d["Name"], d["Regex"]) for d in definitions
    ]


def test_a_table_without_its_markers_is_an_error():
    with pytest.raises(ValueError, match="expected one"):
        reference.rewritten("no markers here", "metrics", "| a |\n")
