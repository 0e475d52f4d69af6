"""`ernie-sm`: the command line of the product; one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from ernie_sm.training import hyperparams

# Commands whose modules need more than the training image installs (data tools, AWS
# clients, the rehearsal); each module registers its own subcommands with add_parser.
TOOL_MODULES = (
    "ernie_sm.dataprep.prepare",
    "ernie_sm.dataprep.upload",
    "ernie_sm.dataprep.topics",
    "ernie_sm.training.import_weights",
    "ernie_sm.rehearsal.rehearse",
    "ernie_sm.operations.commands",
)


def _train(args: argparse.Namespace) -> int:
    from ernie_sm.training.train import main  # paddle loads only for the commands that need it

    return main()


def _evaluate(args: argparse.Namespace) -> int:
    from ernie_sm.training.evaluate import main

    return main()


def _demo(args: argparse.Namespace) -> int:
    from ernie_sm.rehearsal.demo import run

    return run(Path(args.dir), Path(args.corpus), Path(args.entities))


def _hyperparameters(args: argparse.Namespace) -> int:
    specs = hyperparams.EVAL_SPECS if args.evaluate else hyperparams.SPECS
    for name, spec in specs.items():
        print(f"{name:28} {spec.default!r:24} {spec.help}")
    return 0


def _add_tool_commands(commands: argparse._SubParsersAction) -> None:
    for module_name in TOOL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # e.g. in the training image, which has the trainer only
            _unavailable(commands, module_name, exc)
            continue
        module.add_parser(commands)


def _unavailable(commands: argparse._SubParsersAction, module_name: str, exc: ImportError) -> None:
    message = f"needs the development install: pip install -e '.[prepare,cdk,dev]' ({exc})"

    def unavailable(args: argparse.Namespace) -> int:
        print(f"ernie-sm {args.command}: {message}", file=sys.stderr)
        return 2

    commands.add_parser(module_name.rsplit(".", 1)[-1], help=message).set_defaults(run=unavailable)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ernie-sm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "train",
        help="run ERNIE pretraining under SageMaker's container contract "
        "(the training image's entrypoint; SAGEMAKER_BASE_DIR relocates /opt/ml)",
    ).set_defaults(run=_train)
    commands.add_parser(
        "evaluate",
        help="fine-tune the model channel's model and a baseline on the eval channel's "
        "labelled set and score both, under the same container contract",
    ).set_defaults(run=_evaluate)
    demo = commands.add_parser(
        "demo", help="prepare the demo corpus and rehearse one execution of the stack on the CPU"
    )
    demo.add_argument("--dir", default="build/demo", help="where the dataset and rehearsal go")
    demo.add_argument("--corpus", default="demo/corpus", help="raw text to prepare")
    demo.add_argument("--entities", default="demo/entities.txt", help="entity dictionary")
    demo.set_defaults(run=_demo)
    _add_tool_commands(commands)
    listing = commands.add_parser(
        "hyperparameters", help="list the training hyperparameters with defaults and help"
    )
    listing.add_argument(
        "--evaluate", action="store_true", help="list those of `ernie-sm evaluate` instead"
    )
    listing.set_defaults(run=_hyperparameters)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
