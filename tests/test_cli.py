import subprocess
import sys

from ernie_sm.training import hyperparams

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
