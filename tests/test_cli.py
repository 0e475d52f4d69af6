import argparse
import subprocess
import sys
from pathlib import Path

from ernie_sm.contract import hyperparams

from ernie_sm import cli


def test_hyperparameters_command_lists_every_name_with_its_default(capsys):
    assert cli.main(["hyperparameters"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(hyperparams.SPECS)
    assert any(line.split()[:2] == ["batch_size", "'8192'"] for line in lines)


def test_console_script_runs_and_names_its_commands():
    out = subprocess.run(
        [sys.executable, "-m", "ernie_sm.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert all(command in out for command in ("train", "demo", "hyperparameters"))


def test_hyperparameters_command_lists_those_of_evaluate(capsys):
    assert cli.main(["hyperparameters", "--evaluate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(hyperparams.EVAL_SPECS)


def test_help_names_evaluate_and_prepare_topics():
    out = subprocess.run(
        [sys.executable, "-m", "ernie_sm.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "evaluate" in out and "prepare-topics" in out


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An option's help as --help renders it, unwrapped: %(default)s and the like filled in."""
    return parser._get_formatter()._expand_help(action)


# Defaults that the help states in words rather than as the value (a path of this checkout).
DEFAULTS_IN_WORDS = {("rehearse", "--cdk-out")}


def test_every_subcommand_has_a_description_and_every_option_a_help_with_its_default():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert all(choice.help for choice in commands._choices_actions)
    for name, sub in _subcommands(parser).items():
        assert sub.description and sub.description.strip(), name
        sub.format_help()  # renders
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            option = action.option_strings[-1] if action.option_strings else action.dest
            assert action.help and action.help.strip(), (name, option)
            default = action.default
            if default is None or action.nargs == 0 or default == []:
                continue  # nothing to show: a flag, a repeatable option, or absent means unset
            text = _expanded_help(sub, action)
            assert "(default: " in text, (name, option, text)
            if (name, option) not in DEFAULTS_IN_WORDS:
                assert str(default) in text, (name, option, text)


def test_no_default_is_rendered_as_none_or_an_empty_list():
    for name, sub in _subcommands(cli.build_parser()).items():
        rendered = sub.format_help()
        assert "(default: None)" not in rendered and "(default: [])" not in rendered, name
        assert "(default: False)" not in rendered, name


def test_train_and_evaluate_point_at_the_hyperparameters_listing():
    subs = _subcommands(cli.build_parser())
    train, evaluate = subs["train"].format_help(), subs["evaluate"].format_help()
    for text in (train, evaluate):
        assert "hyperparameters.json" in text and "SAGEMAKER_BASE_DIR" in text
        assert "/opt/ml/input/data/" in text
    assert "ernie-sm hyperparameters`" in train
    assert "ernie-sm hyperparameters --evaluate`" in evaluate


def test_train_and_evaluate_still_run_with_the_argument_alone():
    parser = cli.build_parser()
    assert parser.parse_args(["train"]).run is cli._train
    assert parser.parse_args(["evaluate"]).run is cli._evaluate


def test_a_command_whose_module_cannot_load_still_has_a_description(monkeypatch):
    monkeypatch.setattr(cli, "TOOL_MODULES", (*cli.TOOL_MODULES, "ernie_sm.no_such_module"))
    sub = _subcommands(cli.build_parser())["no_such_module"]
    assert "development install" in sub.description


def test_hyperparameters_command_shows_each_type(capsys):
    for flag, specs in (([], hyperparams.SPECS), (["--evaluate"], hyperparams.EVAL_SPECS)):
        assert cli.main(["hyperparameters", *flag]) == 0
        lines = capsys.readouterr().out.splitlines()
        for line, (name, spec) in zip(lines, specs.items(), strict=True):
            assert line.startswith(f"{name:28} {spec.default!r:24} {spec.type:16} "), line
            assert line.endswith(spec.help)
    assert hyperparams.SPECS["batch_size"].type == "int"
    assert hyperparams.SPECS["use_fp16"].type == "bool"
    assert hyperparams.SPECS["tasks"].type == "dict[str, float]"


def test_every_subcommands_help_points_at_the_docs_page_that_documents_it():
    docs = Path(cli.__file__).resolve().parents[1] / "docs"
    subs = _subcommands(cli.build_parser())
    assert set(subs) == set(cli.DOCS)  # a new subcommand needs its page
    for name, sub in subs.items():
        page = docs / cli.DOCS[name]
        assert f"docs/{page.name}" in sub.format_help(), name
        assert f"ernie-sm {name}" in page.read_text(encoding="utf-8"), (name, page.name)
